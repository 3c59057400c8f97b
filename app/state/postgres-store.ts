import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { redactUrl } from "../shared/urls.js";
import { plainCodec, type ValueCodec } from "./codec.js";
import { batchSql, changeChannel, FENCED_SQLSTATE, LOCK_SPACE, SCHEMA_NAME, STALE_LOCK_SQLSTATE, schemaSql } from "./postgres-sql.js";
import {
  type CommitInfo,
  type ExternalChange,
  type HistoryEntry,
  type HistoryQuery,
  type HistoryRetention,
  type KeyLock,
  type ListedEntry,
  type ListOptions,
  type StateStore,
  StoreClosedError,
  type StoredEntry,
  StoreOpenError,
  StoreWriteError,
  type Transition,
  type WriteFailure,
  type WriteOp,
} from "./store.js";
import {
  decodeStored,
  ENCRYPTION_MARKER,
  type EncodedOp,
  encodeOp,
  type HistoryRow,
  historyEntry,
  listedEntries,
  lit,
  MARKER_PLAINTEXT,
  prefixUpperBound,
  type Row,
  rowEntry,
} from "./stored-text.js";

export interface PostgresConnectionOptions {
  /** `postgres://user:pass@host:port/db`; never logged unredacted. */
  url: string;
  /** Tables live in this schema (created if missing): several bridges or test runs share one database. */
  schema: string;
  /** How long to wait for a connection (start, reconnect). */
  connectTimeoutMs?: number;
  /** A statement that takes longer fails (a hung server must not hang actions forever). */
  queryTimeoutMs?: number;
}

export interface PostgresStateStoreOptions extends PostgresConnectionOptions {
  /** Connections for reads, beside the one writer. */
  readPoolSize?: number;
  codec?: ValueCodec;
  history?: boolean;
  log?: Logger;
  now?: () => number;
  onCommit?: (info: CommitInfo) => void;
  /** A commit was refused because another bridge took the lease: this one must stop. */
  onFenced?: (reason: string) => void;
}

type PendingWrite = { ops: EncodedOp[]; fenced: boolean; resolve: () => void; reject: (err: Error) => void };

const INT8_OID = 20;

/** BIGINT columns (epoch ms, history ids) as numbers; they stay far below 2^53. Per connection, not global. */
const pgTypes = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID && format !== "binary" ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Connection settings every connection of the bridge uses; `application_name` names the holder in pg_stat_activity. */
export function pgClientConfig(options: PostgresConnectionOptions): pg.ClientConfig {
  return {
    connectionString: options.url,
    application_name: `wb-bridge@${hostname()}:${process.pid}`.slice(0, 63),
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5000,
    query_timeout: options.queryTimeoutMs ?? 15_000,
    keepAlive: true,
    // A server that vanished (power, network) is noticed in seconds, not the OS's two hours.
    keepAliveInitialDelayMillis: 5000,
    types: pgTypes,
  };
}

/** Connection-level failures: the server is gone or restarting; writes resume when it is back. */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "57P01",
  "57P02",
  "57P03",
]);

export function pgWriteFailure(err: unknown): WriteFailure {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "53100") return "full";
  if (code === FENCED_SQLSTATE) return "unavailable";
  if (code === STALE_LOCK_SQLSTATE) return "stale_lock";
  if (code === "25006") return "read_only";
  if (typeof code === "string" && (UNAVAILABLE_CODES.has(code) || code.startsWith("08"))) return "unavailable";
  const message = errorMessage(err);
  if (/Connection terminated|timeout exceeded|Client has encountered a connection error|not queryable/i.test(message)) return "unavailable";
  return "other";
}

