import { type FileHandle, link, open, rename, stat, unlink } from "node:fs/promises";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import { SqliteConnection } from "./sqlite-connection.js";
import { StateStoreError } from "./store.js";

/** A backup could not be made, verified, listed or restored; the message names the paths. */
export class BackupError extends StateStoreError {}

/** Files SQLite keeps beside a database; they belong to that database and to no other. */
export const SIDE_SUFFIXES = ["-wal", "-shm", "-journal"] as const;

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

/** Deletes a file; a missing file is not an error. */
export async function removeIfPresent(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

/** Renames `from` to `to` when `from` exists; returns whether it did. */
export async function moveIfPresent(from: string, to: string): Promise<boolean> {
  try {
    await rename(from, to);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Makes a rename in `dir` durable. Some platforms cannot open or sync a directory
 * (Windows, a few network file systems); there the rename is still atomic, only its
 * durability across power loss is up to the file system, so that is logged, not fatal.
 */
export async function fsyncDir(dir: string, log: Logger): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch (err) {
    log.debug({ dir, err: errorMessage(err) }, "directory fsync not supported here");
  } finally {
    await handle?.close();
  }
}

const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

/**
 * Gives `from` the name `to` without ever replacing an existing `to` (a plain rename
 * would silently overwrite it). A hard link fails with EEXIST instead, atomically; where
 * the file system has no hard links, existence is checked just before the rename.
 * Throws an error with code EEXIST when `to` exists.
 */
export async function renameNoReplace(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    if (!NO_HARD_LINKS.has(errnoCode(err) ?? "")) throw err;
    if (await exists(to)) {
      throw Object.assign(new Error(`EEXIST: file already exists, rename '${from}' -> '${to}'`), { code: "EEXIST" });
    }
    await rename(from, to);
    return;
  }
  await unlink(from);
}

export function isAlreadyExists(err: unknown): boolean {
  return errnoCode(err) === "EEXIST";
}

/** `20240131T235959123Z`: UTC, fixed width, so names sort in time order. */
export function compactStamp(date: Date): string {
  return date.toISOString().replace(/[-:.]/g, "");
}

/** Inverse of compactStamp; null when `stamp` is not one. */
export function parseCompactStamp(stamp: string): Date | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z$/.exec(stamp);
  if (!m) return null;
  const date = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A stamp for names of files moved aside (matches SQLiteStateStore's quarantine names). */
export function asideStamp(date: Date): string {
  return date.toISOString().replace(/[:.]/g, "-");
}

/**
 * Checks that `path` is a usable state database: `PRAGMA integrity_check` answers exactly
 * "ok" and the `state_store` table exists. Throws BackupError naming the file and the
 * first problems. The file is opened read-write (SqliteConnection has no read-only mode)
 * but nothing is written; a copy in WAL mode is switched to a rollback journal first so
 * it stays one self-contained file.
 */
export async function verifyDatabaseFile(path: string, busyTimeoutMs: number): Promise<void> {
  let conn: SqliteConnection;
  try {
    conn = await SqliteConnection.open(path, "readwrite");
  } catch (err) {
    throw new BackupError(`cannot open ${path} to verify it: ${errorMessage(err)}`, { cause: err });
  }
  let failure: BackupError | null = null;
  try {
    conn.setBusyTimeout(busyTimeoutMs);
    const journal = await conn.get<{ journal_mode: string }>("PRAGMA journal_mode");
    if (journal?.journal_mode === "wal") await conn.run("PRAGMA journal_mode = DELETE");
    const rows = await conn.all<{ integrity_check: string }>("PRAGMA integrity_check");
    const answers = rows.map((r) => r.integrity_check);
    if (answers.length !== 1 || answers[0] !== "ok") {
      failure = new BackupError(`${path} failed the integrity check: ${answers.slice(0, 3).join("; ") || "no answer"}`);
    } else {
      const table = await conn.get<{ name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'state_store'");
      if (!table) failure = new BackupError(`${path} has no state_store table`);
    }
  } catch (err) {
    failure = new BackupError(`${path} failed verification: ${errorMessage(err)}`, { cause: err });
  }
  try {
    await conn.close();
  } catch (err) {
    failure ??= new BackupError(`cannot close ${path} after verifying it: ${errorMessage(err)}`, { cause: err });
  }
  if (failure) throw failure;
}
