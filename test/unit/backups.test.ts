import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  BackupError,
  BackupManager,
  type BackupManagerOptions,
  type BackupResult,
  realScheduleTimer,
  type ScheduleTimer,
} from "../../app/state/backups.js";
import { SqliteConnection } from "../../app/state/sqlite-connection.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { captureLogger, tempDir } from "../helpers/fixtures.js";
import { readRows } from "../helpers/sqlite.js";

/** A clock the test moves by hand. */
interface ManualClock {
  now: () => Date;
  set: (iso: string) => void;
  advance: (ms: number) => void;
}

function manualClock(start = "2024-03-01T12:00:00.000Z"): ManualClock {
  let t = Date.parse(start);
  return {
    now: () => new Date(t),
    set: (iso) => {
      t = Date.parse(iso);
    },
    advance: (ms) => {
      t += ms;
    },
  };
}

interface ArmedTimer {
  ms: number;
  fire: () => void;
  cancelled: boolean;
}

/** A timer the test fires itself: records every arming and whether it was cancelled. */
function manualTimer(): { schedule: ScheduleTimer; armed: ArmedTimer[]; nextArm: () => Promise<ArmedTimer> } {
  const armed: ArmedTimer[] = [];
  let waiting: Array<(t: ArmedTimer) => void> = [];
  const schedule: ScheduleTimer = (fn, ms) => {
    const entry = { ms, fire: fn, cancelled: false };
    armed.push(entry);
    const w = waiting;
    waiting = [];
    for (const resolve of w) resolve(entry);
    return () => {
      entry.cancelled = true;
    };
  };
  return { schedule, armed, nextArm: () => new Promise((resolve) => waiting.push(resolve)) };
}

/** Resolves with the next result a manager reports. */
function resultWaiter(): { onResult: (r: BackupResult) => void; next: () => Promise<BackupResult> } {
  let waiting: Array<(r: BackupResult) => void> = [];
  return {
    onResult: (r) => {
      const w = waiting;
      waiting = [];
      for (const resolve of w) resolve(r);
    },
    next: () => new Promise((resolve) => waiting.push(resolve)),
  };
}

