import sqlite3 from "sqlite3";
import type { WriteFailure } from "./store.js";

export type SqlParam = string | number | null;

/** sqlite3 error codes arrive as `code` on the Error object. */
export function sqliteErrorCode(err: unknown): string | undefined {
  if (err && typeof err === "object" && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}

/** How a failed SQLite write is reported upwards (sqlite3 exposes only the primary result code). */
export function writeFailureOf(err: unknown): WriteFailure {
  switch (sqliteErrorCode(err)) {
    case "SQLITE_FULL":
      return "full";
    case "SQLITE_READONLY":
      return "read_only";
    case "SQLITE_IOERR":
      // Also what a file system turned read-only under an open database gives (EROFS on write).
      return "io";
    default:
      return "other";
  }
}

/**
 * The one place where sqlite3's callback API is turned into promises. One instance is
 * one connection; callers await each statement, so statements on it never interleave.
 */
export class SqliteConnection {
  private constructor(private readonly db: sqlite3.Database) {}

  static open(path: string, mode: "readwrite-create" | "readwrite" | "readonly"): Promise<SqliteConnection> {
    const flags =
      mode === "readonly"
        ? sqlite3.OPEN_READONLY
        : mode === "readwrite-create"
          ? sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE
          : sqlite3.OPEN_READWRITE;
    return new Promise((resolve, reject) => {
      const db = new sqlite3.Database(path, flags, (err) => {
        if (err) reject(err);
        else resolve(new SqliteConnection(db));
      });
    });
  }

  setBusyTimeout(ms: number): void {
    this.db.configure("busyTimeout", ms);
  }

  run(sql: string, params: readonly SqlParam[] = []): Promise<{ changes: number }> {
    return new Promise((resolve, reject) => {
      this.db.run(sql, params, function (err) {
        if (err) reject(err);
        else resolve({ changes: this.changes });
      });
    });
  }

  get<T>(sql: string, params: readonly SqlParam[] = []): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      this.db.get<T>(sql, params, (err, row) => {
        if (err) reject(err);
        else resolve(row);
      });
    });
  }

  all<T>(sql: string, params: readonly SqlParam[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => {
      this.db.all<T>(sql, params, (err, rows) => {
        if (err) reject(err);
        else resolve(rows);
      });
    });
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.db.exec(sql, (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.db.close((err) => {
        if (err) reject(err);
        else resolve();
      });
    });
  }
}
