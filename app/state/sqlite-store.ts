import { mkdir, rename, stat } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import { isJsonObject, type JsonObject } from "../shared/json.js";
import { SqliteConnection, sqliteErrorCode, type SqlParam } from "./sqlite-connection.js";
import {
  StateDecodeError,
  StoreClosedError,
  StoreCorruptError,
  StoreOpenError,
  StoreWriteError,
  type ListedEntry,
  type StateStore,
} from "./store.js";

export type SynchronousMode = "off" | "normal" | "full" | "extra";

export interface SQLiteStateStoreOptions {
  path: string;
  /** `full` (default) makes an acknowledged write survive power loss in WAL mode. */
  synchronous?: SynchronousMode;
  busyTimeoutMs?: number;
  log?: Logger;
  now?: () => number;
}

interface PendingWrite {
  key: string;
  /** JSON text to upsert; null deletes the key. */
  text: string | null;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Row {
  key: string;
  value: string;
  updated_at: number;
}

// 3 bound parameters per row stays far below SQLite's 32766-variable limit.
const ROWS_PER_STATEMENT = 500;
const CORRUPTION_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB"]);

/**
 * SQLite-backed StateStore. One writer connection applies writes with group commit:
 * every write that arrives while a transaction is committing joins the next one, so a
 * burst of N writes costs a few fsyncs instead of N. A separate reader connection sees
 * only committed data (WAL snapshot), never the writer's open transaction.
 */
export class SQLiteStateStore implements StateStore {
  private writer: SqliteConnection | null = null;
  private reader: SqliteConnection | null = null;
  private pending: PendingWrite[] = [];
  private committing: Promise<void> | null = null;
  private closing = false;
  private commits = 0;
  private committedWrites = 0;
  private readonly synchronous: SynchronousMode;
  private readonly busyTimeoutMs: number;
  private readonly now: () => number;