describe("BackupManager", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let dbPath: string;
  let backupDir: string;
  const managers: BackupManager[] = [];

  beforeEach(async () => {
    dir = await tempDir();
    dbPath = join(dir.path, "data", "state_store.db");
    backupDir = join(dir.path, "data", "backups");
    const store = new SQLiteStateStore({ path: dbPath });
    await store.initialize();
    await store.set("device:tv", { power: true, secret_marker: "s3cr3t-value" });
    await store.set("scenario:last", { id: "movie" });
    await store.close();
  });
  afterEach(async () => {
    for (const m of managers.splice(0)) await m.stop();
    await dir.remove();
  });

  function manager(overrides: Partial<BackupManagerOptions> = {}): { m: BackupManager; lines: string[] } {
    const { log, lines } = captureLogger("debug");
    const m = new BackupManager({ dbPath, dir: backupDir, keep: 10, intervalS: 300, log, ...overrides });
    managers.push(m);
    return { m, lines };
  }

  it("writes a verified copy named state_store-<UTC stamp>.db and lists it", async () => {
    const clock = manualClock("2024-03-01T12:34:56.789Z");
    const { m, lines } = manager({ now: clock.now });
    const info = await m.create("manual");

    expect(info.file).toBe("state_store-20240301T123456789Z.db");
    expect(info.path).toBe(join(backupDir, info.file));
    expect(info.created_at).toBe("2024-03-01T12:34:56.789Z");
    expect(info.size_bytes).toBe((await stat(info.path)).size);
    expect(await readRows(info.path, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
    const rows = await readRows(info.path, "SELECT key FROM state_store ORDER BY key");
    expect(rows.map((r) => r.key)).toEqual(["device:tv", "scenario:last"]);
    expect(await m.list()).toEqual([info]);
    expect(await readdir(backupDir)).toEqual([info.file]);
    expect(m.lastResult).toMatchObject({ ok: true, reason: "manual", file: info.file, at: "2024-03-01T12:34:56.789Z" });
    expect(lines.join("\n")).not.toContain("s3cr3t-value");
  });

  it("creates the backup directory when it is missing, also below a path with a quote", async () => {
    backupDir = join(dir.path, "it's", "nested", "backups");
    const { m } = manager();
    const info = await m.create("cli");
    expect(info.path.startsWith(backupDir)).toBe(true);
    expect(await readRows(info.path, "SELECT count(*) AS n FROM state_store")).toEqual([{ n: 2 }]);
  });

  it("gives backups in the same millisecond distinct names in creation order", async () => {
    const clock = manualClock("2024-03-01T12:00:00.000Z");
    const { m } = manager({ now: clock.now });
    const first = await m.create("manual");
    const second = await m.create("manual");
    const third = await m.create("manual");
    expect([first.file, second.file, third.file]).toEqual([
      "state_store-20240301T120000000Z.db",
      "state_store-20240301T120000001Z.db",
      "state_store-20240301T120000002Z.db",
    ]);
    expect((await m.list()).map((b) => b.file)).toEqual([third.file, second.file, first.file]);
  });

  it("names a backup after the newest one when the clock went back, so rotation keeps it", async () => {
    const clock = manualClock("2024-03-01T12:00:00.000Z");
    const { m } = manager({ now: clock.now, keep: 1 });
    await m.create("manual");
    clock.set("2020-01-01T00:00:00.000Z");
    const later = await m.create("manual");
    expect(later.file).toBe("state_store-20240301T120000001Z.db");
    expect((await m.list()).map((b) => b.file)).toEqual([later.file]);
  });

  it("keeps exactly `keep` newest backups and leaves other files alone", async () => {
    const clock = manualClock();
    const { m } = manager({ now: clock.now, keep: 3 });
    await mkdir(backupDir, { recursive: true });
    const foreign = ["notes.txt", "state_store-latest.db", ".state_store-20240301T120000000Z.1.ab.tmp"];
    for (const name of foreign) await writeFile(join(backupDir, name), "not a backup");

    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      made.push((await m.create("scheduled")).file);
      clock.advance(60_000);
    }
    const kept = (await m.list()).map((b) => b.file);
    expect(kept).toEqual([made[4], made[3], made[2]]);
    expect((await readdir(backupDir)).sort()).toEqual([...kept, ...foreign].sort());
  });

  it("lists nothing for a missing directory and ignores names that only look similar", async () => {
    const { m } = manager();
    expect(await m.list()).toEqual([]);
    await mkdir(backupDir, { recursive: true });
    for (const name of ["state_store-20240301T120000000Z.db.tmp", "state_store-20240301T1200Z.db", "x.db"]) {
      await writeFile(join(backupDir, name), "x");
    }
    await mkdir(join(backupDir, "state_store-20240301T120000000Z.db"));
    expect(await m.list()).toEqual([]);
  });

  it("rejects a copy that fails verification and leaves no temp file behind", async () => {
    const other = join(dir.path, "other.db");
    const conn = await SqliteConnection.open(other, "readwrite-create");
    await conn.exec("CREATE TABLE unrelated (x INTEGER); INSERT INTO unrelated VALUES (1);");
    await conn.close();
    const { m } = manager({ dbPath: other });

    const err = await m.create("manual").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect((err as Error).message).toContain(other);
    expect((err as Error).message).toMatch(/no state_store table/);
    expect(await readdir(backupDir)).toEqual([]);
    expect(m.lastResult).toMatchObject({ ok: false, reason: "manual" });
    expect(m.lastResult?.error).toMatch(/no state_store table/);
  });

  it("rejects with the database path when the database is missing", async () => {
    await rm(dbPath);
    const { m } = manager();
    await expect(m.create("manual")).rejects.toThrow(dbPath);
    expect(m.lastResult?.ok).toBe(false);
  });

  it("runs concurrent create() calls one after another", async () => {
    const events: string[] = [];
    const clock = manualClock();
    const { m } = manager({
      now: () => {
        events.push("now");
        return clock.now();
      },
      onResult: (r) => events.push(r.ok ? "done" : "failed"),
    });
    const [a, b] = await Promise.all([m.create("manual"), m.create("scheduled")]);
    expect(a.file).not.toBe(b.file);
    expect(b.file > a.file).toBe(true);
    // The second backup starts (reads the clock) only after the first has finished.
    expect(events).toEqual(["now", "now", "done", "now", "now", "done"]);
  });

  it("a failed backup does not block the ones queued behind it", async () => {
    const { m } = manager();
    await rm(dbPath);
    const failing = m.create("manual");
    const store = new SQLiteStateStore({ path: dbPath });
    const queued = (async () => {
      await failing.catch(() => undefined);
      await store.initialize();
      await store.close();
      return m.create("manual");
    })();
    await expect(failing).rejects.toThrow(BackupError);
    await expect(queued).resolves.toMatchObject({ size_bytes: expect.any(Number) });
  });

  describe("schedule", () => {
    it("arms a timer of intervalS seconds; each firing makes a backup and re-arms", async () => {
      const timer = manualTimer();
      const results = resultWaiter();
      const { m } = manager({ intervalS: 120, schedule: timer.schedule, onResult: results.onResult });
      m.start();
      m.start();
      expect(timer.armed.map((t) => t.ms)).toEqual([120_000]);
      expect(await m.list()).toEqual([]);

      const done = results.next();
      const rearmed = timer.nextArm();
      timer.armed[0]?.fire();
      const result = await done;
      expect(result).toMatchObject({ ok: true, reason: "scheduled" });
      expect((await m.list()).map((b) => b.file)).toEqual([result.file]);
      expect(m.lastResult).toEqual(result);
      expect((await rearmed).ms).toBe(120_000);
      expect(timer.armed).toHaveLength(2);

      const again = results.next();
      timer.armed[1]?.fire();
      expect(await again).toMatchObject({ ok: true, reason: "scheduled" });
      expect(await m.list()).toHaveLength(2);
    });

    it("skips a scheduled backup when nothing was committed since the last good one, and re-arms", async () => {
      const timer = manualTimer();
      const results = resultWaiter();
      let changes = 5;
      const { m, lines } = manager({ intervalS: 60, schedule: timer.schedule, onResult: results.onResult, changeCount: () => changes });
      m.start();
      const first = results.next();
      let rearmed = timer.nextArm();
      timer.armed[0]?.fire();
      expect(await first).toMatchObject({ ok: true, reason: "scheduled" });
      await rearmed;

      rearmed = timer.nextArm();
      timer.armed[1]?.fire();
      expect((await rearmed).ms).toBe(60_000);
      expect(await m.list()).toHaveLength(1);
      expect(lines.some((l) => l.includes("scheduled backup skipped"))).toBe(true);

      changes += 1;
      const second = results.next();
      timer.armed[2]?.fire();
      expect(await second).toMatchObject({ ok: true, reason: "scheduled" });
      expect(await m.list()).toHaveLength(2);
    });

    it("does not schedule anything when the interval is 0", async () => {
      const timer = manualTimer();
      const { m } = manager({ intervalS: 0, schedule: timer.schedule });
      m.start();
      await m.stop();
      expect(timer.armed).toEqual([]);
    });

    it("records a failing scheduled backup, logs it without data, and keeps the schedule", async () => {
      const timer = manualTimer();
      const results = resultWaiter();
      const { m, lines } = manager({ intervalS: 60, schedule: timer.schedule, onResult: results.onResult });
      m.start();
      await rm(dbPath);

      const failed = results.next();
      const rearmed = timer.nextArm();
      timer.armed[0]?.fire();
      const result = await failed;
      expect(result.ok).toBe(false);
      expect(result.error).toContain(dbPath);
      expect(m.lastResult).toMatchObject({ ok: false, reason: "scheduled" });
      expect(m.lastResult?.duration_ms).toBeGreaterThanOrEqual(0);
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const errorLine = parsed.find((l) => l.msg === "backup failed");
      expect(errorLine?.level).toBe(50);

      // Still scheduled; the next firing succeeds once the database is back.
      await rearmed;
      expect(timer.armed).toHaveLength(2);
      const store = new SQLiteStateStore({ path: dbPath });
      await store.initialize();
      await store.set("device:tv", { power: false, secret_marker: "s3cr3t-value" });
      await store.close();
      const ok = results.next();
      timer.armed[1]?.fire();
      expect(await ok).toMatchObject({ ok: true, reason: "scheduled" });
      expect(lines.join("\n")).not.toContain("s3cr3t-value");
    });

    it("stop() cancels the timer, waits for a running backup and does not re-arm", async () => {
      const timer = manualTimer();
      const results: BackupResult[] = [];
      const { m } = manager({ intervalS: 60, schedule: timer.schedule, onResult: (r) => results.push(r) });
      m.start();
      timer.armed[0]?.fire();
      await m.stop();
      expect(results).toHaveLength(1);
      expect(results[0]?.ok).toBe(true);
      expect(timer.armed).toHaveLength(1);
      await m.stop();

      m.start();
      expect(timer.armed).toHaveLength(2);
      await m.stop();
      expect(timer.armed[1]?.cancelled).toBe(true);
    });

    it("a listener that throws does not break the backup", async () => {
      const { m, lines } = manager({
        onResult: () => {
          throw new Error("listener broke");
        },
      });
      await expect(m.create("manual")).resolves.toMatchObject({ size_bytes: expect.any(Number) });
      expect(lines.some((l) => l.includes("listener broke"))).toBe(true);
    });
  });
});

describe("realScheduleTimer", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("fires once after the delay on a timer that does not keep the process alive", async () => {
    const spy = vi.spyOn(globalThis, "setTimeout");
    const fired = new Promise<void>((resolve) => realScheduleTimer(resolve, 1));
    const handle = spy.mock.results[0]?.value as NodeJS.Timeout;
    expect(spy.mock.calls[0]?.[1]).toBe(1);
    expect(handle.hasRef()).toBe(false);
    await fired;
  });

  it("does not fire once cancelled", async () => {
    let fired = false;
    const cancel = realScheduleTimer(() => {
      fired = true;
    }, 1);
    cancel();
    // A later timer of the same delay fires after the cancelled one would have.
    await new Promise<void>((resolve) => realScheduleTimer(resolve, 5));
    expect(fired).toBe(false);
  });
});
