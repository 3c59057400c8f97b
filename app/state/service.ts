import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { z } from "zod";
import { BadRequestError, ConflictError, PayloadTooLargeError, PreconditionFailedError } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import { deepMerge, getPath } from "./merge.js";
import {
  type ExternalChange,
  type HistoryEntry,
  type HistoryRetention,
  isUndecodable,
  StateDecodeError,
  type StateStore,
  type StoredEntry,
  type Transition,
  type WriteOp,
} from "./store.js";

/** Outcome of reading a key against a schema: a bad stored value is reported, never thrown. */
export type ReadResult<T> =
  | { status: "missing" }
  | { status: "ok"; value: T; updatedAt?: number }
  /** `newer`: stored at a schema version above the one this bridge knows. */
  | { status: "invalid"; reason: string; newer?: true };

export interface ChangeOptions {
  source: string;
  actor?: string | null;
  /** Overrides the derived transition (create/update/delete, or the status rules'). */
  transition?: Transition;
  /** Expire the key this many ms from now; null clears an expiry. */
  ttlMs?: number | null;
  /** The ETag the caller last saw; a different current value fails with 412. */
  ifMatch?: string;
}

export interface StateChange {
  key: string;
  old: JsonObject | null;
  new: JsonObject | null;
  transition: Transition;
  source: string;
  actor: string | null;
  /**
   * Committed by another bridge sharing the store; `old` is then unknown (null) and `new`
   * is the value read back after the notification.
   */
  external?: true;
}

export type StateListener = (change: StateChange) => void | Promise<void>;

/** What the generic API shows of a key. */
export interface StateEntryView {
  key: string;
  value: JsonObject;
  version: number;
  updated_at: string;
  expires_at: string | null;
  etag: string;
}

export interface NamespaceSpec {
  /** Validates every value written to (and read from) the namespace. */
  schema?: z.ZodType<JsonObject>;
  /** Current schema version; stored values with a lower one are migrated on read. */
  version?: number;
  /** Step n -> n+1, keyed by n. */
  migrations?: Record<number, (value: JsonObject) => JsonObject>;
  /** Allowed changes of a status field: from -> to[]; others are refused with 409. */
  transitions?: { field: string; allowed: Record<string, readonly string[]> };
}

export interface StateServiceOptions {
  maxValueBytes?: number;
  history?: HistoryRetention;
  /** How often expired keys are swept and history is pruned (ms); 0 disables the timers. */
  maintenanceIntervalMs?: number;
  now?: () => number;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

const KEY_PATTERN = /^([a-z][a-z0-9_-]{0,31}):([\x21-\x7e]{1,200})$/;
const DEFAULT_MAX_VALUE_BYTES = 1024 * 1024;
/** Namespaces the state layer keeps for itself. */
export const INTERNAL_NAMESPACES = ["recovery"];

export function assertValidKey(key: string): void {
  if (!KEY_PATTERN.test(key)) {
    throw new BadRequestError(
      "invalid_state_key",
      `invalid state key "${key.slice(0, 80)}": expected <namespace>:<id> (namespace: lowercase letters, digits, _ or -; id: up to 200 printable ASCII characters)`,
    );
  }
}

export function namespaceOf(key: string): string {
  return key.slice(0, key.indexOf(":"));
}

export function etagOf(value: JsonObject): string {
  return `"${createHash("sha1").update(JSON.stringify(value)).digest("base64url").slice(0, 22)}"`;
}

/** A page cursor: unpadded base64url of where the page ended (a key, a history id). */
function encodeCursor(position: string): string {
  return Buffer.from(position, "utf8").toString("base64url");
}

/**
 * The cursor is opaque. Node's decoder skips characters outside the alphabet, so a raw
 * key or a truncated cursor would silently restart or end the listing; only a cursor
 * this bridge could have issued is accepted: the position must be `valid` and encode
 * back to exactly the cursor given.
 */
function decodeCursor(cursor: string, valid: (position: string) => boolean): string {
  const position = /^[A-Za-z0-9_-]+$/.test(cursor) ? Buffer.from(cursor, "base64url").toString("utf8") : "";
  if (!valid(position) || encodeCursor(position) !== cursor) {
    throw new BadRequestError(
      "invalid_cursor",
      "invalid cursor: pass next_cursor from the previous page unchanged, or omit cursor for the first page",
    );
  }
  return position;
}

const isKey = (position: string) => KEY_PATTERN.test(position);
/** A history id as String() writes it: `1e3`, `0x10`, `010` or `-1` were never issued. */
const isHistoryId = (position: string) => /^[1-9][0-9]{0,15}$/.test(position) && Number.isSafeInteger(Number(position));

/**
 * The one way the bridge reads and writes state: keys checked, values size-limited and
 * validated, partial updates under a per-key lock, versions migrated on read, listeners
 * told after commit, transitions checked. Logs name keys only, never values.
 */
export class StateService {
  private readonly maxValueBytes: number;
  private readonly locks = new KeyedQueue();
  /**
   * The entry each key got from its last `write()` (the managers' device and scenario
   * records, a bounded set): the next write of that key needs the current entry, and
   * reading it back from SQLite is a round trip to the driver on every action.
   */
  private readonly written = new Map<string, StoredEntry>();
  private readonly namespaces = new Map<string, NamespaceSpec>();
  private readonly listeners = new Map<string, Set<StateListener>>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | null = null;
  private maintaining = false;
  private stopWatching: (() => void) | null = null;
  private readonly gapListeners = new Set<() => void>();

