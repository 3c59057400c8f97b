import type { JsonObject } from "../shared/json.js";

export interface StoredEntry {
  key: string;
  value: JsonObject;
  updatedAt: number;
}

/** A row whose stored text could not be decoded; reported, never dropped or overwritten. */
export interface UndecodableEntry {
  key: string;
  error: StateDecodeError;
}

export type ListedEntry = StoredEntry | UndecodableEntry;

export function isUndecodable(entry: ListedEntry): entry is UndecodableEntry {
  return "error" in entry;
}

/**
 * The persistence contract (DESIGN §3). The five calls keep their names and semantics;
 * `list` is the prefix listing every namespace reader uses at start.
 */
export interface StateStore {
  /** Open, create tables, run the integrity check. */
  initialize(): Promise<void>;
  /** Flush pending writes, then close. Idempotent. */
  close(): Promise<void>;
  /** null when the key is missing. Throws StateDecodeError when the stored text is unreadable. */
  get(key: string): Promise<JsonObject | null>;
  /** Upsert; resolves only once the write is committed. */
  set(key: string, value: JsonObject): Promise<void>;
  /** No error when the key is missing; resolves once committed. */
  delete(key: string): Promise<void>;
  /** Entries whose key starts with `prefix`, ordered by key. */
  list(prefix: string): Promise<ListedEntry[]>;
}

export class StateStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The database could not be opened or created (bad path, permissions, locked). */
export class StoreOpenError extends StateStoreError {}

/** The database file is damaged; it was moved aside to `quarantinedTo`. */
export class StoreCorruptError extends StateStoreError {
  constructor(
    message: string,
    readonly quarantinedTo: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A write could not be committed; the value was not stored. */
export class StoreWriteError extends StateStoreError {}

/** The store is closed (or not yet initialized). */
export class StoreClosedError extends StateStoreError {}

export class StateDecodeError extends StateStoreError {
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`stored value of ${key} cannot be decoded: ${reason}`);
  }
}
