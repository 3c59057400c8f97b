import { z } from "zod";
import { describeIssues } from "../config/issues.js";
import { errorMessage } from "../shared/errors.js";
import { type JsonObject, jsonObjectSchema } from "../shared/json.js";
import { assertValidKey, INTERNAL_NAMESPACES, namespaceOf } from "../state/service.js";

/** One line of `export` output (and so of `import` input). */
export interface ExportLine {
  key: string;
  value: JsonObject;
  version: number;
  expires_at: string | null;
}

const lineSchema = z.object({
  key: z.string(),
  value: jsonObjectSchema,
  version: z.number().int().min(1).default(1),
  expires_at: z.union([z.iso.datetime({ offset: true }), z.null()]).default(null),
});

export interface ImportEntry {
  line: number;
  key: string;
  value: JsonObject;
  version: number;
  /** Epoch ms, or null for no expiry. */
  expiresAt: number | null;
}

export interface ParsedImport {
  entries: ImportEntry[];
  /** `line <n>: <reason>`, in line order; reasons name fields, never value text. */
  problems: string[];
  /** Lines whose expires_at has already passed: skipped, as the key would be gone. */
  expired: number;
}

/**
 * Checks every non-blank line: a JSON object with a valid key, an object value, a
 * positive integer version and an ISO expires_at or null; a key at most once; a value
 * within `maxValueBytes` (internal namespaces excepted, as in StateService).
 */
export function parseImportLines(text: string, options: { maxValueBytes: number; now: number }): ParsedImport {
  const entries: ImportEntry[] = [];
  const problems: string[] = [];
  const seen = new Map<string, number>();
  let expired = 0;
  const lines = text.split("\n");
  lines.forEach((raw, index) => {
    const line = index + 1;
    const source = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (source.trim() === "") return;
    let json: unknown;
    try {
      json = JSON.parse(source);
    } catch {
      // The parser's message quotes the text, which may be a state value: say only where.
      problems.push(`line ${line}: not valid JSON`);
      return;
    }
    const parsed = lineSchema.safeParse(json);
    if (!parsed.success) {
      problems.push(...describeIssues(`line ${line}`, parsed.error.issues));
      return;
    }
    const { key, value, version, expires_at } = parsed.data;
    try {
      assertValidKey(key);
    } catch (err) {
      problems.push(`line ${line}: key: ${errorMessage(err)}`);
      return;
    }
    const first = seen.get(key);
    if (first !== undefined) {
      problems.push(`line ${line}: key: ${key} is already on line ${first}`);
      return;
    }
    seen.set(key, line);
    const size = Buffer.byteLength(JSON.stringify(value));
    if (size > options.maxValueBytes && !INTERNAL_NAMESPACES.includes(namespaceOf(key))) {
      problems.push(`line ${line}: value: ${size} bytes; the limit is ${options.maxValueBytes}`);
      return;
    }
    const expiresAt = expires_at === null ? null : Date.parse(expires_at);
    if (expiresAt !== null && expiresAt <= options.now) {
      expired += 1;
      return;
    }
    entries.push({ line, key, value, version, expiresAt });
  });
  return { entries, problems, expired };
}
