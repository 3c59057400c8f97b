import { mkdir, readdir, rename, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { plainCodec, type ValueCodec } from "./codec.js";
import { SqliteConnection, type SqlParam, sqliteErrorCode, writeFailureOf } from "./sqlite-connection.js";
import { ADDED_COLUMNS, batchSql, SCHEMA_SQL } from "./sqlite-sql.js";
import {
  type CommitInfo,
  type HistoryEntry,
  type HistoryQuery,
  type HistoryRetention,
  type ListedEntry,
  type ListOptions,
  type StateStore,
  StoreClosedError,
  StoreCorruptError,
  type StoredEntry,
  StoreOpenError,
  StoreWriteError,
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

export type SynchronousMode = "off" | "normal" | "full" | "extra";

export interface SQLiteStateStoreOptions {
  path: string;
  /** `full` (default) makes an acknowledged write survive power loss in WAL mode. */
  synchronous?: SynchronousMode;
  busyTimeoutMs?: number;
  /** How values are kept at rest (default: plain JSON text). */
  codec?: ValueCodec;
  /**
   * Open with SQLITE_OPEN_READONLY, for commands that only read: no schema upgrade, no
   * pragma or marker writes; an older schema that cannot be read as it is is refused.
   */
  readOnly?: boolean;
  /** Keep a history entry for every change, in the same transaction (default true). */
  history?: boolean;
  log?: Logger;
  now?: () => number;
  /** Called after each group commit (metrics, health); `writes` callers, `ops` rows; `error` when it failed. Must not throw. */
  onCommit?: (info: CommitInfo) => void;
}

/** Queued work for the writer: writes are grouped; a task runs alone, in its place. */
type Pending =
  | { kind: "write"; ops: EncodedOp[]; resolve: () => void; reject: (err: Error) => void }
  | { kind: "task"; run: () => Promise<void> };
type PendingWrite = Extract<Pending, { kind: "write" }>;

/** Page size of databases this store creates (see initialize). */
const PAGE_SIZE = 512;
const CORRUPTION_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB"]);
/**
 * History rows one retention delete removes. A device's row (old and new value) fills most
 * of a 512-byte page, so a delete rewrites about that many pages: 100 keeps a slot to a few
 * milliseconds (500 let a third as many writes through while a backlog was pruned).
 */
const PRUNE_CHUNK = 100;

/**
 * SQLite-backed StateStore. One writer connection applies writes with group commit:
 * every write that arrives while a transaction is committing joins the next one, so a
 * burst of N writes costs a few fsyncs instead of N. A separate reader connection sees
 * only committed data (WAL snapshot), never the writer's open transaction.
 */
export class SQLiteStateStore implements StateStore {
  private writer: SqliteConnection | null = null;
  private reader: SqliteConnection | null = null;
  private pending: Pending[] = [];
  private committing: Promise<void> | null = null;
  private closing = false;
  private commits = 0;
  private committedWrites = 0;
  private readonly synchronous: SynchronousMode;
  private readonly busyTimeoutMs: number;
  private readonly codec: ValueCodec;
  private readonly withHistory: boolean;
  private readonly now: () => number;

  constructor(private readonly options: SQLiteStateStoreOptions) {
    this.synchronous = options.synchronous ?? "full";
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.codec = options.codec ?? plainCodec;
    this.withHistory = options.history ?? true;
    this.now = options.now ?? Date.now;
  }

  get path(): string {
    return this.options.path;
  }

  /** Transactions committed and writes they carried: their ratio is the group-commit batch size. */
  get stats(): { commits: number; writes: number } {
    return { commits: this.commits, writes: this.committedWrites };
  }

  async initialize(): Promise<void> {
    if (this.writer || this.reader) return;
    const path = this.options.path;
    if (this.options.readOnly) return this.initializeReadOnly(path);
    await this.prepareDirectory(path);
    await this.refuseHollowStart(path);

    let writer: SqliteConnection;
    try {
      writer = await SqliteConnection.open(path, "readwrite-create");
    } catch (err) {
      throw new StoreOpenError(`cannot open state database ${path}: ${errorMessage(err)}`, { cause: err });
    }

    try {
      writer.setBusyTimeout(this.busyTimeoutMs);
      await this.checkIntegrity(writer);
      // Small pages for new databases: a commit writes every page it touches to the WAL
      // (the row, its history row, the history index entry), and the kernel counts each
      // 4 KiB page of the WAL it dirties. SQLite's smallest page (512 B) keeps an action
      // under 8 KiB of writes on the controller's flash, against ~32 KiB with the 4 KiB
      // default; rows over ~470 B spill to overflow pages. Existing files keep their size.
      await writer.exec(
        `PRAGMA page_size = ${PAGE_SIZE}; PRAGMA journal_mode = WAL; PRAGMA synchronous = ${this.synchronous.toUpperCase()};`,
      );
      const journal = await writer.get<{ journal_mode: string }>("PRAGMA journal_mode");
      if (journal?.journal_mode !== "wal") {
        throw new StoreOpenError(`state database ${path} cannot use WAL journaling (got ${journal?.journal_mode})`);
      }
      await writer.exec(SCHEMA_SQL);
      const columns = new Set((await writer.all<{ name: string }>("PRAGMA table_info(state_store)")).map((c) => c.name));
      for (const [column, sql] of ADDED_COLUMNS) if (!columns.has(column)) await writer.run(sql);
      await this.checkEncryption(writer);
    } catch (err) {
      await writer.close().catch((closeErr: unknown) => this.options.log?.warn({ err: closeErr }, "close failed"));
      if (err instanceof StoreCorruptError || err instanceof StoreOpenError) throw err;
      if (CORRUPTION_CODES.has(sqliteErrorCode(err) ?? "")) {
        throw await this.quarantine(errorMessage(err));
      }
      throw new StoreOpenError(`cannot initialize state database ${path}: ${errorMessage(err)}`, { cause: err });
    }

    try {
      const reader = await SqliteConnection.open(path, "readwrite");
      reader.setBusyTimeout(this.busyTimeoutMs);
      this.reader = reader;
    } catch (err) {
      await writer.close();
      throw new StoreOpenError(`cannot open state database ${path} for reading: ${errorMessage(err)}`, { cause: err });
    }
    this.writer = writer;
    this.closing = false;
  }

  private async initializeReadOnly(path: string): Promise<void> {
    let reader: SqliteConnection;
    try {
      reader = await SqliteConnection.open(path, "readonly");
    } catch (err) {
      throw new StoreOpenError(`cannot open state database ${path} read-only: ${errorMessage(err)}`, { cause: err });
    }
    try {
      reader.setBusyTimeout(this.busyTimeoutMs);
      const tables = new Set(
        (await reader.all<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")).map((t) => t.name),
      );
      const columns = new Set((await reader.all<{ name: string }>("PRAGMA table_info(state_store)")).map((c) => c.name));
      const missing = [
        ...["state_store", "state_history", "state_meta"].filter((t) => !tables.has(t)),
        ...ADDED_COLUMNS.map(([column]) => column).filter((c) => tables.has("state_store") && !columns.has(c)),
      ];
      if (missing.length > 0) {
        throw new StoreOpenError(
          `state database ${path} has an older schema (missing ${missing.join(", ")}); a read command does not upgrade it: start the bridge or run a command that changes the database (e.g. migrate), with the bridge stopped`,
        );
      }
      const marker = await reader.get<{ value: string }>("SELECT value FROM state_meta WHERE name = ?", [ENCRYPTION_MARKER]);
      if (marker && !this.codec.encrypted) {
        throw new StoreOpenError(
          `state database ${path} is encrypted; configure its key (STATE_ENCRYPTION_KEY or persistence.encryption.key_file)`,
        );
      }
      if (marker) {
        try {
          this.codec.decode(marker.value);
        } catch {
          throw new StoreOpenError(`state database ${path} cannot be decrypted with the configured key(s); nothing was changed`);
        }
      }
    } catch (err) {
      await reader.close().catch((closeErr: unknown) => this.options.log?.warn({ err: closeErr }, "close failed"));
      if (err instanceof StoreOpenError) throw err;
      throw new StoreOpenError(`cannot read state database ${path}: ${errorMessage(err)}`, { cause: err });
    }
    this.reader = reader;
    this.closing = false;
  }

  async close(): Promise<void> {
    if (!this.writer && this.reader) {
      // Read-only: nothing to flush or checkpoint.
      const reader = this.reader;
      this.reader = null;
      await reader.close();
      return;
    }
    if (!this.writer) return;
    this.closing = true;
    while (this.committing) await this.committing;
    const writer = this.writer;
    const reader = this.reader;
    this.writer = null;
    this.reader = null;
    await reader?.close();
    try {
      // Fold the WAL back into the main file so a copied database is self-contained.
      await writer.run("PRAGMA wal_checkpoint(TRUNCATE)");
    } finally {
      await writer.close();
    }
  }

  async get(key: string): Promise<JsonObject | null> {
    return (await this.getEntry(key))?.value ?? null;
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    const row = await this.openReader().get<Row>(
      "SELECT key, value, updated_at, version, expires_at FROM state_store WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
      [key, this.now()],
    );
    return row ? this.entry(row) : null;
  }

  set(key: string, value: JsonObject): Promise<void> {
    return this.write([{ key, value }]);
  }

  delete(key: string): Promise<void> {
    return this.write([{ key, value: null }]);
  }

  write(ops: readonly WriteOp[]): Promise<void> {
    if (!this.writer || this.closing) {
      const keys = ops.map((o) => o.key).join(", ");
      return Promise.reject(new StoreClosedError(`state store is closed; ${keys} was not written`));
    }
    let encoded: EncodedOp[];
    try {
      encoded = ops.map((op) => encodeOp(this.codec, op));
    } catch (err) {
      return Promise.reject(err instanceof StoreWriteError ? err : new StoreWriteError(errorMessage(err)));
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ kind: "write", ops: encoded, resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListedEntry[]> {
    const where = ["(expires_at IS NULL OR expires_at > ?)"];
    const params: SqlParam[] = [this.now()];
    if (prefix !== "") {
      where.push("key >= ? AND key < ?");
      params.push(prefix, prefixUpperBound(prefix));
    }
    if (options.after !== undefined) {
      where.push("key > ?");
      params.push(options.after);
    }
    const limit = options.limit !== undefined ? ` LIMIT ${Math.max(0, Math.trunc(options.limit))}` : "";
    const rows = await this.openReader().all<Row>(
      `SELECT key, value, updated_at, version, expires_at FROM state_store WHERE ${where.join(" AND ")} ORDER BY key${limit}`,
      params,
    );
    return listedEntries(this.codec, rows);
  }

  async count(prefix = ""): Promise<number> {
    const params: SqlParam[] = [this.now()];
    let range = "";
    if (prefix !== "") {
      range = " AND key >= ? AND key < ?";
      params.push(prefix, prefixUpperBound(prefix));
    }
    const row = await this.openReader().get<{ n: number }>(
      `SELECT COUNT(*) AS n FROM state_store WHERE (expires_at IS NULL OR expires_at > ?)${range}`,
      params,
    );
    return row?.n ?? 0;
  }

  async history(query: HistoryQuery): Promise<HistoryEntry[]> {
    const where: string[] = [];
    const params: SqlParam[] = [];
    if (query.key !== undefined) {
      where.push("key = ?");
      params.push(query.key);
    }
    if (query.transition !== undefined) {
      where.push("transition = ?");
      params.push(query.transition);
    }
    if (query.beforeId !== undefined) {
      where.push("id < ?");
      params.push(query.beforeId);
    }
    const rows = await this.openReader().all<HistoryRow>(
      `SELECT id, key, old, new, transition, source, actor, at FROM state_history
       ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ${Math.max(1, Math.trunc(query.limit))}`,
      params,
    );
    return rows.map((r) => historyEntry(this.codec, r));
  }

  /**
   * Retention that never holds the writer for long. What to remove is worked out on a
   * connection of its own, reading a WAL snapshot, so commits go on meanwhile: the single
   * statement this replaced ranked every row of the table on the writer, 190-225 ms per run at
   * 1000 keys of 200 rows with nothing to remove, every maintenance interval, and each
   * action arriving then waited behind it. The writer then deletes by id, or below one
   * key's threshold id through the (key, id) index, PRUNE_CHUNK rows per slot between
   * group commits. Rows committed after a scan are newer than anything it chose, so none
   * of them goes; the table's newest row always stays (see the schema: ids would
   * otherwise be handed out again).
   */
  async pruneHistory(retention: HistoryRetention, now: number): Promise<number> {
    if (retention.maxAgeMs <= 0 && retention.maxPerKey <= 0) return 0;
    if (!this.writer || this.closing) throw new StoreClosedError("state store is closed");
    // A connection of its own for the scans (a full one takes 150 ms at 200,000 rows): the
    // reader serves the API's reads, and a connection runs one statement at a time.
    const scanner = await SqliteConnection.open(this.options.path, "readwrite");
    try {
      scanner.setBusyTimeout(this.busyTimeoutMs);
      return await this.pruneWith(scanner, retention, now);
    } finally {
      await scanner
        .close()
        .catch((err: unknown) => this.options.log?.warn({ err: errorMessage(err) }, "closing the retention connection failed"));
    }
  }

  private async pruneWith(reader: SqliteConnection, retention: HistoryRetention, now: number): Promise<number> {
    const newest = (await reader.get<{ id: number | null }>("SELECT max(id) AS id FROM state_history"))?.id ?? null;
    if (newest === null) return 0;
    const deleted = (sql: string, params: readonly SqlParam[] = []) =>
      this.exclusive(async (writer) => (await writer.run(sql, params)).changes);
    let removed = 0;
    if (retention.maxAgeMs > 0) {
      // No index on `at` (one more page per commit): the scan is the reader's, in id order.
      for (let after = 0; ; ) {
        const rows = await reader.all<{ id: number }>(
          "SELECT id FROM state_history WHERE id > ? AND id < ? AND at < ? ORDER BY id LIMIT ?",
          [after, newest, now - retention.maxAgeMs, PRUNE_CHUNK],
        );
        const last = rows.at(-1);
        if (last === undefined) break;
        removed += await deleted(`DELETE FROM state_history WHERE id IN (${rows.map((r) => r.id).join(", ")})`);
        if (rows.length < PRUNE_CHUNK) break;
        after = last.id;
      }
    }
    if (retention.maxPerKey > 0) {
      // Per key over the limit, the id of its maxPerKey-th newest row: the rows below it go.
      const over = await reader.all<{ key: string; keep_from: number }>(
        `SELECT h.key, (SELECT n.id FROM state_history n WHERE n.key = h.key ORDER BY n.id DESC LIMIT 1 OFFSET ?) AS keep_from
           FROM state_history h GROUP BY h.key HAVING count(*) > ?`,
        [retention.maxPerKey - 1, retention.maxPerKey],
      );
      for (const { key, keep_from } of over) {
        for (;;) {
          const changes = await deleted(
            "DELETE FROM state_history WHERE id IN (SELECT id FROM state_history WHERE key = ? AND id < ? ORDER BY id LIMIT ?)",
            [key, keep_from, PRUNE_CHUNK],
          );
          removed += changes;
          if (changes < PRUNE_CHUNK) break;
        }
      }
    }
    return removed;
  }

  async sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>> {
    const rows = await this.exclusive(async (writer) => {
      await writer.run("BEGIN IMMEDIATE");
      try {
        const expired = await writer.all<Row>(
          "SELECT key, value, updated_at, version, expires_at FROM state_store WHERE expires_at IS NOT NULL AND expires_at <= ?",
          [now],
        );
        if (expired.length > 0) {
          if (this.withHistory) {
            await writer.run(
              `INSERT INTO state_history (key, old, new, transition, source, actor, at)
               SELECT key, value, NULL, 'expire', 'ttl', NULL, ? FROM state_store WHERE expires_at IS NOT NULL AND expires_at <= ?`,
              [now, now],
            );
          }
          await writer.run("DELETE FROM state_store WHERE expires_at IS NOT NULL AND expires_at <= ?", [now]);
        }
        await writer.run("COMMIT");
        return expired;
      } catch (err) {
        await writer.run("ROLLBACK").catch(() => undefined);
        throw err;
      }
    });
    return rows.map((r) => {
      let old: JsonObject | null = null;
      try {
        old = this.decodeText(r.key, r.value);
      } catch (err) {
        this.options.log?.warn({ key: r.key, err: errorMessage(err) }, "expired value could not be decoded");
      }
      return { key: r.key, old };
    });
  }

  /**
   * Re-encrypts every value and history entry not yet under the codec's first key.
   * For the offline key-rotation command: holds the writer for the whole run.
   */
  async reencryptAll(): Promise<{ values: number; history: number }> {
    return this.exclusive(async (writer) => {
      let values = 0;
      let history = 0;
      await writer.run("BEGIN IMMEDIATE");
      try {
        for (const row of await writer.all<{ key: string; value: string }>("SELECT key, value FROM state_store")) {
          if (this.codec.isCurrent(row.value)) continue;
          await writer.run("UPDATE state_store SET value = ? WHERE key = ?", [this.recode(row.key, row.value), row.key]);
          values += 1;
        }
        for (const row of await writer.all<{ id: number; key: string; old: string | null; new: string | null }>(
          "SELECT id, key, old, new FROM state_history",
        )) {
          const old = row.old === null || this.codec.isCurrent(row.old) ? row.old : this.recode(row.key, row.old);
          const next = row.new === null || this.codec.isCurrent(row.new) ? row.new : this.recode(row.key, row.new);
          if (old === row.old && next === row.new) continue;
          await writer.run("UPDATE state_history SET old = ?, new = ? WHERE id = ?", [old, next, row.id]);
          history += 1;
        }
        await this.writeMarker(writer);
        await writer.run("COMMIT");
        return { values, history };
      } catch (err) {
        await writer.run("ROLLBACK").catch(() => undefined);
        throw err;
      }
    });
  }

  private recode(key: string, stored: string): string {
    return this.codec.encode(JSON.stringify(this.decodeText(key, stored)));
  }

  private openReader(): SqliteConnection {
    if (!this.reader) throw new StoreClosedError("state store is not open");
    return this.reader;
  }

  /** Runs `fn` on the writer between group commits, so it never interleaves with a batch. */
  private exclusive<T>(fn: (writer: SqliteConnection) => Promise<T>): Promise<T> {
    if (!this.writer || this.closing) return Promise.reject(new StoreClosedError("state store is closed"));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({
        kind: "task",
        run: async () => {
          const writer = this.writer;
          if (!writer) return reject(new StoreClosedError("state store is closed"));
          await fn(writer).then(resolve, reject);
        },
      });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  private async commitLoop(): Promise<void> {
    try {
      // Let writes that arrived in the same I/O turn (e.g. several MQTT commands read
      // from one socket buffer) join the first transaction instead of waiting for the next.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.pending.length > 0) {
        const head = this.pending[0] as Pending;
        if (head.kind === "task") {
          this.pending.shift();
          await head.run();
          continue;
        }
        const end = this.pending.findIndex((p) => p.kind === "task");
        const batch = (end === -1 ? this.pending.splice(0) : this.pending.splice(0, end)) as PendingWrite[];
        const ops = batch.flatMap((w) => w.ops);
        const started = performance.now();
        // A throwing observer must never turn a committed batch into a rejected one.
        const report = (ok: boolean, error?: StoreWriteError) => {
          try {
            this.options.onCommit?.({ writes: batch.length, ops: ops.length, durationMs: performance.now() - started, ok, error });
          } catch (err) {
            this.options.log?.warn({ err: errorMessage(err) }, "commit observer failed");
          }
        };
        try {
          await this.commitBatch(ops);
          this.commits += 1;
          this.committedWrites += batch.length;
          report(true);
          for (const write of batch) write.resolve();
        } catch (err) {
          const keys = [...new Set(ops.map((o) => o.key))];
          this.options.log?.error({ err: errorMessage(err), keys: keys.slice(0, 20), count: ops.length }, "state commit failed");
          const failure = new StoreWriteError(`could not commit ${ops.length} write(s) to ${this.options.path}: ${errorMessage(err)}`, {
            cause: err,
            failure: writeFailureOf(err),
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
    const writer = this.writer;
    if (!writer) throw new StoreClosedError("state store is closed");
    try {
      await writer.exec(batchSql(ops, this.now(), this.withHistory));
    } catch (err) {
      // A failed statement leaves the transaction open; a failed COMMIT (FULL, IOERR) may
      // already have rolled it back, and then ROLLBACK only reports that there is none.
      await writer.exec("ROLLBACK").catch((rollbackErr: unknown) => {
        const message = errorMessage(rollbackErr);
        if (!message.includes("no transaction is active")) {
          this.options.log?.error({ err: message }, "rollback after a failed commit failed");
        }
      });
      throw err;
    }
  }

  private entry(row: Row): StoredEntry {
    return rowEntry(this.codec, row);
  }

  private decodeText(key: string, stored: string): JsonObject {
    return decodeStored(this.codec, key, stored);
  }

  /**
   * A database that was written encrypted must be opened with a key that decrypts it,
   * and never without one: refuse before anything is written.
   */
  private async checkEncryption(writer: SqliteConnection): Promise<void> {
    const marker = await writer.get<{ value: string }>("SELECT value FROM state_meta WHERE name = ?", [ENCRYPTION_MARKER]);
    if (marker) {
      if (!this.codec.encrypted) {
        throw new StoreOpenError(
          `state database ${this.options.path} is encrypted; configure its key (STATE_ENCRYPTION_KEY or persistence.encryption.key_file)`,
        );
      }
      try {
        this.codec.decode(marker.value);
      } catch {
        throw new StoreOpenError(`state database ${this.options.path} cannot be decrypted with the configured key(s); nothing was changed`);
      }
      return;
    }
    if (this.codec.encrypted) await this.writeMarker(writer);
  }

  private async writeMarker(writer: SqliteConnection): Promise<void> {
    if (!this.codec.encrypted) return;
    await writer.run(
      `INSERT INTO state_meta (name, value) VALUES (${lit(ENCRYPTION_MARKER)}, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value`,
      [this.codec.encode(MARKER_PLAINTEXT)],
    );
  }

  private async prepareDirectory(path: string): Promise<void> {
    try {
      await mkdir(dirname(path), { recursive: true });
    } catch (err) {
      throw new StoreOpenError(`cannot create directory for state database ${path}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const info = await stat(path).catch(() => null);
    if (info && !info.isFile()) {
      throw new StoreOpenError(`cannot open state database ${path}: it is not a regular file`);
    }
  }

  /**
   * SQLite opens a 0-byte file as an empty database, and deletes a WAL it finds without
   * its database: either way the bridge would start empty, and the WAL (perhaps the only
   * copy of recent changes) would be gone. SQLite's own writes leave neither (a new
   * database gets page 1 before any WAL frame), so both are damage. A database missing
   * where a damaged one was moved aside is refused as well, or the restart that follows
   * a refusal would start empty.
   */
  private async refuseHollowStart(path: string): Promise<void> {
    const size = await fileSize(path);
    if (size === 0) throw await this.quarantine("the file is empty, 0 bytes");
    if (size !== null) return;
    const wal = await fileSize(`${path}-wal`);
    if (wal !== null) throw await this.quarantine(`found its write-ahead log, ${wal} bytes, without the database file`);
    const prefix = `${basename(path)}.corrupt.`;
    const aside = (await readdir(dirname(path))).filter((name) => name.startsWith(prefix)).sort();
    const newest = aside[aside.length - 1];
    if (newest === undefined) return;
    throw new StoreCorruptError(
      `state database ${path} is missing and a damaged one was moved aside (${aside.map((n) => join(dirname(path), n)).join(", ")}). ` +
        "Restore a backup to that path, or remove the damaged files to start with empty state.",
      join(dirname(path), newest),
    );
  }

  private async checkIntegrity(writer: SqliteConnection): Promise<void> {
    const rows = await writer.all<{ integrity_check: string }>("PRAGMA integrity_check");
    const problems = rows.map((r) => r.integrity_check).filter((r) => r !== "ok");
    if (problems.length > 0) {
      throw await this.quarantine(`integrity check failed: ${problems.slice(0, 3).join("; ")}`);
    }
  }

  /** Moves a damaged database (and its WAL/SHM) aside; never replaces it silently. */
  private async quarantine(reason: string): Promise<StoreCorruptError> {
    const path = this.options.path;
    const stamp = new Date(this.now()).toISOString().replace(/[:.]/g, "-");
    const target = `${path}.corrupt.${stamp}`;
    const moved: string[] = [];
    for (const suffix of ["", "-wal", "-shm"]) {
      await rename(path + suffix, target + suffix).then(
        () => moved.push(target + suffix),
        (err: unknown) => {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        },
      );
    }
    // A WAL found without its database is what was kept.
    const aside = moved[0] ?? target;
    this.options.log?.error({ path, quarantinedTo: aside }, "state database is damaged; moved aside");
    return new StoreCorruptError(
      `state database ${path} is damaged (${reason}); it was moved to ${aside}. ` +
        "Restore a backup to that path or remove it to start with empty state.",
      aside,
    );
  }
}

/** Size of the file at `path`; null when there is none. */
async function fileSize(path: string): Promise<number | null> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new StoreOpenError(`cannot check ${path}: ${errorMessage(err)}`, { cause: err });
  }
}
