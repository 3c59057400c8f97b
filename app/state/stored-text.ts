import { errorMessage } from "../shared/errors.js";
import { isJsonObject, type JsonObject } from "../shared/json.js";
import { CodecError, type ValueCodec } from "./codec.js";
import {
  type HistoryEntry,
  type ListedEntry,
  StateDecodeError,
  type StoredEntry,
  StoreWriteError,
  type Transition,
  type WriteOp,
} from "./store.js";

/**
 * How every SQL store keeps a value: JSON text through the codec (plain or encrypted),
 * and how it reads it back. One definition, so a database written by one backend's code
 * reads the same in another's, and a decode failure is reported the same way.
 */

/** One op after encoding: `text` null deletes. */
export interface EncodedOp {
  key: string;
  text: string | null;
  version: number;
  expiresAt: number | null;
  transition?: Transition;
  source: string;
  actor: string | null;
  fenceToken?: number;
}

/** A `state_store` row as both SQL stores read it. */
export interface Row {
  key: string;
  value: string;
  updated_at: number;
  version: number;
  expires_at: number | null;
}

/** A `state_history` row as both SQL stores read it. */
export interface HistoryRow {
  id: number;
  key: string;
  old: string | null;
  new: string | null;
  transition: Transition;
  source: string;
  actor: string | null;
  at: number;
}

/** A `state_store` row as an entry; throws StateDecodeError when its text cannot be read. */
export function rowEntry(codec: ValueCodec, row: Row): StoredEntry {
  return {
    key: row.key,
    value: decodeStored(codec, row.key, row.value),
    updatedAt: row.updated_at,
    version: row.version,
    expiresAt: row.expires_at,
  };
}

/** Listed rows as entries; one that cannot be decoded is reported in its place, never dropped. */
export function listedEntries(codec: ValueCodec, rows: readonly Row[]): ListedEntry[] {
  return rows.map((row) => {
    try {
      return rowEntry(codec, row);
    } catch (err) {
      return { key: row.key, error: err as StateDecodeError };
    }
  });
}

export function historyEntry(codec: ValueCodec, r: HistoryRow): HistoryEntry {
  return {
    id: r.id,
    key: r.key,
    old: r.old === null ? null : decodeStored(codec, r.key, r.old),
    new: r.new === null ? null : decodeStored(codec, r.key, r.new),
    transition: r.transition,
    source: r.source,
    actor: r.actor,
    at: r.at,
  };
}

/** The marker row that tells an encrypted database from a plain one (and checks the key). */
export const ENCRYPTION_MARKER = "encryption_check";
export const MARKER_PLAINTEXT = "wb-bridge encryption check";

export function encodeOp(codec: ValueCodec, op: WriteOp): EncodedOp {
  if (op.key.includes("\u0000")) throw new StoreWriteError("key contains a NUL character");
  let text: string | null = null;
  if (op.value !== null) {
    try {
      text = codec.encode(op.json ?? JSON.stringify(op.value));
    } catch (err) {
      throw new StoreWriteError(`value of ${op.key} is not serializable: ${errorMessage(err)}`);
    }
  }
  return {
    key: op.key,
    text,
    version: op.version ?? 1,
    expiresAt: op.expiresAt ?? null,
    transition: op.meta?.transition,
    source: op.meta?.source ?? "internal",
    actor: op.meta?.actor ?? null,
    ...(op.fenceToken === undefined ? {} : { fenceToken: op.fenceToken }),
  };
}

export function decodeStored(codec: ValueCodec, key: string, stored: string): JsonObject {
  let text: string;
  try {
    // Plain JSON written before encryption was enabled stays readable until rotated.
    text = stored.startsWith("{") ? stored : codec.decode(stored);
  } catch (err) {
    throw new StateDecodeError(key, err instanceof CodecError ? err.message : errorMessage(err));
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StateDecodeError(key, errorMessage(err));
  }
  if (!isJsonObject(value)) throw new StateDecodeError(key, "not a JSON object");
  return value as JsonObject;
}

/**
 * SQL literal for inlined batch scripts (one round trip per transaction). Valid for
 * SQLite and for PostgreSQL with standard_conforming_strings (its default since 9.1,
 * which the PostgreSQL store checks). Inputs are JSON text, base64 tokens and keys;
 * NUL is refused.
 */
export function lit(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error("non-finite number in SQL literal");
    return String(Math.trunc(value));
  }
  if (value.includes("\u0000")) throw new Error("NUL character in SQL text");
  return `'${value.replaceAll("'", "''")}'`;
}

/** Smallest string greater than every string starting with `prefix` (code point order). */
export function prefixUpperBound(prefix: string): string {
  const chars = Array.from(prefix);
  const last = chars.pop()?.codePointAt(0) ?? 0;
  return chars.join("") + String.fromCodePoint(last + 1);
}