  constructor(
    readonly store: StateStore,
    private readonly log: Logger,
    private readonly options: StateServiceOptions = {},
  ) {
    this.maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
    this.now = options.now ?? Date.now;
  }

  registerNamespace(namespace: string, spec: NamespaceSpec): void {
    this.namespaces.set(namespace, spec);
  }

  /** Starts TTL sweeping and history retention; stop() ends them. */
  start(): void {
    this.watchOthers();
    const interval = this.options.maintenanceIntervalMs ?? 60_000;
    if (this.timer || interval <= 0) return;
    this.timer = setInterval(() => {
      // A round that outlasts the interval (retention working through a large backlog)
      // is not joined by a second one doing the same scans and deletes beside it.
      if (this.maintaining) return;
      this.maintaining = true;
      void this.maintain().finally(() => {
        this.maintaining = false;
      });
    }, interval);
    this.timer.unref();
  }

  /**
   * Tells listeners about changes other bridges commit to a shared store. A standby calls
   * only this: it follows the active bridge but must not sweep or prune behind its back.
   */
  watchOthers(): void {
    if (this.stopWatching || !this.store.watch) return;
    this.stopWatching = this.store.watch(
      (change) => void this.applyExternal(change),
      () => {
        this.written.clear();
        this.log.info("changes by other bridges may have been missed; re-reading");
        for (const listener of this.gapListeners) listener();
      },
    );
  }

  /** Calls `listener` when changes committed by other bridges may have been missed, so what it shows can be read again. */
  onGap(listener: () => void): () => void {
    this.gapListeners.add(listener);
    return () => {
      this.gapListeners.delete(listener);
    };
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stopWatching?.();
    this.stopWatching = null;
  }

  private async applyExternal(change: ExternalChange): Promise<void> {
    const { key } = change;
    // What this bridge last wrote is no longer the current entry.
    this.written.delete(key);
    let value: JsonObject | null = null;
    if (!change.deleted) {
      try {
        value = (await this.store.getEntry(key))?.value ?? null;
      } catch (err) {
        this.log.warn({ key, err: err instanceof Error ? err.message : String(err) }, "cannot read a change made by another bridge");
        return;
      }
    }
    const transition = change.transition ?? (value === null ? "delete" : "update");
    this.notify({ key, old: null, new: value, transition, source: change.source, actor: change.actor, external: true });
  }

  /** One round of expiry and history retention; errors are logged, never thrown. */
  async maintain(): Promise<{ expired: number; pruned: number }> {
    let expired = 0;
    let pruned = 0;
    try {
      const gone = await this.store.sweepExpired(this.now());
      expired = gone.length;
      for (const { key, old } of gone) {
        this.written.delete(key);
        this.notify({ key, old, new: null, transition: "expire", source: "ttl", actor: null });
      }
      if (this.options.history) pruned = await this.store.pruneHistory(this.options.history, this.now());
    } catch (err) {
      this.log.error({ err: err instanceof Error ? err.message : String(err) }, "state maintenance failed");
    }
    return { expired, pruned };
  }