/** A connected client; `onError` hears of its connection dropping (without a listener, pg would crash the process). */
export async function connectPg(
  options: PostgresConnectionOptions,
  onError: (err: Error, client: pg.Client) => void = () => undefined,
): Promise<pg.Client> {
  const client = new pg.Client(pgClientConfig(options));
  client.on("error", (err) => onError(err, client));
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

export function describePg(options: PostgresConnectionOptions): string {
  return `PostgreSQL ${redactUrl(options.url)} (schema ${options.schema})`;
}

/**
 * PostgreSQL-backed StateStore with the SQLite store's contract: one writer connection
 * applies writes with group commit (one round trip per batch), history in the same
 * transaction; reads go through a small pool and see only committed data. When the
 * server goes away, commits fail with `unavailable` and the writer reconnects on the
 * next one; nothing is acknowledged that was not committed.
 */
export class PostgresStateStore implements StateStore {
  private pool: pg.Pool | null = null;
  private writer: pg.Client | null = null;
  private open = false;
  private pending: PendingWrite[] = [];
  private committing: Promise<void> | null = null;
  private closing = false;
  private readonly schema: string;
  private readonly codec: ValueCodec;
  private readonly withHistory: boolean;
  private readonly now: () => number;
  /** Tells this process's own notifications from other bridges'. */
  private readonly instance = randomBytes(8).toString("hex");
  private readonly channel: string;
  private fence: number | null = null;
  private readonly watchers = new Set<(change: ExternalChange) => void>();
  private readonly gapWatchers = new Set<() => void>();
  /** Set once a LISTEN has succeeded: every later one follows a time when nothing was heard. */
  private listenedBefore = false;
  private listener: pg.Client | null = null;
  private listenRetry: NodeJS.Timeout | null = null;
  private listening: Promise<void> = Promise.resolve();
  /** Connections that hold a key's advisory lock for a read-modify-write; apart from reads, so holders can always read. */
  private lockPool: pg.Pool | null = null;

  constructor(private readonly options: PostgresStateStoreOptions) {
    if (!SCHEMA_NAME.test(options.schema)) {
      throw new StoreOpenError(`PostgreSQL schema name ${JSON.stringify(options.schema)} is not a plain lower-case identifier`);
    }
    this.schema = options.schema;
    this.codec = options.codec ?? plainCodec;
    this.withHistory = options.history ?? true;
    this.now = options.now ?? Date.now;
    this.channel = changeChannel(options.schema);
  }

  /**
   * The fencing token this bridge's commits carry (the lease epoch it took); null
   * commits unfenced (a bridge without a pair).
   */
  setFence(epoch: number | null): void {
    this.fence = epoch;
  }

  get description(): string {
    return describePg(this.options);
  }

  async initialize(): Promise<void> {
    if (this.open) return;
    const where = this.description;
    let writer: pg.Client;
    try {
      writer = await this.connectWriter();
    } catch (err) {
      throw new StoreOpenError(`cannot connect to ${where}: ${errorMessage(err)}`, { cause: err });
    }
    try {
      const scs = await writer.query<{ standard_conforming_strings: string }>("SHOW standard_conforming_strings");
      if (scs.rows[0]?.standard_conforming_strings !== "on") {
        throw new StoreOpenError(`${where} has standard_conforming_strings off; the bridge needs it on`);
      }
      // Two bridges starting at once on an empty database must not race on CREATE.
      await writer.query(`BEGIN; SELECT pg_advisory_xact_lock(hashtext(${lit(this.schema)})); ${schemaSql(this.schema)} COMMIT;`);
      await this.checkEncryption(writer);
    } catch (err) {
      await writer.end().catch(() => undefined);
      if (err instanceof StoreOpenError) throw err;
      throw new StoreOpenError(`cannot initialize state tables in ${where}: ${errorMessage(err)}`, { cause: err });
    }
    const pool = new pg.Pool({ ...pgClientConfig(this.options), max: this.options.readPoolSize ?? 4, idleTimeoutMillis: 30_000 });
    // An idle pooled connection that the server drops must not crash the process.
    pool.on("error", (err) => this.options.log?.warn({ err: errorMessage(err) }, "PostgreSQL read connection lost"));
    const lockPool = new pg.Pool({ ...pgClientConfig(this.options), max: 8, idleTimeoutMillis: 30_000 });
    lockPool.on("error", (err) => this.options.log?.warn({ err: errorMessage(err) }, "PostgreSQL lock connection lost"));
    this.pool = pool;
    this.lockPool = lockPool;
    this.writer = writer;
    this.open = true;
    this.closing = false;
    if (this.watchers.size > 0) {
      this.listening = this.listen();
      await this.listening;
    }
  }

  /** Resolves once the latest attempt to LISTEN has finished (tests, and a caller that must not miss a change). */
  whenListening(): Promise<void> {
    return this.listening;
  }

  watch(listener: (change: ExternalChange) => void, onGap?: () => void): () => void {
    this.watchers.add(listener);
    if (onGap) this.gapWatchers.add(onGap);
    if (this.open && !this.listener) this.listening = this.listen();
    return () => {
      this.watchers.delete(listener);
      if (onGap) this.gapWatchers.delete(onGap);
    };
  }

  /** Not lost to a paused holder: the server keeps it for as long as the connection lives. */
  async lockKey(key: string): Promise<KeyLock> {
    if (!this.open || !this.lockPool) throw new StoreClosedError("state store is not open");
    const client = await this.lockPool.connect();
    const lock = `${LOCK_SPACE.update}, hashtext($1)`;
    try {
      await client.query(`SELECT pg_advisory_lock(${lock})`, [key]);
    } catch (err) {
      client.release(err instanceof Error ? err : true);
      throw new StoreWriteError(`cannot lock ${key} in ${this.description}: ${errorMessage(err)}`, {
        cause: err,
        failure: pgWriteFailure(err),
      });
    }
    return {
      release: async () => {
        try {
          await client.query(`SELECT pg_advisory_unlock(${lock})`, [key]);
          client.release();
        } catch (err) {
          // A dropped connection has released the lock with it.
          client.release(err instanceof Error ? err : true);
        }
      },
    };
  }

  /** A LISTEN connection of its own; reconnects after a drop, then tells the gap watchers. */
  private async listen(): Promise<void> {
    if (this.listener || !this.open) return;
    const client = new pg.Client(pgClientConfig(this.options));
    this.listener = client;
    client.on("notification", (msg) => this.dispatchNotification(msg.payload));
    client.on("error", (err) => {
      this.options.log?.warn({ err: errorMessage(err) }, "PostgreSQL change notifications lost; reconnecting");
      if (this.listener === client) this.listener = null;
      void client.end().catch(() => undefined);
      this.retryListen();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
      // Notifications are not queued for a session that is not listening: what was
      // committed while this one was down is only found by reading again.
      if (this.listenedBefore) for (const onGap of this.gapWatchers) onGap();
      this.listenedBefore = true;
    } catch (err) {
      if (this.listener === client) this.listener = null;
      await client.end().catch(() => undefined);
      this.options.log?.warn({ err: errorMessage(err) }, "cannot listen for PostgreSQL change notifications; retrying");
      this.retryListen();
    }
  }

  private retryListen(): void {
    if (!this.open || this.closing || this.listenRetry || this.watchers.size === 0) return;
    this.listenRetry = setTimeout(() => {
      this.listenRetry = null;
      this.listening = this.listen();
    }, 500);
  }

  private dispatchNotification(payload: string | undefined): void {
    if (payload === undefined) return;
    let parsed: { i?: unknown; k?: unknown; t?: unknown; d?: unknown; s?: unknown; a?: unknown };
    try {
      parsed = JSON.parse(payload) as typeof parsed;
    } catch {
      return;
    }
    if (parsed.i === this.instance || typeof parsed.k !== "string") return;
    const change: ExternalChange = {
      key: parsed.k,
      transition: typeof parsed.t === "string" ? (parsed.t as Transition) : null,
      deleted: parsed.d === true,
      source: typeof parsed.s === "string" ? parsed.s : "unknown",
      actor: typeof parsed.a === "string" ? parsed.a : null,
    };
    for (const watcher of this.watchers) {
      try {
        watcher(change);
      } catch (err) {
        this.options.log?.error({ key: change.key, err: errorMessage(err) }, "change watcher failed");
      }
    }
  }

  async close(): Promise<void> {
    if (!this.open) return;
    this.closing = true;
    while (this.committing) await this.committing;
    this.open = false;
    if (this.listenRetry) clearTimeout(this.listenRetry);
    this.listenRetry = null;
    const { writer, pool, lockPool, listener } = this;
    this.writer = null;
    this.pool = null;
    this.lockPool = null;
    this.listener = null;
    await writer?.end().catch(() => undefined);
    await listener?.end().catch(() => undefined);
    await lockPool?.end();
    await pool?.end();
  }

  async get(key: string): Promise<JsonObject | null> {
    return (await this.getEntry(key))?.value ?? null;
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    const rows = await this.read<Row>(
      `SELECT key, value, updated_at, version, expires_at FROM ${this.schema}.state_store WHERE key = $1 AND (expires_at IS NULL OR expires_at > $2)`,
      [key, this.now()],
    );
    const row = rows[0];
    return row ? this.entry(row) : null;
  }

  set(key: string, value: JsonObject): Promise<void> {
    return this.write([{ key, value }]);
  }

  delete(key: string): Promise<void> {
    return this.write([{ key, value: null }]);
  }

  write(ops: readonly WriteOp[]): Promise<void> {
    if (!this.open || this.closing) {
      return Promise.reject(new StoreClosedError(`state store is closed; ${ops.map((o) => o.key).join(", ")} was not written`));
    }
    if (ops.length === 0) return Promise.resolve();
    let encoded: EncodedOp[];
    try {
      encoded = ops.map((op) => encodeOp(this.codec, op));
    } catch (err) {
      return Promise.reject(err instanceof StoreWriteError ? err : new StoreWriteError(errorMessage(err)));
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ ops: encoded, fenced: encoded.some((op) => op.fenceToken !== undefined), resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListedEntry[]> {
    const where = ["(expires_at IS NULL OR expires_at > $1)"];
    const params: Array<string | number> = [this.now()];
    if (prefix !== "") {
      params.push(prefix, prefixUpperBound(prefix));
      where.push(`key >= $${params.length - 1} AND key < $${params.length}`);
    }
    if (options.after !== undefined) {
      params.push(options.after);
      where.push(`key > $${params.length}`);
    }
    const limit = options.limit !== undefined ? ` LIMIT ${Math.max(0, Math.trunc(options.limit))}` : "";
    const rows = await this.read<Row>(
      `SELECT key, value, updated_at, version, expires_at FROM ${this.schema}.state_store WHERE ${where.join(" AND ")} ORDER BY key${limit}`,
      params,
    );
    return listedEntries(this.codec, rows);
  }

  async count(prefix = ""): Promise<number> {
    const params: Array<string | number> = [this.now()];
    let range = "";
    if (prefix !== "") {
      params.push(prefix, prefixUpperBound(prefix));
      range = " AND key >= $2 AND key < $3";
    }
    const rows = await this.read<{ n: number }>(
      `SELECT COUNT(*)::int AS n FROM ${this.schema}.state_store WHERE (expires_at IS NULL OR expires_at > $1)${range}`,
      params,
    );
    return rows[0]?.n ?? 0;
  }

  async history(query: HistoryQuery): Promise<HistoryEntry[]> {
    const where: string[] = [];
    const params: Array<string | number> = [];
    const add = (clause: string, value: string | number) => {
      params.push(value);
      where.push(clause.replace("?", `$${params.length}`));
    };
    if (query.key !== undefined) add("key = ?", query.key);
    if (query.transition !== undefined) add("transition = ?", query.transition);
    if (query.beforeId !== undefined) add("id < ?", query.beforeId);
    const rows = await this.read<HistoryRow>(
      `SELECT id, key, old, new, transition, source, actor, at FROM ${this.schema}.state_history
       ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ${Math.max(1, Math.trunc(query.limit))}`,
      params,
    );
    return rows.map((r) => historyEntry(this.codec, r));
  }

  async pruneHistory(retention: HistoryRetention, now: number): Promise<number> {
    const clauses: string[] = [];
    if (retention.maxAgeMs > 0) clauses.push(`at < ${Math.trunc(now - retention.maxAgeMs)}`);
    if (retention.maxPerKey > 0) {
      clauses.push(
        `id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY key ORDER BY id DESC) AS n FROM ${this.schema}.state_history) AS ranked WHERE n > ${Math.trunc(retention.maxPerKey)})`,
      );
    }
    if (clauses.length === 0) return 0;
    let removed = 0;
    const chunk = 2000;
    for (;;) {
      // The newest entry stays, as in SQLite: a reader's `beforeId` cursor keeps its meaning.
      const result = await this.pooled((c) =>
        c.query(
          `DELETE FROM ${this.schema}.state_history WHERE id IN (SELECT id FROM ${this.schema}.state_history WHERE (${clauses.join(" OR ")})
             AND id < (SELECT max(id) FROM ${this.schema}.state_history) LIMIT ${chunk})`,
        ),
      );
      const changes = result.rowCount ?? 0;
      removed += changes;
      if (changes < chunk) return removed;
    }
  }

  async sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>> {
    const history = this.withHistory
      ? `, logged AS (INSERT INTO ${this.schema}.state_history (key, old, new, transition, source, actor, at)
           SELECT key, value, NULL, 'expire', 'ttl', NULL, $1 FROM gone ORDER BY key)`
      : "";
    const rows = await this.read<{ key: string; value: string }>(
      `WITH gone AS (DELETE FROM ${this.schema}.state_store WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING key, value)${history}
       SELECT key, value, pg_notify($2, json_build_object('i', $3::text, 'k', key, 't', 'expire', 'd', true, 's', 'ttl', 'a', NULL)::text)
         FROM gone ORDER BY key`,
      [now, this.channel, this.instance],
    );
    return rows.map((r) => {
      let old: JsonObject | null = null;
      try {
        old = decodeStored(this.codec, r.key, r.value);
      } catch (err) {
        this.options.log?.warn({ key: r.key, err: errorMessage(err) }, "expired value could not be decoded");
      }
      return { key: r.key, old };
    });
  }

  private async connectWriter(): Promise<pg.Client> {
    // A dropped connection is reported here; the next commit opens a new one.
    return connectPg(this.options, (err, client) => {
      this.options.log?.warn({ err: errorMessage(err) }, "PostgreSQL writer connection lost");
      if (this.writer === client) this.writer = null;
    });
  }

  /**
   * The next transaction's writes: all pending ones, except that a write under a key lock
   * commits alone, since a stale fencing token refuses the whole transaction it is in.
   */
  private takeBatch(): PendingWrite[] {
    const fenced = this.pending.findIndex((w) => w.fenced);
    if (fenced === -1) return this.pending.splice(0);
    return this.pending.splice(0, fenced === 0 ? 1 : fenced);
  }

  private async commitLoop(): Promise<void> {
    try {
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.pending.length > 0) {
        const batch = this.takeBatch();
        const ops = batch.flatMap((w) => w.ops);
        const started = performance.now();
        const report = (ok: boolean, error?: StoreWriteError) => {
          try {
            this.options.onCommit?.({ writes: batch.length, ops: ops.length, durationMs: performance.now() - started, ok, error });
          } catch (err) {
            this.options.log?.warn({ err: errorMessage(err) }, "commit observer failed");
          }
        };
        try {
          await this.commitBatch(ops);
          report(true);
          for (const write of batch) write.resolve();
        } catch (err) {
          const keys = [...new Set(ops.map((o) => o.key))];
          this.options.log?.error({ err: errorMessage(err), keys: keys.slice(0, 20), count: ops.length }, "state commit failed");
          const failure = new StoreWriteError(`could not commit ${ops.length} write(s) to ${this.description}: ${errorMessage(err)}`, {
            cause: err,
            failure: pgWriteFailure(err),
          });
          report(false, failure);
          for (const write of batch) write.reject(failure);
        }
      }
    } finally {
      this.committing = null;
    }
  }

  private async commitBatch(ops: readonly EncodedOp[]): Promise<void> {
    if (!this.writer) this.writer = await this.connectWriter();
    const writer = this.writer;
    try {
      await writer.query(
        batchSql(this.schema, ops, this.now(), this.withHistory, {
          fence: this.fence,
          notify: { channel: this.channel, instance: this.instance },
        }),
      );
    } catch (err) {
      if ((err as { code?: unknown }).code === FENCED_SQLSTATE) this.options.onFenced?.(errorMessage(err));
      if (pgWriteFailure(err) === "unavailable") {
        // The connection is unusable; whether COMMIT reached the server is unknown only
        // if it died during COMMIT, and then the client was never told "ok".
        if (this.writer === writer) this.writer = null;
        await writer.end().catch(() => undefined);
      } else {
        await writer.query("ROLLBACK").catch(() => undefined);
      }
      throw err;
    }
  }

  private async read<T extends pg.QueryResultRow>(sql: string, params: ReadonlyArray<string | number>): Promise<T[]> {
    return (await this.pooled((c) => c.query<T>(sql, [...params]))).rows;
  }

  private async pooled<T>(fn: (client: pg.Pool) => Promise<T>): Promise<T> {
    if (!this.open || !this.pool) throw new StoreClosedError("state store is not open");
    return fn(this.pool);
  }

  private entry(row: Row): StoredEntry {
    return rowEntry(this.codec, row);
  }

  private async checkEncryption(writer: pg.Client): Promise<void> {
    const marker = await writer.query<{ value: string }>(`SELECT value FROM ${this.schema}.state_meta WHERE name = $1`, [
      ENCRYPTION_MARKER,
    ]);
    const stored = marker.rows[0]?.value;
    if (stored !== undefined) {
      if (!this.codec.encrypted) {
        throw new StoreOpenError(
          `${this.description} is encrypted; configure its key (STATE_ENCRYPTION_KEY or persistence.encryption.key_file)`,
        );
      }
      try {
        this.codec.decode(stored);
      } catch {
        throw new StoreOpenError(`${this.description} cannot be decrypted with the configured key(s); nothing was changed`);
      }
      return;
    }
    if (this.codec.encrypted) {
      await writer.query(`INSERT INTO ${this.schema}.state_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, [
        ENCRYPTION_MARKER,
        this.codec.encode(MARKER_PLAINTEXT),
      ]);
    }
  }
}
