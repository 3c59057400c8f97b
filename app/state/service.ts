import type { Logger } from "pino";
import type { z } from "zod";
import { BadRequestError, PayloadTooLargeError } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { isUndecodable, StateDecodeError, type StateStore } from "./store.js";

/** Outcome of reading a key against a schema: a bad stored value is reported, never thrown. */
export type ReadResult<T> =
  | { status: "missing" }
  | { status: "ok"; value: T; updatedAt?: number }
  | { status: "invalid"; reason: string };

export interface StateServiceOptions {
  maxValueBytes?: number;
}

const KEY_PATTERN = /^[a-z][a-z0-9_-]*:[\x21-\x7e]{1,200}$/;
const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;

export function assertValidKey(key: string): void {
  if (!KEY_PATTERN.test(key)) {
    throw new BadRequestError(
      "invalid_state_key",
      `invalid state key "${key.slice(0, 80)}": expected <namespace>:<id> with printable ASCII, at most 200 characters of id`,
    );
  }
}

/**
 * The one way the rest of the bridge reads and writes state: keys checked, values
 * size-limited and validated by the caller's zod schema on write and on read.
 * Logs name keys only, never values.
 */
export class StateService {
  private readonly maxValueBytes: number;

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
    options: StateServiceOptions = {},
  ) {
    this.maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  }

  async read<S extends z.ZodType<JsonObject>>(key: string, schema: S): Promise<ReadResult<z.infer<S>>> {
    assertValidKey(key);
    let raw: JsonObject | null;
    try {
      raw = await this.store.get(key);
    } catch (err) {
      if (err instanceof StateDecodeError) return { status: "invalid", reason: err.message };
      throw err;
    }
    if (raw === null) return { status: "missing" };
    return this.check(key, raw, schema);
  }

  /** Every entry under a namespace prefix, each validated on its own. */
  async readAll<S extends z.ZodType<JsonObject>>(
    prefix: string,
    schema: S,
  ): Promise<Map<string, ReadResult<z.infer<S>>>> {
    const results = new Map<string, ReadResult<z.infer<S>>>();
    for (const entry of await this.store.list(prefix)) {
      if (isUndecodable(entry)) {
        results.set(entry.key, { status: "invalid", reason: entry.error.message });
      } else {
        const result = this.check(entry.key, entry.value, schema);
        results.set(entry.key, result.status === "ok" ? { ...result, updatedAt: entry.updatedAt } : result);
      }
    }
    return results;
  }

  /** Validates, then resolves once the value is committed. */
  async write<S extends z.ZodType<JsonObject>>(key: string, value: z.infer<S>, schema: S): Promise<void> {
    assertValidKey(key);
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new BadRequestError("invalid_state_value", `value for ${key} does not match its schema`, parsed.error.issues);
    }
    const size = Buffer.byteLength(JSON.stringify(parsed.data));
    if (size > this.maxValueBytes) {
      throw new PayloadTooLargeError(
        "state_value_too_large",
        `value for ${key} is ${size} bytes; the limit is ${this.maxValueBytes}`,
      );
    }
    await this.store.set(key, parsed.data);
  }

  async remove(key: string): Promise<void> {
    assertValidKey(key);
    await this.store.delete(key);
  }

  private check<S extends z.ZodType<JsonObject>>(key: string, raw: JsonObject, schema: S): ReadResult<z.infer<S>> {
    const parsed = schema.safeParse(raw);
    if (parsed.success) return { status: "ok", value: parsed.data };
    const reason = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    this.log.warn({ key, reason }, "stored value does not match its schema");
    return { status: "invalid", reason };
  }
}
