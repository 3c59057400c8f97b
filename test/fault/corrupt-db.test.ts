import { copyFile, cp, mkdir, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { StoreCorruptError } from "../../app/state/store.js";
import { failedStart, type RunningApp, startApp } from "../helpers/app.js";
import { runToExit } from "../helpers/bridge-process.js";
import { overwrite, sha256 } from "../helpers/db-files.js";
import { simulatedDevice, tempDir, testConfig, writeConfigDir } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { mulberry32 } from "../helpers/seeded.js";
import { readRows } from "../helpers/sqlite.js";

/**
 * Damaged, truncated, empty and WAL-only databases at start. Whatever the damage, the
 * bridge never silently starts with empty state: the file is moved aside and the newest
 * good backup restored, or, without a backup, the start is refused with the file kept
 * aside, and it stays refused on the next start (a supervisor restarting it must not
 * turn the refusal into an empty start).
 */

const ITEMS = 300;
const PAD = "x".repeat(300);
/** In the backup: what a restore must bring back. */
const BACKED_UP = { tvVolume: 33, gen: 1 };
/** Written after the backup: lost with the damaged file. */
const AFTER_BACKUP = { tvVolume: 77, gen: 2 };
const TEST_TIMEOUT_MS = 15_000;
/** A bridge that starts instead of refusing is killed after this (a start takes 1-5 s, by machine load). */
const PROCESS_TIMEOUT_MS = 12_000;

function randomBytes(random: () => number, length: number): Buffer {
  return Buffer.from(Array.from({ length }, () => Math.floor(random() * 256)));
}

function pick<T>(random: () => number, items: readonly T[]): T {
  if (items.length === 0) throw new Error("nothing to pick from");
  return items[Math.floor(random() * items.length)] as T;
}

interface Page {
  name: string;
  pageno: number;
  pagetype: string;
}

/** The database as it was before the damage: its pages, a backup beside it, and WAL files to orphan. */
interface Golden {
  dbPath: string;
  backupsDir: string;
  backupFile: string;
  pageSize: number;
  pages: Page[];
  /** This database's WAL, copied while the bridge ran (its last writes not yet checkpointed). */
  ownWal: Buffer;
  /** A WAL of an unrelated database. */
  foreignWal: Buffer;
}

interface Damage {
  what: string;
  apply: (path: string, golden: Golden) => Promise<void>;
}

/** Byte offset of page `pageno` (1-based). */
const offsetOf = (golden: Golden, pageno: number) => (pageno - 1) * golden.pageSize;

function pagesOf(golden: Golden, name: string, pagetype?: string): number[] {
  const pages = golden.pages.filter((p) => p.name === name && (pagetype === undefined || p.pagetype === pagetype));
  return pages.map((p) => p.pageno);
}

/** A b-tree page's header fields (page 1's header starts after the 100-byte file header). */
async function btreeHeader(
  path: string,
  golden: Golden,
  pageno: number,
): Promise<{ cells: number; headerEnd: number; contentStart: number }> {
  const page = (await readFile(path)).subarray(offsetOf(golden, pageno), offsetOf(golden, pageno) + golden.pageSize);
  const base = pageno === 1 ? 100 : 0;
  const type = page[base] as number;
  const headerSize = type === 2 || type === 5 ? 12 : 8;
  const contentStart = page.readUInt16BE(base + 5) || 65536;
  return { cells: page.readUInt16BE(base + 3), headerEnd: base + headerSize, contentStart };
}

/** Random bytes in pages, each pattern from its own seed. */
const PAGE_DAMAGE: Damage[] = [
  {
    what: "page 1: random bytes over the file header (seed 101)",
    apply: async (path) => {
      const random = mulberry32(101);
      await overwrite(path, 0, randomBytes(random, 16 + Math.floor(random() * 84)));
    },
  },
  {
    what: "page 1: random bytes over the schema table's b-tree header and cell pointers (seed 202)",
    apply: async (path, golden) => {
      const random = mulberry32(202);
      const { cells, headerEnd } = await btreeHeader(path, golden, 1);
      await overwrite(path, 100, randomBytes(random, headerEnd - 100 + 2 * cells));
    },
  },
  {
    what: "a state_store leaf page overwritten entirely with random bytes (seed 303)",
    apply: async (path, golden) => {
      const random = mulberry32(303);
      const page = pick(random, pagesOf(golden, "state_store", "leaf"));
      await overwrite(path, offsetOf(golden, page), randomBytes(random, golden.pageSize));
    },
  },
  {
    what: "random bytes in the cells of a leaf page of state_store's key index (seed 404)",
    apply: async (path, golden) => {
      const random = mulberry32(404);
      const page = pick(random, pagesOf(golden, "sqlite_autoindex_state_store_1", "leaf"));
      const { contentStart } = await btreeHeader(path, golden, page);
      const length = 48;
      const at = contentStart + Math.floor(random() * (golden.pageSize - contentStart - length));
      await overwrite(path, offsetOf(golden, page) + at, randomBytes(random, length));
    },
  },
  {
    what: "random bytes over the cell pointers of a state_history leaf page (seed 505)",
    apply: async (path, golden) => {
      const random = mulberry32(505);
      const page = pick(random, pagesOf(golden, "state_history", "leaf"));
      const { cells, headerEnd } = await btreeHeader(path, golden, page);
      await overwrite(path, offsetOf(golden, page) + headerEnd, randomBytes(random, 2 * cells));
    },
  },
  {
    what: "a page of the state_history_key index overwritten entirely with random bytes (seed 606)",
    apply: async (path, golden) => {
      const random = mulberry32(606);
      const page = pick(random, pagesOf(golden, "state_history_key"));
      await overwrite(path, offsetOf(golden, page), randomBytes(random, golden.pageSize));
    },
  },
];

const TRUNCATION: Damage[] = [
  {
    what: "truncated to half its pages",
    apply: async (path, golden) => {
      const pages = (await stat(path)).size / golden.pageSize;
      await truncate(path, Math.floor(pages / 2) * golden.pageSize);
    },
  },
  {
    what: "truncated in the middle of a page",
    apply: async (path, golden) => {
      const size = (await stat(path)).size;
      await truncate(path, Math.floor(size / 2) + golden.pageSize / 2 + 13);
    },
  },
];

/** Independent of the bridge: the damage is one SQLite itself can see, so the test is about detection, not luck. */
async function expectSqliteSeesDamage(path: string, scratch: string): Promise<void> {
  const copy = join(scratch, "probe.db");
  await copyFile(path, copy);
  const answer = await readRows(copy, "PRAGMA integrity_check").then(
    (rows) => rows.map((r) => String(r.integrity_check)),
    (err: unknown) => [String(err)],
  );
  expect(answer, "the damage must be detectable by SQLite").not.toEqual(["ok"]);
  await rm(copy, { force: true });
}

describe("a damaged database at start", () => {
  let broker: EmbeddedBroker;
  let golden: Golden;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let goldenDir: Awaited<ReturnType<typeof tempDir>>;
  const running: RunningApp[] = [];

  async function start(config: AppConfig): Promise<RunningApp> {
    const r = await startApp(config);
    running.push(r);
    return r;
  }

  beforeAll(async () => {
    broker = await startTestBroker();
    goldenDir = await tempDir("wb-bridge-golden-");
    const root = goldenDir.path;
    const dbPath = join(root, "state.db");
    const { app } = await startApp(await testConfig(root, broker.url));
    try {
      const ok = (res: { statusCode: number; body: string }, status: number) => expect(res.statusCode, res.body).toBe(status);
      ok(
        await app.inject({
          method: "POST",
          url: "/devices/tv/action",
          payload: { action: "volume", params: { level: BACKED_UP.tvVolume } },
        }),
        200,
      );
      ok(await app.inject({ method: "POST", url: "/devices/amp/action", payload: { action: "power_on" } }), 200);
      // Enough rows that tables and indexes span several pages (interior and leaf).
      for (const res of await Promise.all(
        Array.from({ length: ITEMS }, (_, i) =>
          app.inject({ method: "PUT", url: `/state/item:${i}`, payload: { gen: BACKED_UP.gen, i, pad: PAD } }),
        ),
      )) {
        ok(res, 201);
      }
      const backup = await app.inject({ method: "POST", url: "/backups" });
      ok(backup, 201);
      const backupFile = (backup.json() as { file: string }).file;

      ok(
        await app.inject({
          method: "POST",
          url: "/devices/tv/action",
          payload: { action: "volume", params: { level: AFTER_BACKUP.tvVolume } },
        }),
        200,
      );
      for (const res of await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          app.inject({ method: "PUT", url: `/state/item:${i}`, payload: { gen: AFTER_BACKUP.gen, i, pad: PAD } }),
        ),
      )) {
        ok(res, 200);
      }
      ok(await app.inject({ method: "PUT", url: "/state/item:late", payload: { gen: AFTER_BACKUP.gen } }), 201);
      const ownWal = await readFile(`${dbPath}-wal`);
      expect(ownWal.length).toBeGreaterThan(32);

      const other = new SQLiteStateStore({ path: join(root, "other", "other.db") });
      await other.initialize();
      await other.set("device:elsewhere", { volume: 5 });
      const foreignWal = await readFile(join(root, "other", "other.db-wal"));
      await other.close();

      await app.close();
      const pageSize = Number((await readRows(dbPath, "PRAGMA page_size"))[0]?.page_size);
      const pages = (await readRows(dbPath, "SELECT name, pageno, pagetype FROM dbstat")).map((r) => ({
        name: String(r.name),
        pageno: Number(r.pageno),
        pagetype: String(r.pagetype),
      }));
      golden = { dbPath, backupsDir: join(root, "backups"), backupFile, pageSize, pages, ownWal, foreignWal };
    } catch (err) {
      await app.close();
      throw err;
    }
    // The damage patterns need these; a layout change that removes them must fail loudly, not skip.
    for (const [name, type] of [
      ["state_store", "leaf"],
      ["sqlite_autoindex_state_store_1", "leaf"],
      ["state_history", "leaf"],
      ["state_history_key", undefined],
    ] as const) {
      expect(pagesOf(golden, name, type).length, `${name} ${type ?? ""} pages`).toBeGreaterThan(0);
    }
  }, 30_000);

  afterAll(async () => {
    await broker?.close();
    await goldenDir?.remove();
  });

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    await dir.remove();
  });

  /** A bridge directory holding a copy of the golden database, with or without its backup. */
  async function place(withBackup: boolean): Promise<{ config: AppConfig; dbPath: string }> {
    const dbPath = join(dir.path, "state.db");
    await copyFile(golden.dbPath, dbPath);
    if (withBackup) await cp(golden.backupsDir, join(dir.path, "backups"), { recursive: true });
    return { config: await testConfig(dir.path, broker.url), dbPath };
  }

  /** Files in the bridge directory that are damaged copies moved aside. */
  async function quarantined(): Promise<string[]> {
    return (await readdir(dir.path)).filter((f) => f.startsWith("state.db.corrupt.")).map((f) => join(dir.path, f));
  }

  /** Started from the backup: the damaged file is aside, unchanged; backup values are served; the restore is reported. */
  async function expectRestored(config: AppConfig, dbPath: string, damagedHash: string): Promise<void> {
    const { app } = await start(config);
    const report = (await app.inject({ url: "/backups" })).json() as {
      restored_at_start: { backup: string; quarantined_to: string } | null;
    };
    expect(report.restored_at_start).toMatchObject({
      backup: golden.backupFile,
      quarantined_to: expect.stringContaining(`${dbPath}.corrupt.`),
    });
    const health = (await app.inject({ url: "/health" })).json() as { state: { restored_from_backup: unknown } };
    expect(health.state.restored_from_backup).toEqual(report.restored_at_start);
    const aside = report.restored_at_start?.quarantined_to as string;
    expect(await sha256(aside)).toBe(damagedHash);

    expect((await app.inject({ url: "/devices/tv/state" })).json()).toMatchObject({ state: { volume: BACKED_UP.tvVolume } });
    expect((await app.inject({ url: "/devices/amp/state" })).json()).toMatchObject({ state: { power: true } });
    expect((await app.inject({ url: "/state/item:7" })).json()).toMatchObject({ value: { gen: BACKED_UP.gen, i: 7 } });
    expect((await app.inject({ url: `/state/item:${ITEMS - 1}` })).json()).toMatchObject({ value: { gen: BACKED_UP.gen } });
    expect((await app.inject({ url: "/state/item:late" })).statusCode).toBe(404);
    // And it works on: the restored file takes writes and is intact.
    const res = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 41 } } });
    expect(res.statusCode).toBe(200);
    expect(await readRows(dbPath, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
  }

  /**
   * Without a backup: the start fails naming the file, the damaged file is aside and
   * unchanged, and no database (empty or otherwise) took its place; the next start refuses too.
   */
  async function expectRefused(config: AppConfig, dbPath: string, damagedHash: string): Promise<void> {
    const { err, logs } = await failedStart(config);
    expect(err).toBeInstanceOf(StoreCorruptError);
    const corrupt = err as StoreCorruptError;
    expect(corrupt.message).toContain(dbPath);
    expect(corrupt.message).toContain(corrupt.quarantinedTo);
    expect(corrupt.quarantinedTo.startsWith(`${dbPath}.corrupt.`)).toBe(true);
    expect(await sha256(corrupt.quarantinedTo)).toBe(damagedHash);
    expect(logs.some((l) => l.includes("no usable backup"))).toBe(true);
    await expect(stat(dbPath)).rejects.toMatchObject({ code: "ENOENT" });

    const again = await failedStart(config);
    expect(again.err).toBeInstanceOf(StoreCorruptError);
    expect((again.err as Error).message).toContain(corrupt.quarantinedTo);
    await expect(stat(dbPath)).rejects.toMatchObject({ code: "ENOENT" });
    expect(await sha256(corrupt.quarantinedTo)).toBe(damagedHash);
  }

  describe.each([
    ["with a backup", true],
    ["without a backup", false],
  ])("%s", (_label, withBackup) => {
    const check = (config: AppConfig, dbPath: string, hash: string) =>
      withBackup ? expectRestored(config, dbPath, hash) : expectRefused(config, dbPath, hash);

    it.each([...PAGE_DAMAGE, ...TRUNCATION].map((d) => [d.what, d] as const))(
      "%s",
      async (_what, damage) => {
        const { config, dbPath } = await place(withBackup);
        await damage.apply(dbPath, golden);
        await expectSqliteSeesDamage(dbPath, dir.path);
        await check(config, dbPath, await sha256(dbPath));
      },
      TEST_TIMEOUT_MS,
    );

    // SQLite opens a 0-byte file as an empty database (and deletes a WAL beside it). No
    // SQLite write leaves one behind (switching to WAL writes page 1 first), so it is a
    // file cut by something else: damage.
    it.each([
      ["a zero-length file", false],
      ["a zero-length file with this database's WAL beside it", true],
    ] as const)(
      "%s",
      async (_what, withWal) => {
        const { config, dbPath } = await place(withBackup);
        await truncate(dbPath, 0);
        if (withWal) await writeFile(`${dbPath}-wal`, golden.ownWal);
        await check(config, dbPath, await sha256(dbPath));
        const aside = await quarantined();
        expect(aside).toHaveLength(withWal ? 2 : 1);
        const wal = aside.find((f) => f.endsWith("-wal"));
        if (withWal) expect(wal && (await readFile(wal)).equals(golden.ownWal), "the WAL is kept aside unchanged").toBe(true);
        else expect(wal).toBeUndefined();
      },
      TEST_TIMEOUT_MS,
    );

    // SQLite deletes a WAL it finds without its database and starts empty: the WAL, maybe
    // the only copy of recent changes, would be destroyed. It is kept aside instead.
    it.each([
      ["this database's own WAL, left after the database file was deleted", "ownWal"],
      ["a WAL that belongs to another database", "foreignWal"],
    ] as const)(
      "a -wal without its database: %s",
      async (_what, which) => {
        const { config, dbPath } = await place(withBackup);
        await rm(dbPath);
        await writeFile(`${dbPath}-wal`, golden[which]);
        const walHash = await sha256(`${dbPath}-wal`);
        if (withBackup) {
          await expectRestored(config, dbPath, walHash);
        } else {
          await expectRefused(config, dbPath, walHash);
          await expect(stat(`${dbPath}-wal`)).rejects.toMatchObject({ code: "ENOENT" });
        }
        expect(await quarantined()).toEqual([expect.stringMatching(/-wal$/)]);
      },
      TEST_TIMEOUT_MS,
    );
  });

  it(
    "the real process refuses with exit 1 and a message naming the file, twice, and never creates an empty database",
    async () => {
      const dbPath = join(dir.path, "db", "state.db");
      await mkdir(join(dir.path, "db"));
      await copyFile(golden.dbPath, dbPath);
      const configDir = await writeConfigDir(dir.path, {
        system: { persistence: { db_path: "unused-because-STATE_PATH-wins.db" } },
        devices: [simulatedDevice("tv")],
      });
      const env = { CONFIG_DIR: configDir, STATE_PATH: dbPath, MQTT_URL: broker.url };
      await truncate(dbPath, 0);

      const first = await runToExit(env, PROCESS_TIMEOUT_MS);
      expect(first.code).toBe(1);
      expect(first.stderr).toMatch(/failed to start: state database .*state\.db is damaged/);
      expect(first.stderr).toContain(dbPath);
      const aside = (await readdir(join(dir.path, "db"))).filter((f) => f.startsWith("state.db.corrupt."));
      expect(aside).toHaveLength(1);
      expect(first.stderr).toContain(join(dir.path, "db", aside[0] as string));
      expect((await stat(join(dir.path, "db", aside[0] as string))).size).toBe(0);

      const second = await runToExit(env, PROCESS_TIMEOUT_MS);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(dbPath);
      expect(second.stderr).toContain(aside[0]);
      await expect(stat(dbPath)).rejects.toMatchObject({ code: "ENOENT" });
    },
    2 * PROCESS_TIMEOUT_MS + 5_000,
  );
});