  // ---- typed access for the rest of the bridge ----

  async read<S extends z.ZodType<JsonObject>>(key: string, schema: S): Promise<ReadResult<z.infer<S>>> {
    assertValidKey(key);
    let entry: StoredEntry | null;
    try {
      entry = await this.store.getEntry(key);
    } catch (err) {
      if (err instanceof StateDecodeError) return { status: "invalid", reason: err.message };
      throw err;
    }
    if (entry === null) return { status: "missing" };
    const migrated = await this.migrated(entry);
    if (migrated === null) return { status: "invalid", reason: `${key} has a newer schema version than this bridge knows`, newer: true };
    return this.check(key, migrated.value, schema, migrated.updatedAt);
  }

  /** Every entry under a namespace prefix, each validated on its own. */
  async readAll<S extends z.ZodType<JsonObject>>(prefix: string, schema: S): Promise<Map<string, ReadResult<z.infer<S>>>> {
    const results = new Map<string, ReadResult<z.infer<S>>>();
    for (const entry of await this.store.list(prefix)) {
      if (isUndecodable(entry)) {
        results.set(entry.key, { status: "invalid", reason: entry.error.message });
        continue;
      }
      // The same test upgrade() starts with: only an entry that needs migrating waits for
      // its write-back, instead of thousands of current ones at start each awaiting.
      const spec = this.namespaces.get(namespaceOf(entry.key));
      const migrated = !spec || entry.version === (spec.version ?? 1) ? entry : await this.migrated(entry);
      results.set(
        entry.key,
        migrated === null
          ? { status: "invalid", reason: "newer schema version", newer: true }
          : this.check(entry.key, migrated.value, schema, migrated.updatedAt),
      );
    }
    return results;
  }

  /** Validates against `schema`, then resolves once the value is committed. */
  async write<S extends z.ZodType<JsonObject>>(
    key: string,
    value: z.infer<S>,
    schema: S,
    options: ChangeOptions = { source: "internal" },
  ): Promise<void> {
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new BadRequestError("invalid_state_value", `value for ${key} does not match its schema`, parsed.error.issues);
    }
    assertValidKey(key);
    await this.locks.run(key, async () => {
      const current = this.lastWritten(key) ?? (await this.store.getEntry(key));
      // Our value would replace one whose fields we do not know, stamped with our older version.
      const known = this.namespaces.get(namespaceOf(key))?.version ?? 1;
      if (current && this.namespaces.has(namespaceOf(key)) && current.version > known) {
        throw new ConflictError(
          "state_version_unsupported",
          `${key}: the stored state was written by a newer version of the bridge (schema version ${current.version}, this one knows ${known}); refused so it is not overwritten`,
        );
      }
      const entry = await this.commit(key, current, parsed.data, options, schema);
      this.written.set(key, entry);
    });
  }

  /**
   * A read-modify-write of `key`: queued behind this process's others, and held against
   * other bridges' where the store can lock a key. Device and scenario records skip the
   * second part: only the bridge that drives the devices writes them.
   */
  private exclusive<T>(key: string, fn: (fenceToken: number | undefined) => Promise<T>): Promise<T> {
    return this.locks.run(key, async () => {
      const lock = this.store.lockKey ? await this.store.lockKey(key) : null;
      try {
        return await fn(lock?.fenceToken);
      } finally {
        await lock?.release();
      }
    });
  }

  private lastWritten(key: string): StoredEntry | undefined {
    const entry = this.written.get(key);
    return entry && (entry.expiresAt === null || entry.expiresAt > this.now()) ? entry : undefined;
  }

  /**
   * Every write to the store goes through here. The keys are forgotten before and after,
   * so a write that did not come through `write()` (a restore, a patch, a migration)
   * is never shadowed by an entry remembered from an earlier one.
   */
  private async persist(ops: WriteOp[]): Promise<void> {
    for (const op of ops) this.written.delete(op.key);
    try {
      await this.store.write(ops);
    } finally {
      for (const op of ops) this.written.delete(op.key);
    }
  }

