import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { copyFile, lstat, mkdir, readdir, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import {
  asideStamp,
  BackupError,
  compactStamp,
  exists,
  fsyncDir,
  fsyncFile,
  isAlreadyExists,
  moveIfPresent,
  parseCompactStamp,
  removeIfPresent,
  renameNoReplace,
  SIDE_SUFFIXES,
  verifyDatabaseFile,
} from "./backup-files.js";
import { SqliteConnection } from "./sqlite-connection.js";

export { BackupError } from "./backup-files.js";

/** A backup that fails verification; restoreNewestBackup moves on to an older one. */
export class UnusableBackupError extends BackupError {}

export type BackupReason = "scheduled" | "manual" | "cli" | "pre-restore";

export interface BackupInfo {
  /** File name inside the backup directory. */
  file: string;
  /** Absolute path. */
  path: string;
  /** When the snapshot was taken (from the file name), ISO 8601 UTC. */
  created_at: string;
  size_bytes: number;
}

export interface BackupResult {
  at: string;
  ok: boolean;
  reason: BackupReason;
  file?: string;
  error?: string;
  duration_ms: number;
}

/**
 * Arms a one-shot timer and returns its cancel function. The default uses an unref'd
 * setTimeout; tests pass their own and fire the callback themselves.
 */
export type ScheduleTimer = (fn: () => void, ms: number) => () => void;

export const realScheduleTimer: ScheduleTimer = (fn, ms) => {
  const handle = setTimeout(fn, ms);
  handle.unref();
  return () => clearTimeout(handle);
};

export interface BackupManagerOptions {
  dbPath: string;
  dir: string;
  /** How many verified backups are kept; older ones are deleted after a new one is verified. */
  keep: number;
  /** Seconds between scheduled backups; 0 disables them. */
  intervalS: number;
  log: Logger;
  now?: () => Date;
  busyTimeoutMs?: number;
  schedule?: ScheduleTimer;
  /** Called after every backup attempt (any reason); errors it throws are logged, never propagated. */
  onResult?: (result: BackupResult) => void;
  /**
   * A count that grows with every committed change. A scheduled backup is skipped when it
   * has not moved since the last good backup: on an idle house, copying the unchanged
   * database every interval would only wear the controller's flash.
   */
  changeCount?: () => number;
}

const BACKUP_NAME = /^state_store-(\d{8}T\d{9}Z)\.db$/;
const TEMP_NAME = /^\.state_store-.*\.tmp(?:-wal|-shm|-journal)?$/;
/** A temp file untouched this long is left over from a crash and is deleted during rotation. */
const STALE_TEMP_MS = 60 * 60 * 1000;
const NAME_ATTEMPTS = 100;

function backupFileName(at: Date): string {
  return `state_store-${compactStamp(at)}.db`;
}

/**
 * Online backups of the state database (DESIGN §3). Each backup is a `VACUUM INTO` copy
 * taken on its own connection, so it is one consistent snapshot while the store keeps
 * committing; the copy is verified (integrity check, state_store table) before it gets
 * its final name `state_store-<UTC stamp>.db`, and only then are old backups rotated out.
 * Backups run one at a time.
 */
export class BackupManager {
  private readonly dir: string;
  private readonly now: () => Date;
  private readonly busyTimeoutMs: number;
  private readonly schedule: ScheduleTimer;
  private tail: Promise<unknown> = Promise.resolve();
  private cancelTimer: (() => void) | null = null;
  private started = false;
  private result: BackupResult | null = null;
  /** `changeCount()` as it was when the last good backup began. */
  private backedUpAt: number | null = null;

  constructor(private readonly options: BackupManagerOptions) {
    this.dir = resolve(options.dir);
    this.now = options.now ?? (() => new Date());
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.schedule = options.schedule ?? realScheduleTimer;
  }

  /** The outcome of the latest backup attempt (for /health); null before the first. */
  get lastResult(): BackupResult | null {
    return this.result;
  }

  /** Makes one verified backup; waits for a backup already running, then makes its own. */
  create(reason: BackupReason): Promise<BackupInfo> {
    const run = this.tail.then(() => this.createNow(reason));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Backups in the directory, newest first. Temp files and anything else are ignored. */
  async list(): Promise<BackupInfo[]> {
    return listBackups(this.dir);
  }

  /** Schedules a backup every `intervalS` seconds (0 disables). Idempotent. */
  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.options.intervalS <= 0) {
      this.options.log.info("scheduled backups are disabled (interval 0)");
      return;
    }
    this.options.log.info({ dir: this.dir, interval_s: this.options.intervalS, keep: this.options.keep }, "scheduled backups started");
    this.arm();
  }

  /** Clears the timer and waits for a running backup. Idempotent. */
  async stop(): Promise<void> {
    this.started = false;
    this.cancelTimer?.();
    this.cancelTimer = null;
    await this.tail;
  }

  private arm(): void {
    this.cancelTimer = this.schedule(() => {
      this.cancelTimer = null;
      void this.tick();
    }, this.options.intervalS * 1000);
  }

  /** One scheduled backup; never rejects. The next is armed once this one is done. */
  private async tick(): Promise<void> {
    if (!this.started) return;
    const changes = this.options.changeCount?.();
    if (changes !== undefined && changes === this.backedUpAt) {
      this.options.log.debug({ dir: this.dir }, "scheduled backup skipped: nothing changed since the last one");
      if (this.started && !this.cancelTimer) this.arm();
      return;
    }
    try {
      await this.create("scheduled");
    } catch (err) {
      // Already logged and recorded in lastResult by createNow.
      this.options.log.debug({ err: errorMessage(err) }, "scheduled backup failed; next one stays scheduled");
    } finally {
      if (this.started && !this.cancelTimer) this.arm();
    }
  }

  private async createNow(reason: BackupReason): Promise<BackupInfo> {
    const startedAt = Date.now();
    const at = this.now().toISOString();
    // Read before the copy: a change committed while it runs may be missing from it.
    const changes = this.options.changeCount?.() ?? null;
    try {
      const info = await this.snapshot();
      this.backedUpAt = changes;
      this.options.log.info(
        { reason, file: info.file, size_bytes: info.size_bytes, duration_ms: Date.now() - startedAt },
        "backup created",
      );
      await this.rotate().catch((err: unknown) => {
        this.options.log.warn({ dir: this.dir, err: errorMessage(err) }, "backup rotation failed; old backups kept");
      });
      this.record({ at, ok: true, reason, file: info.file, duration_ms: Date.now() - startedAt });
      return info;
    } catch (err) {
      const error = errorMessage(err);
      this.record({ at, ok: false, reason, error, duration_ms: Date.now() - startedAt });
      this.options.log.error({ reason, dbPath: this.options.dbPath, dir: this.dir, error }, "backup failed");
      if (err instanceof BackupError) throw err;
      throw new BackupError(`backup of ${this.options.dbPath} failed: ${error}`, { cause: err });
    }
  }

  private record(result: BackupResult): void {
    this.result = result;
    try {
      this.options.onResult?.(result);
    } catch (err) {
      this.options.log.warn({ err: errorMessage(err) }, "backup result listener failed");
    }
  }

  private async snapshot(): Promise<BackupInfo> {
    const { dbPath } = this.options;
    try {
      await mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw new BackupError(`cannot create backup directory ${this.dir}: ${errorMessage(err)}`, { cause: err });
    }
    const stamp = this.now();
    const unique = `${process.pid}.${randomBytes(4).toString("hex")}`;
    const temp = join(this.dir, `.state_store-${compactStamp(stamp)}.${unique}.tmp`);
    try {
      await this.vacuumInto(temp);
      await verifyDatabaseFile(temp, this.busyTimeoutMs);
      await fsyncFile(temp);
      const file = await this.publish(temp, stamp);
      await fsyncDir(this.dir, this.options.log);
      return await describeBackup(join(this.dir, file));
    } catch (err) {
      await this.discard(temp);
      if (err instanceof BackupError) {
        throw new BackupError(`backup of ${dbPath} failed: ${err.message}`, { cause: err });
      }
      throw new BackupError(`backup of ${dbPath} into ${this.dir} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async vacuumInto(temp: string): Promise<void> {
    const { dbPath } = this.options;
    let conn: SqliteConnection;
    try {
      conn = await SqliteConnection.open(dbPath, "readwrite");
    } catch (err) {
      throw new BackupError(`cannot open ${dbPath}: ${errorMessage(err)}`, { cause: err });
    }
    try {
      conn.setBusyTimeout(this.busyTimeoutMs);
      // A bound parameter: the path needs no quoting at all, whatever characters it holds.
      await conn.run("VACUUM INTO ?", [temp]);
    } catch (err) {
      throw new BackupError(`VACUUM INTO ${temp} failed: ${errorMessage(err)}`, { cause: err });
    } finally {
      await conn.close().catch((err: unknown) => {
        this.options.log.warn({ dbPath, err: errorMessage(err) }, "closing the backup connection failed");
      });
    }
  }

  /**
   * Gives the verified temp file its final name. Names only grow: when the clock is not
   * past the newest backup (two backups in one millisecond, or the clock was set back),
   * the name takes the newest one's time + 1 ms, so rotation never deletes the newest.
   */
  private async publish(temp: string, stamp: Date): Promise<string> {
    const newest = (await listBackups(this.dir))[0];
    let at = stamp;
    if (newest && Date.parse(newest.created_at) >= at.getTime()) {
      at = new Date(Date.parse(newest.created_at) + 1);
      if (Date.parse(newest.created_at) - stamp.getTime() > 1000) {
        this.options.log.warn(
          { newest: newest.file, now: stamp.toISOString() },
          "clock is behind the newest backup; naming the new backup after it",
        );
      }
    }
    for (let attempt = 0; attempt < NAME_ATTEMPTS; attempt++) {
      const file = backupFileName(at);
      try {
        await renameNoReplace(temp, join(this.dir, file));
        return file;
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
        at = new Date(at.getTime() + 1);
      }
    }
    throw new BackupError(`no free backup name in ${this.dir} after ${NAME_ATTEMPTS} attempts`);
  }

  private async discard(temp: string): Promise<void> {
    for (const path of [temp, ...SIDE_SUFFIXES.map((s) => temp + s)]) {
      await removeIfPresent(path).catch((err: unknown) => {
        this.options.log.warn({ path, err: errorMessage(err) }, "cannot delete a failed backup's temp file");
      });
    }
  }

  /** Keeps the newest `keep` backups; also clears temp files left by a crash. */
  private async rotate(): Promise<void> {
    const backups = await listBackups(this.dir);
    for (const old of backups.slice(Math.max(1, this.options.keep))) {
      try {
        await removeIfPresent(old.path);
        this.options.log.info({ file: old.file }, "old backup deleted");
      } catch (err) {
        this.options.log.warn({ path: old.path, err: errorMessage(err) }, "cannot delete old backup");
      }
    }
    const names = await readdir(this.dir);
    const cutoff = Date.now() - STALE_TEMP_MS;
    for (const name of names.filter((n) => TEMP_NAME.test(n))) {
      const path = join(this.dir, name);
      try {
        const info = await stat(path);
        if (info.mtimeMs < cutoff) {
          await removeIfPresent(path);
          this.options.log.warn({ path }, "stale backup temp file deleted");
        }
      } catch (err) {
        this.options.log.warn({ path, err: errorMessage(err) }, "cannot clean up a stale backup temp file");
      }
    }
  }
}

/** Backups in `dir`, newest first; an absent directory has none. */
export async function listBackups(dir: string): Promise<BackupInfo[]> {
  const absolute = resolve(dir);
  let names: string[];
  try {
    names = await readdir(absolute);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new BackupError(`cannot list backups in ${absolute}: ${errorMessage(err)}`, { cause: err });
  }
  const infos: BackupInfo[] = [];
  for (const name of names
    .filter((n) => BACKUP_NAME.test(n))
    .sort()
    .reverse()) {
    const path = join(absolute, name);
    let info: Stats;
    try {
      info = await stat(path);
    } catch (err) {
      // Deleted between readdir and stat (rotation by another process): not a backup any more.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new BackupError(`cannot read backup ${path}: ${errorMessage(err)}`, { cause: err });
    }
    if (info.isFile()) infos.push(backupInfo(path, info));
  }
  return infos;
}

async function describeBackup(path: string): Promise<BackupInfo> {
  const info = await stat(path);
  if (!info.isFile()) throw new BackupError(`${path} is not a regular file`);
  return backupInfo(path, info);
}

function backupInfo(path: string, info: Stats): BackupInfo {
  const file = basename(path);
  const stamp = BACKUP_NAME.exec(file)?.[1];
  const created = (stamp && parseCompactStamp(stamp)) || info.mtime;
  return { file, path, created_at: created.toISOString(), size_bytes: info.size };
}

export interface RestoreNewestOptions {
  dbPath: string;
  dir: string;
  log: Logger;
  now?: () => Date;
  busyTimeoutMs?: number;
}

/**
 * For start-up after the live database was found damaged and moved aside: installs the
 * newest backup that verifies. Returns null when none does. Refuses when `dbPath` exists.
 */
export async function restoreNewestBackup(options: RestoreNewestOptions): Promise<BackupInfo | null> {
  const { dbPath, dir, log } = options;
  await refuseExisting(dbPath, "restore a backup");
  const backups = await listBackups(dir);
  for (const backup of backups) {
    try {
      await installCopy(backup.path, dbPath, options);
    } catch (err) {
      if (!(err instanceof UnusableBackupError)) throw err;
      log.warn({ backup: backup.path, error: err.message }, "backup is not usable; trying an older one");
      continue;
    }
    log.error(
      { dbPath, backup: backup.path, created_at: backup.created_at },
      `state database ${dbPath} was restored from backup ${backup.file}; ` + `changes made after ${backup.created_at} are lost`,
    );
    return backup;
  }
  log.error({ dbPath, dir: resolve(dir), candidates: backups.length }, "no usable backup to restore");
  return null;
}

export interface RestoreFileOptions {
  dbPath: string;
  backupPath: string;
  log: Logger;
  /** Move an existing database (and its -wal/-shm) aside to `<dbPath>.replaced.<time>` first. */
  replace?: boolean;
  now?: () => Date;
  busyTimeoutMs?: number;
}

export interface RestoreFileResult {
  restored: BackupInfo;
  /** Where the database that was replaced now is; null when there was none. */
  replacedTo: string | null;
}

/**
 * Installs one named backup as the database, for the offline CLI (the bridge must not be
 * running). Refuses when `dbPath` exists unless `replace` is set; the replaced file is
 * moved aside, never deleted, and only after the backup's copy has verified.
 */
export async function restoreBackupFile(options: RestoreFileOptions): Promise<RestoreFileResult> {
  const { dbPath, backupPath, log } = options;
  if (!options.replace) await refuseExisting(dbPath, `restore ${backupPath}`);
  let restored: BackupInfo;
  try {
    restored = await describeBackup(resolve(backupPath));
  } catch (err) {
    throw new BackupError(`cannot restore ${backupPath}: ${errorMessage(err)}`, { cause: err });
  }
  let replacedTo: string | null = null;
  await installCopy(restored.path, dbPath, options, async () => {
    if (!options.replace || !(await exists(dbPath))) return;
    const target = `${dbPath}.replaced.${asideStamp((options.now ?? (() => new Date()))())}`;
    for (const suffix of ["", ...SIDE_SUFFIXES]) {
      if (await moveIfPresent(dbPath + suffix, target + suffix)) {
        log.warn({ from: dbPath + suffix, to: target + suffix }, "existing database file moved aside");
      }
    }
    replacedTo = target;
  });
  log.error(
    { dbPath, backup: restored.path, created_at: restored.created_at, replacedTo },
    `state database ${dbPath} was restored from backup ${restored.file}`,
  );
  return { restored, replacedTo };
}

async function refuseExisting(dbPath: string, what: string): Promise<void> {
  const present = await lstat(dbPath).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return false;
      throw new BackupError(`cannot check ${dbPath}: ${err.message}`, { cause: err });
    },
  );
  if (present) {
    throw new BackupError(`refusing to ${what}: ${dbPath} exists and would be overwritten`);
  }
}

/**
 * Copies `source` to `<dbPath>.restoring`, syncs and verifies that copy (so what is
 * verified is exactly what goes live), moves stale -wal/-shm/-journal files of the old
 * database aside (SQLite would replay a stale WAL or journal into the restored file),
 * then gives the copy the name `dbPath` without ever overwriting an existing file.
 */
async function installCopy(
  source: string,
  dbPath: string,
  options: { log: Logger; now?: () => Date; busyTimeoutMs?: number },
  beforeInstall?: () => Promise<void>,
): Promise<void> {
  const { log } = options;
  const staging = `${dbPath}.restoring`;
  const clearStaging = async () => {
    for (const path of [staging, ...SIDE_SUFFIXES.map((s) => staging + s)]) await removeIfPresent(path);
  };
  try {
    await mkdir(dirname(dbPath), { recursive: true });
    await clearStaging();
    await copyFile(source, staging);
    await fsyncFile(staging);
  } catch (err) {
    await clearStaging().catch((e: unknown) => log.warn({ path: staging, err: errorMessage(e) }, "cleanup failed"));
    throw new BackupError(`cannot copy ${source} to ${staging}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    await verifyDatabaseFile(staging, options.busyTimeoutMs ?? 5000);
  } catch (err) {
    await clearStaging().catch((e: unknown) => log.warn({ path: staging, err: errorMessage(e) }, "cleanup failed"));
    throw new UnusableBackupError(`backup ${source} is not usable: ${errorMessage(err)}`, { cause: err });
  }
  // Verification closed its connection; a copy that was in WAL mode may leave side files.
  for (const suffix of SIDE_SUFFIXES) await removeIfPresent(staging + suffix);
  try {
    await beforeInstall?.();
    const stamp = asideStamp((options.now ?? (() => new Date()))());
    for (const suffix of SIDE_SUFFIXES) {
      const stale = dbPath + suffix;
      const target = `${dbPath}.stale.${stamp}${suffix}`;
      if (await moveIfPresent(stale, target)) {
        log.warn({ from: stale, to: target }, "stale file of the damaged database moved aside");
      }
    }
    await renameNoReplace(staging, dbPath);
    await fsyncDir(dirname(dbPath), log);
  } catch (err) {
    await clearStaging().catch((e: unknown) => log.warn({ path: staging, err: errorMessage(e) }, "cleanup failed"));
    if (isAlreadyExists(err)) {
      throw new BackupError(`refusing to restore ${source}: ${dbPath} appeared meanwhile and was not overwritten`);
    }
    throw new BackupError(`cannot install ${staging} as ${dbPath}: ${errorMessage(err)}`, { cause: err });
  }
}
