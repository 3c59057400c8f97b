import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { errorMessage } from "../shared/errors.js";
import { INTERNAL_NAMESPACES, namespaceOf } from "../state/service.js";
import { isUndecodable } from "../state/store.js";
import type { CommandSpec } from "./args.js";
import { CliError, type CommandContext, cliChange, loadCliConfig, withState } from "./context.js";
import { type ExportLine, parseImportLines } from "./import-lines.js";
import { plural } from "./output.js";

const EXPORT_PAGE = 1000;
/** Bad lines shown before "... and N more". */
const SHOWN_PROBLEMS = 20;

export const migrateCommand: CommandSpec<CommandContext> = {
  name: "migrate",
  summary: "migrate every stored value of a registered namespace to its current schema version",
  async run(ctx) {
    const result = await withState(ctx, "write", ({ state }) => state.migrateAll());
    ctx.out.result(result, () => [
      `migrated ${plural(result.migrated, "value")}; refused ${result.refused.length}`,
      ...result.refused.map((key) => `  refused: ${key}`),
    ]);
  },
};

export const exportCommand: CommandSpec<CommandContext> = {
  name: "export",
  summary: "write every key as JSON lines on stdout: {key, value, version, expires_at}",
  flags: {
    prefix: { kind: "string", value: "p", help: "only keys starting with p" },
    all: { kind: "boolean", help: "include the internal recovery: namespace (recovery points)" },
  },
  notes: ["Works while the bridge runs. The output is the input of `import`."],
  async run(ctx, input) {
    const prefix = input.flags.str("prefix") ?? "";
    const all = input.flags.bool("all");
    const { written, undecodable } = await withState(ctx, "read", async ({ store }) => {
      let written = 0;
      const undecodable: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.list(prefix, { after, limit: EXPORT_PAGE });
        for (const entry of page) {
          if (!all && INTERNAL_NAMESPACES.includes(namespaceOf(entry.key))) continue;
          if (isUndecodable(entry)) {
            undecodable.push(entry.key);
            continue;
          }
          const line: ExportLine = {
            key: entry.key,
            value: entry.value,
            version: entry.version,
            expires_at: entry.expiresAt === null ? null : new Date(entry.expiresAt).toISOString(),
          };
          ctx.out.raw(`${JSON.stringify(line)}\n`);
          written += 1;
        }
        const last = page[page.length - 1];
        if (page.length < EXPORT_PAGE || !last) break;
        after = last.key;
      }
      return { written, undecodable };
    });
    for (const key of undecodable) ctx.out.warn(`skipped ${key}: its stored value cannot be decoded`);
    if (undecodable.length > 0) {
      throw new CliError(`export incomplete: ${plural(undecodable.length, "key")} skipped, ${written} written`);
    }
  },
};

export const importCommand: CommandSpec<CommandContext> = {
  name: "import",
  summary: "write JSON lines (as `export` prints them) in one transaction, recorded as restore",
  args: [{ name: "file|-", optional: true }],
  flags: { "skip-invalid": { kind: "boolean", help: "import the valid lines and report the others, instead of refusing all" } },
  notes: [
    "Reads stdin when the file is - or not given. Every line is checked first; with any bad line",
    "nothing is written (unless --skip-invalid). Lines whose expires_at has passed are skipped.",
  ],
  async run(ctx, input) {
    const source = input.args[0];
    const config = await loadCliConfig(ctx);
    const text = source === undefined || source === "-" ? await readStream(ctx.stdin) : await readInput(resolve(ctx.cwd, source));
    const parsed = parseImportLines(text, { maxValueBytes: config.system.persistence.max_value_bytes, now: Date.now() });
    const skipInvalid = input.flags.bool("skip-invalid");
    if (parsed.problems.length > 0) {
      for (const problem of parsed.problems.slice(0, SHOWN_PROBLEMS)) ctx.out.warn(problem);
      if (parsed.problems.length > SHOWN_PROBLEMS) ctx.out.warn(`... and ${parsed.problems.length - SHOWN_PROBLEMS} more`);
      if (!skipInvalid) {
        throw new CliError(
          `import refused: ${plural(parsed.problems.length, "invalid line")}; nothing was written (--skip-invalid imports the rest)`,
        );
      }
    }
    const entries = parsed.entries.map((e) => ({ key: e.key, value: e.value, version: e.version, expiresAt: e.expiresAt }));
    const imported = await withState(
      ctx,
      "create",
      async ({ state }) => (entries.length === 0 ? 0 : state.restoreEntries(entries, cliChange({ transition: "restore" }))),
      config,
    );
    const summary = { imported, invalid: parsed.problems.length, expired: parsed.expired };
    ctx.out.result(summary, () => {
      const extra = [
        parsed.problems.length > 0 ? `${plural(parsed.problems.length, "invalid line")} skipped` : "",
        parsed.expired > 0 ? `${plural(parsed.expired, "expired entry", "expired entries")} skipped` : "",
      ].filter(Boolean);
      return `imported ${plural(imported, "entry", "entries")}${extra.length ? ` (${extra.join(", ")})` : ""}`;
    });
  },
};

async function readInput(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${errorMessage(err)}`);
  }
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString("utf8");
}