  constructor(private readonly options: SQLiteStateStoreOptions) {
    this.synchronous = options.synchronous ?? "full";
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
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
    if (this.writer) return;
    const path = this.options.path;
    await this.prepareDirectory(path);

    let writer: SqliteConnection;
    try {
      writer = await SqliteConnection.open(path, "readwrite-create");
    } catch (err) {
      throw new StoreOpenError(`cannot open state database ${path}: ${errorMessage(err)}`, { cause: err });
    }

    try {
      writer.setBusyTimeout(this.busyTimeoutMs);
      await this.checkIntegrity(writer);
      await writer.exec(
        `PRAGMA journal_mode = WAL;
         PRAGMA synchronous = ${this.synchronous.toUpperCase()};
         CREATE TABLE IF NOT EXISTS state_store (
           key TEXT PRIMARY KEY,
           value TEXT NOT NULL,
           updated_at INTEGER NOT NULL
         );`,
      );
      const journal = await writer.get<{ journal_mode: string }>("PRAGMA journal_mode");
      if (journal?.journal_mode !== "wal") {
        throw new StoreOpenError(`state database ${path} cannot use WAL journaling (got ${journal?.journal_mode})`);
      }
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

  async close(): Promise<void> {
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
    const row = await this.openReader().get<Row>("SELECT key, value, updated_at FROM state_store WHERE key = ?", [key]);
    if (!row) return null;
    return decode(row.key, row.value);
  }

  set(key: string, value: JsonObject): Promise<void> {
    let text: string;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      return Promise.reject(new StoreWriteError(`value of ${key} is not serializable: ${errorMessage(err)}`));
    }
    return this.enqueue(key, text);
  }

  delete(key: string): Promise<void> {
    return this.enqueue(key, null);
  }

  async list(prefix: string): Promise<ListedEntry[]> {
    const reader = this.openReader();
    const rows =
      prefix === ""
        ? await reader.all<Row>("SELECT key, value, updated_at FROM state_store ORDER BY key")
        : await reader.all<Row>(
            "SELECT key, value, updated_at FROM state_store WHERE key >= ? AND key < ? ORDER BY key",
            [prefix, prefixUpperBound(prefix)],
          );
    return rows.map((row) => {
      try {
        return { key: row.key, value: decode(row.key, row.value), updatedAt: row.updated_at };
      } catch (err) {
        return { key: row.key, error: err as StateDecodeError };
      }
    });
  }

  private openReader(): SqliteConnection {
    if (!this.reader) throw new StoreClosedError("state store is not open");
    return this.reader;
  }

  private enqueue(key: string, text: string | null): Promise<void> {
    if (!this.writer || this.closing) {
      return Promise.reject(new StoreClosedError(`state store is closed; ${key} was not written`));
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ key, text, resolve, reject });
      if (!this.committing) this.committing = this.commitLoop();
    });
  }

  private async commitLoop(): Promise<void> {
    try {
      // Let writes that arrived in the same I/O turn (e.g. several MQTT commands read
      // from one socket buffer) join the first transaction instead of waiting for the next.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        try {
          await this.commitBatch(batch);
          this.commits += 1;
          this.committedWrites += batch.length;
          for (const write of batch) write.resolve();
        } catch (err) {
          const keys = [...new Set(batch.map((w) => w.key))];
          this.options.log?.error({ err, keys: keys.slice(0, 20), count: batch.length }, "state commit failed");
          const failure = new StoreWriteError(
            `could not commit ${batch.length} write(s) to ${this.options.path}: ${errorMessage(err)}`,
            { cause: err },
          );
          for (const write of batch) write.reject(failure);
        }
      }
    } finally {
      this.committing = null;
    }
  }

  private async commitBatch(batch: PendingWrite[]): Promise<void> {
    const writer = this.writer;
    if (!writer) throw new StoreClosedError("state store is closed");
    // Within one transaction only the last write of each key matters.
    const last = new Map<string, string | null>();
    for (const write of batch) last.set(write.key, write.text);
    const upserts: Array<[string, string]> = [];
    const deletes: string[] = [];
    for (const [key, text] of last) {
      if (text === null) deletes.push(key);
      else upserts.push([key, text]);
    }

    const now = this.now();
    if (deletes.length === 0 && upserts.length <= ROWS_PER_STATEMENT) {
      // One statement is its own atomic, durable transaction: one round trip to the
      // driver's thread pool instead of three (BEGIN, INSERT, COMMIT).
      await writer.run(upsertSql(upserts.length), upsertParams(upserts, now));
      return;
    }
    await writer.run("BEGIN IMMEDIATE");
    try {
      for (let i = 0; i < upserts.length; i += ROWS_PER_STATEMENT) {
        const chunk = upserts.slice(i, i + ROWS_PER_STATEMENT);
        await writer.run(upsertSql(chunk.length), upsertParams(chunk, now));
      }
      for (let i = 0; i < deletes.length; i += ROWS_PER_STATEMENT) {
        const chunk = deletes.slice(i, i + ROWS_PER_STATEMENT);
        await writer.run(`DELETE FROM state_store WHERE key IN (${chunk.map(() => "?").join(", ")})`, chunk);
      }
      await writer.run("COMMIT");
    } catch (err) {
      await writer.run("ROLLBACK").catch((rollbackErr: unknown) => {
        this.options.log?.warn({ err: rollbackErr }, "rollback after failed commit failed");
      });
      throw err;
    }
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
    for (const suffix of ["", "-wal", "-shm"]) {
      await rename(path + suffix, target + suffix).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      });
    }
    this.options.log?.error({ path, quarantinedTo: target }, "state database is damaged; moved aside");
    return new StoreCorruptError(
      `state database ${path} is damaged (${reason}); it was moved to ${target}. ` +
        "Restore a backup to that path or remove it to start with empty state.",
      target,
    );
  }
}

function upsertSql(rows: number): string {
  return (
    `INSERT INTO state_store (key, value, updated_at) VALUES ${Array(rows).fill("(?, ?, ?)").join(", ")} ` +
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
  );
}

function upsertParams(rows: ReadonlyArray<[string, string]>, now: number): SqlParam[] {
  const params: SqlParam[] = [];
  for (const [key, text] of rows) params.push(key, text, now);
  return params;
}

function decode(key: string, text: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StateDecodeError(key, errorMessage(err));
  }
  if (!isJsonObject(value)) throw new StateDecodeError(key, "not a JSON object");
  return value as JsonObject;
}

/** Smallest string greater than every string starting with `prefix` (BINARY collation). */
function prefixUpperBound(prefix: string): string {
  const chars = Array.from(prefix);
  const last = chars.pop()?.codePointAt(0) ?? 0;
  return chars.join("") + String.fromCodePoint(last + 1);
}