  async remove(key: string, options: ChangeOptions = { source: "internal" }): Promise<boolean> {
    assertValidKey(key);
    return this.exclusive(key, async (fenceToken) => {
      const current = await this.store.getEntry(key);
      if (current === null) return false;
      this.checkIfMatch(key, current, options.ifMatch);
      const transition = options.transition ?? "delete";
      await this.persist([{ key, value: null, meta: { transition, source: options.source, actor: options.actor }, ...fenced(fenceToken) }]);
      this.notify({ key, old: current.value, new: null, transition, source: options.source, actor: options.actor ?? null });
      return true;
    });
  }

  // ---- the generic API ----

  async getEntry(key: string): Promise<StateEntryView | null> {
    assertValidKey(key);
    const entry = await this.store.getEntry(key);
    if (entry === null) return null;
    return view((await this.migrated(entry)) ?? entry);
  }

  async set(key: string, value: JsonObject, options: ChangeOptions): Promise<StateEntryView> {
    assertValidKey(key);
    return this.exclusive(key, async (fenceToken) => {
      const current = await this.store.getEntry(key);
      return view(await this.commit(key, current, value, options, undefined, fenceToken));
    });
  }

  /** Deep-merges `patch` into the stored value (objects merge, arrays and scalars replace, null deletes). */
  async update(key: string, patch: JsonObject, options: ChangeOptions): Promise<StateEntryView> {
    assertValidKey(key);
    return this.exclusive(key, async (fenceToken) => {
      const current = await this.store.getEntry(key);
      let base: JsonObject = {};
      if (current) {
        const migrated = await this.migrated(current);
        // Merging into a value of unknown shape and stamping it with our version would corrupt it.
        if (migrated === null) {
          throw new ConflictError(
            "state_version_unsupported",
            `${key} is stored at version ${current.version}, which this bridge cannot migrate; it is left untouched`,
          );
        }
        base = migrated.value;
      }
      return view(await this.commit(key, current, deepMerge(base, patch), options, undefined, fenceToken));
    });
  }

  /** Keys under `prefix` whose value matches every `path=value` filter, in key order. */
  async search(query: { prefix?: string; filter?: string[]; cursor?: string; limit?: number }): Promise<Page<StateEntryView>> {
    const limit = Math.min(Math.max(query.limit ?? 50, 1), 1000);
    const filters = (query.filter ?? []).map((f) => {
      const at = f.indexOf("=");
      if (at <= 0) throw new BadRequestError("invalid_filter", `filter "${f}" is not path=value`);
      return { path: f.slice(0, at), value: f.slice(at + 1) };
    });
    const prefix = query.prefix ?? "";
    const items: StateEntryView[] = [];
    let after = query.cursor ? decodeCursor(query.cursor, isKey) : undefined;
    let exhausted = false;
    while (items.length < limit && !exhausted) {
      const page = await this.store.list(prefix, { after, limit: 500 });
      exhausted = page.length < 500;
      for (const entry of page) {
        after = entry.key;
        if (isUndecodable(entry) || INTERNAL_NAMESPACES.includes(namespaceOf(entry.key))) continue;
        const matches = filters.every(({ path, value }) => {
          const field = getPath(entry.value, path);
          return field !== undefined && (typeof field === "string" ? field : JSON.stringify(field)) === value;
        });
        if (!matches) continue;
        items.push(view(entry));
        if (items.length === limit) {
          exhausted = exhausted && page[page.length - 1]?.key === entry.key;
          break;
        }
      }
    }
    return { items, next_cursor: exhausted || after === undefined ? null : encodeCursor(after) };
  }

  /** Newest first; `cursor` continues where the previous page ended. */
  async history(query: { key?: string; transition?: Transition; cursor?: string; limit?: number }): Promise<Page<HistoryEntry>> {
    if (query.key !== undefined) assertValidKey(query.key);
    const limit = Math.min(Math.max(query.limit ?? 50, 1), 1000);
    const beforeId = query.cursor ? Number(decodeCursor(query.cursor, isHistoryId)) : undefined;
    const items = await this.store.history({ key: query.key, transition: query.transition, beforeId, limit });
    const last = items[items.length - 1];
    return { items, next_cursor: items.length === limit && last ? encodeCursor(String(last.id)) : null };
  }

