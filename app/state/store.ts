import type { JsonObject } from "../shared/json.js";

/** What happened to a key; every committed change carries one (and is kept in history). */
export const TRANSITIONS = ["create", "update", "activate", "suspend", "resume", "expire", "delete", "restore"] as const;
export type Transition = (typeof TRANSITIONS)[number];

/** Why and by whom a change was made. */
export interface WriteMeta {
  transition: Transition;
  /** `http`, `mqtt`, `scenario`, `device`, `restore`, `cli`, `migration`, `ttl`, ... */
  source: string;
  actor?: string | null;
}

export interface WriteOp {
  key: string;
  /** null deletes the key. */
  value: JsonObject | null;
  meta?: WriteMeta;
  /** Schema version of the value (default 1). */
  version?: number;
  /** Epoch ms after which the key is gone; null or absent: never. */
  expiresAt?: number | null;
  /**
   * The fencing token of the distributed key lock this write was made under. A store
   * shared by several processes refuses it (failure `stale_lock`) once a write with a
   * newer token has reached the key: its lock was lost (held past its time) meanwhile.
   */
  fenceToken?: number;
  /**
   * `JSON.stringify(value)`, when the caller already made it (the state service does, to
   * check the size limit): a store keeps this text instead of serializing the value again.
   */
  json?: string;
}

export interface StoredEntry {
  key: string;
  value: JsonObject;
  updatedAt: number;
  version: number;
  expiresAt: number | null;
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

export interface ListOptions {
  /** Only keys strictly greater than this (a pagination cursor). */
  after?: string;
  limit?: number;
}

export interface HistoryEntry {
  id: number;
  key: string;
  old: JsonObject | null;
  new: JsonObject | null;
  transition: Transition;
  source: string;
  actor: string | null;
  at: number;
}

export interface HistoryQuery {
  key?: string;
  transition?: Transition;
  /** Only entries with a smaller id (newest-first pagination). */
  beforeId?: number;
  limit: number;
}

export interface HistoryRetention {
  /** Newest entries kept per key; 0 disables the rule. */
  maxPerKey: number;
  /** Entries older than this many ms are removed; 0 disables the rule. */
  maxAgeMs: number;
}

/**
 * The persistence contract (DESIGN §3). The five seed calls keep their names and
 * semantics; the rest serve the state layer (history, TTL, versions, listing).
 */
export interface StateStore {
  /** Open, create tables, run the integrity check. */
  initialize(): Promise<void>;
  /** Flush pending writes, then close. Idempotent. */
  close(): Promise<void>;
  /** null when the key is missing or expired. Throws StateDecodeError when the stored text is unreadable. */
  get(key: string): Promise<JsonObject | null>;
  /** Upsert; resolves only once the write is committed. */
  set(key: string, value: JsonObject): Promise<void>;
  /** No error when the key is missing; resolves once committed. */
  delete(key: string): Promise<void>;

  /** The value with its metadata; null when missing or expired. */
  getEntry(key: string): Promise<StoredEntry | null>;
  /** Live entries whose key starts with `prefix`, ordered by key. */
  list(prefix: string, options?: ListOptions): Promise<ListedEntry[]>;
  /**
   * Applies the ops in order, atomically, each with a history entry in the same
   * transaction; resolves once committed. Concurrent calls share transactions (group commit).
   */
  write(ops: readonly WriteOp[]): Promise<void>;
  /** Newest first. */
  history(query: HistoryQuery): Promise<HistoryEntry[]>;
  pruneHistory(retention: HistoryRetention, now: number): Promise<number>;
  /** Deletes keys whose time is up, with an `expire` history entry each; returns them with their last value. */
  sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>>;
  /** How many live keys start with `prefix` (all when omitted); cheap, for health reports. */
  count?(prefix?: string): Promise<number>;
  /**
   * Changes committed by other processes sharing the same data (several bridges on one
   * PostgreSQL schema), told after their commit. Stores that only one process uses have none.
   * `onGap`: changes may have been missed (the channel was down a while); re-read what matters.
   */
  watch?(listener: (change: ExternalChange) => void, onGap?: () => void): () => void;
  /**
   * Holds `key` against read-modify-writes of other processes until the returned release
   * is called (this process's own callers are already queued per key).
   */
  lockKey?(key: string): Promise<KeyLock>;
}

/** A held key lock (StateStore.lockKey). */
export interface KeyLock {
  release(): Promise<void>;
  /**
   * Present when the lock can expire under a paused holder (Redis): the writes made under
   * it carry it as WriteOp.fenceToken, so a holder that lost it cannot overwrite a newer value.
   */
  fenceToken?: number;
}

/** A change another process committed: which key, and why; the value is read back from the store. */
export interface ExternalChange {
  key: string;
  /** Null when the writer let the store derive it (create, update or delete). */
  transition: Transition | null;
  deleted: boolean;
  source: string;
  actor: string | null;
}

export class StateStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The database could not be opened or created (bad path, permissions, locked, wrong key). */
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

/**
 * Why storage refused a write: `full` (no space; recovers once space is freed),
 * `read_only` and `io` (the file system or device failed), `unavailable` (a database
 * server is not reachable; recovers when it is back), `other` (anything else).
 */
/** `stale_lock`: the write's fencing token was older than one the key has seen (see WriteOp.fenceToken). */
export type WriteFailure = "full" | "read_only" | "io" | "unavailable" | "stale_lock" | "other";

/** A write could not be committed; the value was not stored. */
export class StoreWriteError extends StateStoreError {
  readonly failure: WriteFailure;

  constructor(message: string, options?: { cause?: unknown; failure?: WriteFailure }) {
    super(message, options);
    this.failure = options?.failure ?? "other";
  }
}

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

/** What a store reports after each group commit (metrics, health); `error` when it failed. */
export interface CommitInfo {
  /** Callers whose writes the transaction carried. */
  writes: number;
  ops: number;
  durationMs: number;
  ok: boolean;
  error?: StoreWriteError;
}

export const DEFAULT_META: WriteMeta = { transition: "update", source: "internal" };
