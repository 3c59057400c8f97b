import { mkdir, readFile, rename, truncate, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { SqliteConnection, sqliteErrorCode } from "./sqlite-connection.js";
import { StoreOpenError } from "./store.js";

export interface DbLock {
  readonly path: string;
  release(): Promise<void>;
}

/** Where a bridge of an active/standby pair stands. */
export interface LeaseStatus {
  role: "active" | "standby";
  /** The fencing token this bridge's commits carry while active; null while standby. */
  epoch: number | null;
  /** Who is active, while this bridge waits (never carries a password). */
  activeHolder: string | null;
  /** When the role last changed. */
  since: string;
}

/**
 * The hold of a pair: taken at once when free, else waited for while this bridge stands
 * by. Releasing it (or the process dying) hands it to the standby.
 */
export interface Lease extends DbLock {
  readonly status: LeaseStatus;
  /** Resolves with the epoch once this bridge holds the lease. */
  whenActive(): Promise<number>;
}

/** Who holds a lock, as the holder recorded it in `<db>.lock.json`. */
export interface LockHolder {
  pid: number;
  owner: string;
  since: string;
}

interface HolderRecord extends LockHolder {
  /** `/proc/<pid>/stat` start time and boot id: a reused pid or a record from before a reboot does not match. */
  start_ticks: string | null;
  boot_id: string | null;
}

export interface LockOptions {
  /** How long a refused start waits for the holder to record who it is. */
  holderWaitMs?: number;
}

/**
 * The database lock: an exclusive SQLite transaction on `<db>.lock`, held for as long as
 * the bridge (or a CLI command that writes) runs. SQLite takes it with fcntl locks, which
 * the kernel drops the moment the holder dies (kill -9, a crash, power loss), so a stale
 * lock never blocks a start and two starts cannot both win.
 *
 * The file's content means nothing; who holds it is in `<db>.lock.json`, written after the
 * lock is taken, only to name the holder in the refusal. Two rules keep the lock sound:
 * the lock file is never unlinked (a process that opened the old inode would lock a file
 * nobody else can find), and the holding process never opens it with `fs` (closing any
 * descriptor of a file drops all of the process's fcntl locks on it).
 */
export async function acquireDbLock(dbPath: string, owner: string, options: LockOptions = {}): Promise<DbLock> {
  const path = `${dbPath}.lock`;
  try {
    await mkdir(dirname(dbPath), { recursive: true });
  } catch (err) {
    throw new StoreOpenError(`cannot create directory for state database ${dbPath}: ${(err as Error).message}`, { cause: err });
  }
  const conn = await takeOrName(path, options.holderWaitMs ?? 1000);
  if (!(conn instanceof SqliteConnection)) {
    const who = conn ? `${conn.owner} (pid ${conn.pid})` : "another process (it has not recorded its pid yet)";
    throw new StoreOpenError(`state database ${dbPath} is in use by ${who}; stop it first`);
  }
  const holderFile = `${path}.json`;
  const record: HolderRecord = { pid: process.pid, owner, since: new Date().toISOString(), ...(await processIdentity(process.pid)) };
  try {
    await writeFile(`${holderFile}.tmp`, JSON.stringify(record));
    await rename(`${holderFile}.tmp`, holderFile);
  } catch (err) {
    await conn.close().catch(() => undefined);
    throw new StoreOpenError(`cannot record the holder of ${path}: ${(err as Error).message}`, { cause: err });
  }
  let released = false;
  return {
    path,
    release: async () => {
      if (released) return;
      released = true;
      // Removed while still held, so it can never delete the record of the next holder.
      await unlink(holderFile).catch(() => undefined);
      await conn.run("ROLLBACK").catch(() => undefined);
      await conn.close();
    },
  };
}

/** Who holds the lock right now, or null when nobody does (checked by trying to take it). */
export async function lockHolder(dbPath: string, options: LockOptions = {}): Promise<LockHolder | null> {
  const path = `${dbPath}.lock`;
  const conn = await lockExclusively(path, false);
  if (conn) {
    await conn.run("ROLLBACK").catch(() => undefined);
    await conn.close();
    return null;
  }
  return (await waitForHolder(path, options.holderWaitMs ?? 1000)) ?? { pid: 0, owner: "unknown", since: "" };
}

/**
 * The held connection, or null when another connection (in any process) holds the lock.
 * A lock file from older versions held JSON, which SQLite rejects as not a database: it is
 * emptied in place and the lock taken again.
 */
async function lockExclusively(path: string, create = true): Promise<SqliteConnection | null> {
  for (let attempt = 0; ; attempt++) {
    let conn: SqliteConnection;
    try {
      conn = await SqliteConnection.open(path, create ? "readwrite-create" : "readwrite");
    } catch (err) {
      if (!create && sqliteErrorCode(err) === "SQLITE_CANTOPEN") return null;
      throw new StoreOpenError(`cannot open lock file ${path}: ${(err as Error).message}`, { cause: err });
    }
    conn.setBusyTimeout(0);
    try {
      await conn.run("BEGIN EXCLUSIVE");
      return conn;
    } catch (err) {
      await conn.close().catch(() => undefined);
      const code = sqliteErrorCode(err);
      if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") return null;
      if (code === "SQLITE_NOTADB" && attempt === 0) {
        await truncate(path, 0);
        continue;
      }
      throw new StoreOpenError(`cannot take the lock ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * The lock, or the live process that holds it, or null when neither showed within `waitMs`.
 * A refusal with no live holder is tried again, because it has two passing causes: a holder
 * that is still dying (its main thread is already a zombie while other threads still hold
 * its files, and so its locks), and two takers that each hold SQLite's shared lock on the
 * way to the exclusive one, so that both are told "busy".
 */
async function takeOrName(path: string, waitMs: number): Promise<SqliteConnection | LockHolder | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const conn = await lockExclusively(path);
    if (conn) return conn;
    const holder = await liveHolder(path);
    if (holder) return holder;
    if (Date.now() >= deadline) return null;
    // Jittered, so that two colliding takers do not collide again in step.
    await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
  }
}

/** The holder's record once it matches a live process; polls because a fresh holder writes it just after locking. */
async function waitForHolder(path: string, waitMs: number): Promise<LockHolder | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const holder = await liveHolder(path);
    if (holder || Date.now() >= deadline) return holder;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function liveHolder(path: string): Promise<LockHolder | null> {
  const record = await readHolder(`${path}.json`);
  return record && (await isSameProcess(record)) ? { pid: record.pid, owner: record.owner, since: record.since } : null;
}

async function readHolder(file: string): Promise<HolderRecord | null> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as Partial<HolderRecord>;
    if (typeof parsed.pid !== "number" || typeof parsed.owner !== "string") return null;
    return {
      pid: parsed.pid,
      owner: parsed.owner,
      since: typeof parsed.since === "string" ? parsed.since : "",
      start_ticks: typeof parsed.start_ticks === "string" ? parsed.start_ticks : null,
      boot_id: typeof parsed.boot_id === "string" ? parsed.boot_id : null,
    };
  } catch {
    return null;
  }
}

/** A recorded pid names the holder only if that very process still runs: same boot, same start time. */
async function isSameProcess(record: HolderRecord): Promise<boolean> {
  const now = await processIdentity(record.pid);
  if (process.platform !== "linux") return isAlive(record.pid);
  if (now.start_ticks === null) return false;
  return now.start_ticks === record.start_ticks && now.boot_id === record.boot_id;
}

async function processIdentity(pid: number): Promise<Pick<HolderRecord, "start_ticks" | "boot_id">> {
  const [stat, boot] = await Promise.all([
    readFile(`/proc/${pid}/stat`, "utf8").catch(() => null),
    readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => null),
  ]);
  // Field 22 is the start time; the command name (field 2) may hold spaces, so count from its closing paren.
  const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
  // A zombie (dead, not yet reaped) still has its entry, but the kernel has already dropped its locks.
  if (!fields || fields[0] === "Z") return { start_ticks: null, boot_id: boot?.trim() ?? null };
  return { start_ticks: fields[19] ?? null, boot_id: boot?.trim() ?? null };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
