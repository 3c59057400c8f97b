import { readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  BackupError,
  type BackupInfo,
  BackupManager,
  restoreBackupFile,
  restoreNewestBackup,
  UnusableBackupError,
} from "../../app/state/backups.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { StoreCorruptError } from "../../app/state/store.js";
import { damage } from "../helpers/db-files.js";
import { captureLogger, tempDir } from "../helpers/fixtures.js";
import { readRows, readStoredValue } from "../helpers/sqlite.js";

const GROUP = Array.from({ length: 10 }, (_, i) => `group:${i}`);
const SECRET = "s3cr3t-state-value";

async function writeDb(path: string, values: Record<string, Record<string, string | number | boolean>>): Promise<void> {
  const store = new SQLiteStateStore({ path });
  await store.initialize();
  for (const [key, value] of Object.entries(values)) await store.set(key, value);
  await store.close();
}

describe("backups against a live database", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let dbPath: string;
  let backupDir: string;

  beforeEach(async () => {
    dir = await tempDir();
    dbPath = join(dir.path, "data", "state_store.db");
    backupDir = join(dir.path, "data", "backups");
  });
  afterEach(async () => {
    await dir.remove();
  });

  it("takes consistent snapshots while another connection keeps committing", async () => {
    const store = new SQLiteStateStore({ path: dbPath, synchronous: "normal" });
    await store.initialize();
    // Enough data that VACUUM INTO takes a while, so commits land while it runs.
    const filler = "x".repeat(2000);
    await Promise.all(Array.from({ length: 4000 }, (_, i) => store.set(`filler:${i}`, { filler, i })));
    await Promise.all(GROUP.map((key) => store.set(key, { gen: 0 })));

    // Each round sets every group key in the same turn: one transaction (group commit),
    // so in any consistent snapshot all group keys hold the same generation.
    let committedGen = 0;
    let writing = true;
    const writer = (async () => {
      for (let gen = 1; writing; gen++) {
        await Promise.all(GROUP.map((key) => store.set(key, { gen, secret: SECRET })));
        committedGen = gen;
      }
    })();

    const { log, lines } = captureLogger("debug");
    const manager = new BackupManager({ dbPath, dir: backupDir, keep: 10, intervalS: 0, log });
    const snapshots: Array<{ info: BackupInfo; genBefore: number; genAfter: number }> = [];
    try {
      for (let i = 0; i < 3; i++) {
        const genBefore = committedGen;
        const info = await manager.create("manual");
        snapshots.push({ info, genBefore, genAfter: committedGen });
      }
    } finally {
      writing = false;
      await writer;
      await store.close();
    }

    // The writer kept committing while each backup ran: backups do not block it.
    for (const s of snapshots) expect(s.genAfter).toBeGreaterThan(s.genBefore);
    for (const { info, genBefore, genAfter } of snapshots) {
      expect(await readRows(info.path, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
      expect(await readRows(info.path, "SELECT count(*) AS n FROM state_store WHERE key LIKE 'filler:%'")).toEqual([{ n: 4000 }]);
      const rows = await readRows(info.path, "SELECT value FROM state_store WHERE key LIKE 'group:%'");
      const gens = new Set(rows.map((r) => (JSON.parse(String(r.value)) as { gen: number }).gen));
      expect(rows).toHaveLength(GROUP.length);
      expect(gens.size).toBe(1);
      const [gen] = [...gens] as [number];
      // Everything committed before the backup started is in it; nothing from the future.
      expect(gen).toBeGreaterThanOrEqual(genBefore);
      expect(gen).toBeLessThanOrEqual(genAfter + 1);
    }
    expect(lines.join("\n")).not.toContain(SECRET);
  });

  it("restores the newest good backup after the store quarantined a damaged file", async () => {
    const { log, lines } = captureLogger("debug");
    const store = new SQLiteStateStore({ path: dbPath, log });
    await store.initialize();
    await store.set("device:tv", { power: true, secret: SECRET });
    const manager = new BackupManager({ dbPath, dir: backupDir, keep: 5, intervalS: 0, log });
    const backup = await manager.create("scheduled");
    await store.close();

    await damage(dbPath, 0, 100);
    const damaged = new SQLiteStateStore({ path: dbPath, log });
    const err = await damaged.initialize().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreCorruptError);

    const restored = await restoreNewestBackup({ dbPath, dir: backupDir, log });
    expect(restored).toEqual(backup);
    const reopened = new SQLiteStateStore({ path: dbPath, log });
    await reopened.initialize();
    expect(await reopened.get("device:tv")).toEqual({ power: true, secret: SECRET });
    await reopened.close();

    const loud = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.backup === backup.path);
    expect(loud?.level).toBe(50);
    expect(String(loud?.msg)).toContain(backup.file);
    expect(lines.join("\n")).not.toContain(SECRET);
  });

  describe("restoreNewestBackup", () => {
    async function twoBackups(): Promise<{ older: BackupInfo; newer: BackupInfo }> {
      const { log } = captureLogger();
      await writeDb(dbPath, { "device:tv": { v: 1 } });
      const manager = new BackupManager({ dbPath, dir: backupDir, keep: 5, intervalS: 0, log });
      const older = await manager.create("manual");
      await writeDb(dbPath, { "device:tv": { v: 2 } });
      const newer = await manager.create("manual");
      await rename(dbPath, `${dbPath}.corrupt.test`);
      return { older, newer };
    }

    it.each([
      ["its header", 0, 100],
      ["the state_store table's page", 4096, 4096],
    ])("skips a backup with %s overwritten in favour of an older good one", async (_what, offset, length) => {
      const { older, newer } = await twoBackups();
      await damage(newer.path, offset, length);
      const { log, lines } = captureLogger();

      const restored = await restoreNewestBackup({ dbPath, dir: backupDir, log });
      expect(restored?.file).toBe(older.file);
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 1 });
      expect(await readRows(dbPath, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
      expect(lines.some((l) => l.includes(newer.path) && l.includes("not usable"))).toBe(true);
      // No staging file is left behind, and the backups themselves are untouched.
      expect((await readdir(join(dir.path, "data"))).filter((n) => n.includes(".restoring"))).toEqual([]);
      expect(await readdir(backupDir)).toEqual([older.file, newer.file]);
    });

    it("restores the newest backup when it is good", async () => {
      const { newer } = await twoBackups();
      const { log } = captureLogger();
      expect((await restoreNewestBackup({ dbPath, dir: backupDir, log }))?.file).toBe(newer.file);
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 2 });
    });

    it("refuses when the database file exists and leaves it untouched", async () => {
      await twoBackups();
      await writeFile(dbPath, "live data");
      const { log } = captureLogger();
      const err = await restoreNewestBackup({ dbPath, dir: backupDir, log }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect((err as Error).message).toContain(dbPath);
      expect(await readFile(dbPath, "utf8")).toBe("live data");
    });

    it("returns null when there is no backup or no good one", async () => {
      const { log } = captureLogger();
      expect(await restoreNewestBackup({ dbPath, dir: backupDir, log })).toBeNull();

      const { older, newer } = await twoBackups();
      await damage(older.path, 0, 100);
      await damage(newer.path, 0, 100);
      expect(await restoreNewestBackup({ dbPath, dir: backupDir, log })).toBeNull();
      await expect(stat(dbPath)).rejects.toMatchObject({ code: "ENOENT" });
    });

    it("moves the damaged file's stale -wal/-shm aside so they are not replayed into the restored file", async () => {
      const { newer } = await twoBackups();
      await writeFile(`${dbPath}-wal`, "stale wal of the damaged file");
      await writeFile(`${dbPath}-shm`, "stale shm");
      const { log } = captureLogger();

      expect((await restoreNewestBackup({ dbPath, dir: backupDir, log }))?.file).toBe(newer.file);
      const names = await readdir(join(dir.path, "data"));
      expect(names.filter((n) => n.startsWith("state_store.db.stale.") && n.endsWith("-wal"))).toHaveLength(1);
      expect(names.filter((n) => n.startsWith("state_store.db.stale.") && n.endsWith("-shm"))).toHaveLength(1);
      const store = new SQLiteStateStore({ path: dbPath });
      await store.initialize();
      expect(await store.get("device:tv")).toEqual({ v: 2 });
      await store.close();
    });
  });

  describe("restoreBackupFile", () => {
    let backup: BackupInfo;

    beforeEach(async () => {
      const { log } = captureLogger();
      await writeDb(dbPath, { "device:tv": { v: 1 } });
      backup = await new BackupManager({ dbPath, dir: backupDir, keep: 5, intervalS: 0, log }).create("cli");
      await writeDb(dbPath, { "device:tv": { v: 9 } });
    });

    it("refuses to overwrite an existing database without replace", async () => {
      const { log } = captureLogger();
      await expect(restoreBackupFile({ dbPath, backupPath: backup.path, log })).rejects.toThrow(/refusing to restore .* exists/);
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 9 });
    });

    it("with replace moves the existing database and its -wal aside, then installs the backup", async () => {
      await writeFile(`${dbPath}-wal`, "");
      const { log } = captureLogger();
      const now = () => new Date("2024-03-01T12:00:00.000Z");
      const result = await restoreBackupFile({ dbPath, backupPath: backup.path, log, replace: true, now });

      const aside = `${dbPath}.replaced.2024-03-01T12-00-00-000Z`;
      expect(result).toEqual({ restored: backup, replacedTo: aside });
      // Checked before anything opens the moved file (closing it would remove an empty WAL).
      expect((await stat(`${aside}-wal`)).isFile()).toBe(true);
      await expect(stat(`${dbPath}-wal`)).rejects.toMatchObject({ code: "ENOENT" });
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 1 });
      expect(await readStoredValue(aside, "device:tv")).toEqual({ v: 9 });
    });

    it("installs into an empty place without replace", async () => {
      await rename(dbPath, `${dbPath}.old`);
      const { log } = captureLogger();
      const result = await restoreBackupFile({ dbPath, backupPath: backup.path, log });
      expect(result.replacedTo).toBeNull();
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 1 });
    });

    it("rejects an unusable backup and keeps the existing database in place even with replace", async () => {
      await damage(backup.path, 0, 100);
      const { log } = captureLogger();
      const err = await restoreBackupFile({ dbPath, backupPath: backup.path, log, replace: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnusableBackupError);
      expect((err as Error).message).toContain(backup.path);
      expect(await readStoredValue(dbPath, "device:tv")).toEqual({ v: 9 });
      expect((await readdir(join(dir.path, "data"))).filter((n) => n.includes(".replaced."))).toEqual([]);
    });
  });
});