  /**
   * Replaces and deletes keys in one transaction, recorded as `restore`; used by
   * recovery points, backup restores and imports. Listeners hear every change.
   */
  async restoreEntries(
    entries: ReadonlyArray<{ key: string; value: JsonObject | null; version?: number; expiresAt?: number | null }>,
    options: ChangeOptions,
  ): Promise<number> {
    const transition = options.transition ?? "restore";
    const olds = new Map<string, JsonObject | null>();
    for (const e of entries) olds.set(e.key, (await this.store.getEntry(e.key))?.value ?? null);
    // Values saved by an older version come back in the current shape, so listeners and
    // readers never see the old one; one this bridge cannot migrate is put back as it was.
    const restored = entries.map((e) => {
      if (e.value === null) return e;
      const upgraded = this.upgrade(e.key, e.value, e.version ?? 1);
      return upgraded ? { ...e, value: upgraded.value, version: upgraded.version } : e;
    });
    const ops: WriteOp[] = restored.map((e) => ({
      key: e.key,
      value: e.value,
      version: e.version,
      expiresAt: e.expiresAt ?? null,
      meta: { transition, source: options.source, actor: options.actor },
    }));
    await this.persist(ops);
    for (const e of restored) {
      this.notify({
        key: e.key,
        old: olds.get(e.key) ?? null,
        new: e.value,
        transition,
        source: options.source,
        actor: options.actor ?? null,
      });
    }
    return entries.length;
  }

  /** Migrates every stored value of a registered namespace to its current version. */
  async migrateAll(): Promise<{ migrated: number; refused: string[] }> {
    let migrated = 0;
    const refused: string[] = [];
    for (const [namespace, spec] of this.namespaces) {
      for (const entry of await this.store.list(`${namespace}:`)) {
        if (isUndecodable(entry) || entry.version === (spec.version ?? 1)) continue;
        const result = await this.migrated(entry);
        if (result === null) refused.push(entry.key);
        else migrated += 1;
      }
    }
    return { migrated, refused };
  }

