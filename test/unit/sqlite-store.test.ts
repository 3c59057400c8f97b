import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sqlite3 from "sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { isUndecodable, StateDecodeError, StoreCorruptError, StoreOpenError, StoreWriteError } from "../../app/state/store.js";
import { tempDir } from "../helpers/fixtures.js";
import { readRows } from "../helpers/sqlite.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("sqlite", (dir, now) => {
  const path = join(dir, "state.db");
  return { store: new SQLiteStateStore({ path, now }), reopen: () => new SQLiteStateStore({ path, now }) };
});

/** A second, independent connection to the same file: sees only what was committed. */
function openRaw(path: string): Promise<sqlite3.Database> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(path, sqlite3.OPEN_READWRITE, (err) => (err ? reject(err) : resolve(db)));
  });
}
function query<T>(db: sqlite3.Database, sql: string, params: unknown[] = []): Promise<T[]> {
  return new Promise((resolve, reject) => db.all<T>(sql, params, (err, rows) => (err ? reject(err) : resolve(rows))));
}
function closeRaw(db: sqlite3.Database): Promise<void> {
  return new Promise((resolve, reject) => db.close((err) => (err ? reject(err) : resolve())));
}

describe("SQLiteStateStore", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let path: string;

  beforeEach(async () => {
    dir = await tempDir();
    path = join(dir.path, "data", "state.db");
  });
  afterEach(async () => {
    await dir.remove();
  });

  it("creates the table in WAL mode with synchronous FULL by default", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.set("device:a", { v: 1 });
    const raw = await openRaw(path);
    const [journal] = await query<{ journal_mode: string }>(raw, "PRAGMA journal_mode");
    const columns = await query<{ name: string }>(raw, "PRAGMA table_info(state_store)");
    const rows = await query<{ key: string; value: string; updated_at: number }>(raw, "SELECT * FROM state_store");
    await closeRaw(raw);
    await store.close();
    expect(journal?.journal_mode).toBe("wal");
    expect(columns.map((c) => c.name)).toEqual(["key", "value", "updated_at", "version", "expires_at"]);
    expect(rows).toHaveLength(1);
    expect(JSON.parse(rows[0]?.value ?? "")).toEqual({ v: 1 });
    expect(rows[0]?.updated_at).toBeGreaterThan(0);
  });

  it("creates new databases with 512-byte pages and only the history index that reads need", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.set("device:a", { v: 1 });
    await store.close();
    const [page] = await readRows(path, "PRAGMA page_size");
    const indexes = await readRows(path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'state_history'");
    const [history] = await readRows(path, "SELECT sql FROM sqlite_master WHERE name = 'state_history'");
    expect(page?.page_size).toBe(512);
    expect(indexes.map((i) => i.name)).toEqual(["state_history_key"]);
    expect(String(history?.sql)).not.toMatch(/AUTOINCREMENT/);
  });

  it("drops the old per-transition and per-time history indexes from an existing database", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.close();
    await readRows(path, "CREATE INDEX state_history_at ON state_history (at)");
    await readRows(path, "CREATE INDEX state_history_transition ON state_history (transition, id)");
    const reopened = new SQLiteStateStore({ path });
    await reopened.initialize();
    await reopened.close();
    const indexes = await readRows(path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'state_history'");
    expect(indexes.map((i) => i.name)).toEqual(["state_history_key"]);
  });

  it("resolves each concurrent set only once its row is committed (seen by a second connection)", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    const raw = await openRaw(path);
    const checks = Array.from({ length: 200 }, async (_, i) => {
      await store.set(`device:c${i}`, { i });
      const rows = await query<{ value: string }>(raw, "SELECT value FROM state_store WHERE key = ?", [`device:c${i}`]);
      return rows[0] ? (JSON.parse(rows[0].value) as { i: number }).i : null;
    });
    const seen = await Promise.all(checks);
    await closeRaw(raw);
    const stats = store.stats;
    expect(await store.get("device:c199")).toEqual({ i: 199 });
    await store.close();
    expect(seen).toEqual(Array.from({ length: 200 }, (_, i) => i));
    // Group commit: 200 concurrent writes share far fewer transactions.
    expect(stats.writes).toBe(200);
    expect(stats.commits).toBeLessThan(20);
  });

  it("groups writes that arrive during a commit into the next transaction", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    const first = store.set("device:first", { n: 0 });
    // One turn of the event loop later the first commit is in flight ...
    await new Promise<void>((resolve) => setImmediate(resolve));
    // ... and these arrive while it is: together they make the next transaction.
    const rest = Array.from({ length: 50 }, (_, i) => store.set(`device:r${i}`, { n: i }));
    await Promise.all([first, ...rest]);
    expect(store.stats).toEqual({ commits: 2, writes: 51 });
    // Writes issued in the same turn share one transaction from the start.
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.set(`device:s${i}`, { n: i })));
    expect(store.stats).toEqual({ commits: 3, writes: 71 });
    await store.close();
  });

  it("applies a set and a delete of the same key in arrival order within one batch", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.set("device:k", { v: 0 });
    const ops = [
      store.set("device:k", { v: 1 }),
      store.delete("device:k"),
      store.set("device:j", { v: 2 }),
      store.delete("device:j"),
      store.set("device:j", { v: 3 }),
    ];
    await Promise.all(ops);
    expect(await store.get("device:k")).toBeNull();
    expect(await store.get("device:j")).toEqual({ v: 3 });
    await store.close();
  });

  it("moves a file that is not a database aside and refuses to start", async () => {
    await mkdir(join(dir.path, "data"), { recursive: true });
    await writeFile(path, "this is not a database, it is a text file that got here somehow".repeat(100));
    const store = new SQLiteStateStore({ path });
    const err = await store.initialize().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreCorruptError);
    const corrupt = err as StoreCorruptError;
    expect(corrupt.message).toContain(path);
    expect(corrupt.message).toContain("moved to");
    expect(corrupt.quarantinedTo).toMatch(/state\.db\.corrupt\.\d{4}-\d{2}-\d{2}T/);
    await expect(stat(path)).rejects.toThrow();
    expect((await readFile(corrupt.quarantinedTo, "utf8")).startsWith("this is not a database")).toBe(true);
  });

  it("moves a database with damaged pages aside (integrity check) and never starts empty", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await Promise.all(Array.from({ length: 2000 }, (_, i) => store.set(`device:p${i}`, { payload: "x".repeat(200), i })));
    await store.close();
    const bytes = await readFile(path);
    // Overwrite the middle pages (b-tree pages of the table) with garbage; keep the header.
    for (let offset = 4096 * 2; offset < bytes.length - 4096; offset += 4096 * 3) {
      bytes.fill(0xa5, offset, offset + 512);
    }
    await writeFile(path, bytes);
    const reopened = new SQLiteStateStore({ path });
    const err = await reopened.initialize().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreCorruptError);
    const files = await readdir(join(dir.path, "data"));
    expect(files.some((f) => f.startsWith("state.db.corrupt."))).toBe(true);
    expect(files).not.toContain("state.db");
  });

  it("fails to open with a clear error when the path cannot hold a database", async () => {
    await writeFile(join(dir.path, "plainfile"), "x");
    const underFile = new SQLiteStateStore({ path: join(dir.path, "plainfile", "state.db") });
    await expect(underFile.initialize()).rejects.toThrow(StoreOpenError);
    await expect(underFile.initialize()).rejects.toThrow(/plainfile\/state\.db/);

    await mkdir(join(dir.path, "adir"));
    const isDir = new SQLiteStateStore({ path: join(dir.path, "adir") });
    await expect(isDir.initialize()).rejects.toThrow(/not a regular file/);
  });

  it("fails a write with StoreWriteError when the commit fails, and keeps serving reads", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.set("device:kept", { v: 1 });
    // A trigger makes every later insert fail inside the transaction.
    const raw = await openRaw(path);
    await query(raw, "CREATE TRIGGER deny BEFORE INSERT ON state_store BEGIN SELECT RAISE(ABORT, 'disk says no'); END");
    await closeRaw(raw);
    const err = await store.set("device:new", { v: 2 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreWriteError);
    expect((err as Error).message).toContain("disk says no");
    expect(await store.get("device:kept")).toEqual({ v: 1 });
    expect(await store.get("device:new")).toBeNull();
    await store.close();
  });

  it("reports a row whose text is not JSON instead of failing every read", async () => {
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    await store.set("device:good", { v: 1 });
    const raw = await openRaw(path);
    await query(raw, "INSERT INTO state_store (key, value, updated_at) VALUES ('device:bad', '{not json', 1)");
    await closeRaw(raw);
    await expect(store.get("device:bad")).rejects.toBeInstanceOf(StateDecodeError);
    const listed = await store.list("device:");
    expect(listed.map((e) => [e.key, isUndecodable(e)])).toEqual([
      ["device:bad", true],
      ["device:good", false],
    ]);
    await store.close();
  });

  /** `count` history rows of `key` straight into the file (the store closed), `at` as given. */
  async function seedHistory(rows: Array<{ key: string; count: number; at: number }>): Promise<void> {
    const setup = new SQLiteStateStore({ path });
    await setup.initialize();
    await setup.close();
    const raw = await openRaw(path);
    for (const { key, count, at } of rows) {
      await query(
        raw,
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO state_history (key, old, new, transition, source, actor, at)
         SELECT ?, NULL, json_object('i', i), 'update', 'internal', NULL, ? FROM n`,
        [count, key, at],
      );
    }
    await closeRaw(raw);
  }
  const idsOf = async (raw: sqlite3.Database, key: string) =>
    (await query<{ id: number }>(raw, "SELECT id FROM state_history WHERE key = ? ORDER BY id", [key])).map((r) => r.id);

  it("prunes backlogs larger than one delete, by age and per key, keeping each key's newest rows", async () => {
    const now = 10_000_000;
    // Old rows first (ids 1-1200), then 1300 recent rows of a and 50 of b.
    await seedHistory([
      { key: "old:c", count: 1200, at: now - 60_000 },
      { key: "dev:a", count: 1300, at: now },
      { key: "dev:b", count: 50, at: now },
    ]);
    const raw = await openRaw(path);
    const before = await idsOf(raw, "dev:a");
    const store = new SQLiteStateStore({ path, now: () => now });
    await store.initialize();
    const removed = await store.pruneHistory({ maxPerKey: 100, maxAgeMs: 30_000 }, now);
    await store.close();
    expect(removed).toBe(1200 + 1200);
    expect(await idsOf(raw, "old:c")).toEqual([]);
    expect(await idsOf(raw, "dev:a")).toEqual(before.slice(-100));
    expect(await idsOf(raw, "dev:b")).toHaveLength(50);
    await closeRaw(raw);
  });

  it("commits a write that arrives during pruning before the deletes, never behind one long statement", async () => {
    await seedHistory([{ key: "device:a", count: 3000, at: 1 }]);
    const raw = await openRaw(path);
    const store = new SQLiteStateStore({ path });
    await store.initialize();
    const pruning = store.pruneHistory({ maxPerKey: 10, maxAgeMs: 0 }, Date.now());
    await store.set("device:a", { i: "during" });
    // The rows still there when the write committed: the deletes come in slots of their own.
    const leftAtCommit = (await idsOf(raw, "device:a")).length;
    const first = await pruning;
    // The write's row is kept either way; whether the reader's scan saw it decides if the
    // key is at 10 rows now or after the next run.
    const second = await store.pruneHistory({ maxPerKey: 10, maxAgeMs: 0 }, Date.now());
    const kept = await query<{ new: string }>(raw, "SELECT new FROM state_history WHERE key = 'device:a' ORDER BY id");
    await store.close();
    await closeRaw(raw);
    expect(leftAtCommit).toBeGreaterThanOrEqual(3001 - 100);
    expect(first + second).toBe(3001 - 10);
    expect(first).toBeGreaterThanOrEqual(3001 - 11);
    expect(kept).toHaveLength(10);
    expect(JSON.parse(kept.at(-1)?.new ?? "null")).toEqual({ i: "during" });
  });
});