  /**
   * Calls `listener` after each committed change of `pattern`: a key, or a prefix when
   * it ends with `:` or `*`. A listener that throws or is slow never affects the write.
   */
  subscribe(pattern: string, listener: StateListener): () => void {
    let set = this.listeners.get(pattern);
    if (!set) {
      set = new Set();
      this.listeners.set(pattern, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  private async commit(
    key: string,
    current: StoredEntry | null,
    value: JsonObject,
    options: ChangeOptions,
    /** The schema the caller already validated with; not checked twice on the hot path. */
    validatedBy?: z.ZodType<JsonObject>,
    /** The cross-process key lock's fencing token, when the change is made under one. */
    fenceToken?: number,
  ): Promise<StoredEntry> {
    this.checkIfMatch(key, current, options.ifMatch);
    const namespace = namespaceOf(key);
    const spec = this.namespaces.get(namespace);
    let checked = value;
    if (spec?.schema && spec.schema !== validatedBy) {
      const parsed = spec.schema.safeParse(value);
      if (!parsed.success) {
        throw new BadRequestError("invalid_state_value", `value for ${key} does not match the ${namespace} schema`, parsed.error.issues);
      }
      checked = parsed.data;
    }
    const json = JSON.stringify(checked);
    const size = Buffer.byteLength(json);
    if (size > this.maxValueBytes && !INTERNAL_NAMESPACES.includes(namespace)) {
      throw new PayloadTooLargeError("state_value_too_large", `value for ${key} is ${size} bytes; the limit is ${this.maxValueBytes}`);
    }
    const transition = options.transition ?? this.transitionFor(key, spec, current?.value ?? null, checked);
    const expiresAt =
      options.ttlMs === undefined ? (current?.expiresAt ?? null) : options.ttlMs === null ? null : this.now() + options.ttlMs;
    const version = spec?.version ?? 1;
    await this.persist([
      {
        key,
        value: checked,
        version,
        expiresAt,
        meta: { transition, source: options.source, actor: options.actor },
        ...fenced(fenceToken),
        json,
      },
    ]);
    this.notify({ key, old: current?.value ?? null, new: checked, transition, source: options.source, actor: options.actor ?? null });
    return { key, value: checked, version, updatedAt: this.now(), expiresAt };
  }

  private transitionFor(key: string, spec: NamespaceSpec | undefined, old: JsonObject | null, next: JsonObject): Transition {
    const rules = spec?.transitions;
    if (rules) {
      const from = old ? getPath(old, rules.field) : undefined;
      const to = getPath(next, rules.field);
      if (old && from !== to) {
        const allowed = rules.allowed[String(from)] ?? [];
        if (!allowed.includes(String(to))) {
          throw new ConflictError(
            "transition_not_allowed",
            `${key}: ${rules.field} cannot change from "${String(from)}" to "${String(to)}" (allowed: ${allowed.join(", ") || "none"})`,
          );
        }
        if (to === "active") return from === "suspended" ? "resume" : "activate";
        if (to === "suspended") return "suspend";
      }
    }
    return old === null ? "create" : "update";
  }

  private checkIfMatch(key: string, current: StoredEntry | null, ifMatch: string | undefined): void {
    if (ifMatch === undefined) return;
    if (ifMatch === "*" ? current !== null : current !== null && etagOf(current.value) === ifMatch) return;
    throw new PreconditionFailedError("etag_mismatch", `${key} has changed since it was read (If-Match ${ifMatch})`);
  }

  /** The entry at its namespace's current version (written back), or null when it is newer than known. */
  private async migrated(entry: StoredEntry): Promise<StoredEntry | null> {
    const upgraded = this.upgrade(entry.key, entry.value, entry.version);
    if (upgraded === null) return null;
    if (upgraded.version === entry.version) return entry;
    const { value, version: target } = upgraded;
    await this.persist([
      { key: entry.key, value, version: target, expiresAt: entry.expiresAt, meta: { transition: "update", source: "migration" } },
    ]);
    this.log.info({ key: entry.key, from: entry.version, to: target }, "state value migrated");
    return { ...entry, value, version: target };
  }

  /**
   * `value` (stored at `version`) at its namespace's current version: unchanged when
   * already there or the namespace is not registered; null when it is newer than known
   * or a step is missing (logged).
   */
  private upgrade(key: string, value: JsonObject, version: number): { value: JsonObject; version: number } | null {
    const spec = this.namespaces.get(namespaceOf(key));
    const target = spec?.version ?? 1;
    if (!spec || version === target) return { value, version };
    if (version > target) {
      this.log.warn({ key, version, known: target }, "stored value is from a newer version; left untouched");
      return null;
    }
    let next = value;
    for (let v = version; v < target; v++) {
      const step = spec.migrations?.[v];
      if (!step) {
        this.log.warn({ key, from: v }, "no migration step; value left untouched");
        return null;
      }
      next = step(next);
    }
    return { value: next, version: target };
  }

  private check<S extends z.ZodType<JsonObject>>(key: string, raw: JsonObject, schema: S, updatedAt: number): ReadResult<z.infer<S>> {
    const parsed = schema.safeParse(raw);
    if (parsed.success) return { status: "ok", value: parsed.data, updatedAt };
    const reason = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    this.log.warn({ key, reason }, "stored value does not match its schema");
    return { status: "invalid", reason };
  }

  private notify(change: StateChange): void {
    const targets: StateListener[] = [];
    for (const [pattern, set] of this.listeners) {
      const prefix = pattern.endsWith("*") ? pattern.slice(0, -1) : pattern.endsWith(":") ? pattern : null;
      if (prefix !== null ? change.key.startsWith(prefix) : change.key === pattern) targets.push(...set);
    }
    if (targets.length === 0) return;
    // After the commit and outside the writer's call stack: a slow or failing listener
    // can neither delay the acknowledgement nor fail it.
    setImmediate(() => {
      for (const listener of targets) {
        try {
          const result = listener(change);
          if (result instanceof Promise) {
            result.catch((err: unknown) => this.log.error({ key: change.key, err: String(err) }, "state listener failed"));
          }
        } catch (err) {
          this.log.error({ key: change.key, err: err instanceof Error ? err.message : String(err) }, "state listener failed");
        }
      }
    });
  }
}

function fenced(fenceToken: number | undefined): Pick<WriteOp, "fenceToken"> {
  return fenceToken === undefined ? {} : { fenceToken };
}

function view(entry: StoredEntry): StateEntryView {
  return {
    key: entry.key,
    value: entry.value,
    version: entry.version,
    updated_at: new Date(entry.updatedAt).toISOString(),
    expires_at: entry.expiresAt === null ? null : new Date(entry.expiresAt).toISOString(),
    etag: etagOf(entry.value),
  };
}
