import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { StoreWriteError } from "../../app/state/store.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { deadline } from "../helpers/deadline.js";
import { ext4LoopUnavailable, ScratchMount, tmpfsUnavailable } from "../helpers/fault-fs.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { readRows, readStoredValue } from "../helpers/sqlite.js";

/**
 * Fault: the database's file system fills up, or turns read-only, under the running
 * bridge. An action then fails with a clear storage error and changes nothing (not the
 * database, not the device's state in memory, not MQTT); reads and the process go on;
 * /health says why; and every change acknowledged before is still there afterwards.
 */

// These tests mount file systems. In CI (root on the CI machine) that must work, so a
// missing capability fails loudly below; elsewhere the suite is skipped with the reason.
const tmpfsProblem = tmpfsUnavailable();
const ext4Problem = ext4LoopUnavailable();
const skipTmpfs = tmpfsProblem !== null && !process.env.CI;
const skipExt4 = ext4Problem !== null && !process.env.CI;
if (skipTmpfs) console.warn(`disk-full fault tests skipped: ${tmpfsProblem}; CI is not set`);
if (skipExt4) console.warn(`read-only fault tests skipped: ${ext4Problem}; CI is not set`);

interface SimState {
  power: boolean;
  volume: number;
  muted: boolean;
  input: string;
}

interface ErrorBody {
  error: { code: string; message: string };
}

describe("storage faults under a running bridge", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let scratch: ScratchMount | null = null;
  let running: RunningApp | null = null;
  const clients: TestMqttClient[] = [];

  beforeEach(async () => {
    dir = await tempDir("wb-fault-disk-");
    broker = await startTestBroker();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch((err: unknown) => console.warn(`mqtt close: ${String(err)}`));
    try {
      // Close the bridge first so nothing holds the scratch file system open (bounded,
      // so the unmount below runs even if a broken bridge never finishes stopping)...
      if (running) await deadline(running.app.close(), 15_000, "closing the bridge after the test");
    } finally {
      running = null;
      // ...and always unmount it, even when the test or the close failed.
      await scratch?.dispose();
      scratch = null;
      await broker.close();
      await dir.remove();
    }
  });

  async function bridgeOn(dbDir: string): Promise<{ config: AppConfig; dbPath: string }> {
    const dbPath = join(dbDir, "state.db");
    const config = await testConfig(dir.path, broker.url, {
      system: {
        mqtt: { client_id: `fault-disk-${process.pid}-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
        // Backups elsewhere and off: only the bridge's own writes touch the scratch file system.
        // io_failure_exit_ms 1: three failed commits in a row are enough to give up (fatal).
        persistence: { db_path: dbPath, backups: { interval_s: 0, dir: join(dir.path, "backups") }, io_failure_exit_ms: 1 },
        logging: { level: "silent" },
        rate_limit: { max: 0 },
      },
      devices: [simulatedDevice("tv"), simulatedDevice("amp")],
    });
    return { config, dbPath };
  }

  async function connectClient(): Promise<TestMqttClient> {
    const client = await TestMqttClient.connect(broker.url);
    clients.push(client);
    return client;
  }

  function helpers(app: RunningApp["app"]) {
    return {
      action: async (id: string, name: string, params: Record<string, unknown> = {}) => {
        const res = await app.inject({ method: "POST", url: `/devices/${id}/action`, payload: { action: name, params } });
        return { status: res.statusCode, body: res.json() as { state: SimState } & ErrorBody };
      },
      state: async (id: string): Promise<SimState> => {
        const res = await app.inject({ url: `/devices/${id}/state` });
        expect(res.statusCode).toBe(200);
        return (res.json() as { state: SimState }).state;
      },
      storedViaHttp: async (id: string): Promise<SimState> => {
        const res = await app.inject({ url: `/state/device:${id}` });
        expect(res.statusCode).toBe(200);
        return (res.json() as { value: { state: SimState } }).value.state;
      },
      health: async () => {
        const res = await app.inject({ url: "/health" });
        expect(res.statusCode).toBe(200);
        return res.json() as { status: string; store: { open: boolean; write_error: { code: string; message: string } | null } };
      },
    };
  }

  /** The history rows of `key` as text: a rolled-back transaction must have left none. */
  async function historyText(dbPath: string, key: string): Promise<string> {
    const rows = await readRows(dbPath, "SELECT new FROM state_history WHERE key = ? ORDER BY id", [key]);
    return rows.map((r) => String(r.new)).join("\n");
  }

  /** The bridge with its database on `mount`, an observer of every control, and a client that sends commands. */
  async function bridgeWithClients(mount: ScratchMount) {
    const { config, dbPath } = await bridgeOn(mount.dir);
    running = await startApp(config);
    const { app } = running;
    const observer = await connectClient();
    await observer.subscribe("/devices/+/controls/#");
    return { config, dbPath, app, logs: running.logs, h: helpers(app), observer, commander: await connectClient() };
  }

  describe.skipIf(skipTmpfs)("disk full (tmpfs)", () => {
    beforeEach(() => {
      if (tmpfsProblem) throw new Error(`CI is set but the disk-full fault tests cannot run: ${tmpfsProblem}`);
    });

    it("fails actions with 507 storage_full, keeps everything committed, and recovers without a restart once space is freed", async () => {
      scratch = await ScratchMount.tmpfs(4096);
      const { config, dbPath, app, logs, h, observer, commander } = await bridgeWithClients(scratch);

      // Acknowledged before the disk fills up.
      expect((await h.action("tv", "volume", { level: 31 })).status).toBe(200);
      expect((await h.action("tv", "power_on")).status).toBe(200);
      expect((await h.action("amp", "input", { input: "hdmi2" })).status).toBe(200);
      const before = { tv: await h.state("tv"), amp: await h.state("amp") };
      expect(before.tv).toEqual({ power: true, volume: 31, muted: false, input: "hdmi1" });
      expect(before.amp).toMatchObject({ input: "hdmi2" });

      const fatal: string[] = [];
      app.bridge.onFatal((reason) => fatal.push(reason));
      const filler = await scratch.fill();

      // Concurrent actions share one group-commit transaction; all of its writers fail.
      const attempts: Array<[string, string, Record<string, unknown>]> = [
        ["tv", "volume", { level: 90 }],
        ["amp", "volume", { level: 91 }],
        ["tv", "input", { input: "tv" }],
        ["amp", "power_on", {}],
      ];
      const failed = await Promise.all(attempts.map(([id, name, params]) => h.action(id, name, params)));
      for (const res of failed) {
        expect(res.status).toBe(507);
        expect(res.body.error.code).toBe("storage_full");
        expect(res.body.error.message).toMatch(/storage is full \(disk full\).*not saved/);
        // Neither SQLite's text nor the database path reaches the client.
        expect(res.body.error.message).not.toMatch(/SQLITE|state\.db/);
      }

      // Nothing moved ahead of the database: not the device state, not the stored value.
      expect(await h.state("tv")).toEqual(before.tv);
      expect(await h.state("amp")).toEqual(before.amp);
      expect(await h.storedViaHttp("tv")).toEqual(before.tv);
      expect(await h.storedViaHttp("amp")).toEqual(before.amp);
      expect((await app.inject({ url: "/health/live" })).statusCode).toBe(200);

      const health = await h.health();
      expect(health.status).toBe("degraded");
      expect(health.store).toMatchObject({ open: true, write_error: { code: "storage_full" } });
      const ready = await app.inject({ url: "/health/ready" });
      expect(ready.statusCode).toBe(503);
      expect(ready.json().reasons).toContain("state store cannot write (storage_full)");

      // An MQTT command fails the same way: the control's error flag is raised, the value is not published.
      await commander.publish("/devices/tv/controls/volume/on", "55");
      await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "w");
      expect(observer.on("/devices/tv/controls/volume").map((m) => m.payload)).not.toContain("55");
      expect(await h.state("tv")).toEqual(before.tv);

      // The store itself: the waiting writer is rejected with the classified error.
      const direct = await app.bridge.store.write([{ key: "note:full", value: { n: 1 } }]).then(
        () => null,
        (err: unknown) => err,
      );
      expect(direct).toBeInstanceOf(StoreWriteError);
      expect((direct as StoreWriteError).failure).toBe("full");
      expect(await app.bridge.store.get("note:full")).toBeNull();
      // A batch too big for SQLite's page cache spills to the WAL before COMMIT and fails
      // mid-transaction instead: it too must be rolled back, leaving the writer usable.
      const blobs = Array.from({ length: 30 }, (_, i) => ({ key: `note:blob${i}`, value: { pad: `${"y".repeat(100_000)}${i}` } }));
      await expect(app.bridge.store.write(blobs)).rejects.toMatchObject({ failure: "full" });

      // However often it fails, a full disk is never fatal (io_failure_exit_ms is 1 here).
      for (const level of [81, 82, 83]) expect((await h.action("tv", "volume", { level })).status).toBe(507);
      expect(fatal).toEqual([]);

      // Space comes back: the same writer connection commits again, no restart.
      await scratch.free(filler);
      const recovered = await h.action("tv", "volume", { level: 42 });
      expect(recovered.status).toBe(200);
      expect(recovered.body.state).toEqual({ ...before.tv, volume: 42 });
      expect((await h.action("amp", "power_on")).status).toBe(200);
      await commander.publish("/devices/tv/controls/volume/on", "56");
      await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "56");
      // A successful command clears the flag the failed one raised.
      await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "");
      expect(await app.bridge.store.get("note:blob0")).toBeNull();
      await app.bridge.store.write([{ key: "note:after", value: { n: 2 } }]);
      // The failures were logged by key, never with the values.
      expect(logs.some((line) => line.includes("state commit failed") && line.includes("note:blob0"))).toBe(true);
      expect(logs.some((line) => line.includes("yyyyyyyy"))).toBe(false);
      const healthAfter = await h.health();
      expect(healthAfter.status).toBe("ok");
      expect(healthAfter.store.write_error).toBeNull();

      const acked = { tv: { ...before.tv, volume: 56 }, amp: { ...before.amp, power: true } };
      expect(await h.state("tv")).toEqual(acked.tv);
      expect(await h.state("amp")).toEqual(acked.amp);

      // After a stop, a fresh connection sees exactly the acknowledged values...
      await app.close();
      running = null;
      expect(((await readStoredValue(dbPath, "device:tv")) as { state: SimState }).state).toEqual(acked.tv);
      expect(((await readStoredValue(dbPath, "device:amp")) as { state: SimState }).state).toEqual(acked.amp);
      // ...and the failed transactions left nothing behind, not even history.
      expect(await historyText(dbPath, "device:tv")).not.toMatch(/"volume":(90|55)\b|"input":"tv"/);
      expect(await historyText(dbPath, "device:amp")).not.toMatch(/"volume":91\b/);
      expect(await readStoredValue(dbPath, "note:full")).toBeNull();

      // ...and so does the bridge after a restart.
      running = await startApp(config);
      const h2 = helpers(running.app);
      expect(await h2.state("tv")).toEqual(acked.tv);
      expect(await h2.state("amp")).toEqual(acked.amp);
    }, 30_000);
  });

  describe.skipIf(skipExt4)("file system turned read-only (ext4 on a loop device)", () => {
    beforeEach(() => {
      if (ext4Problem) throw new Error(`CI is set but the read-only fault tests cannot run: ${ext4Problem}`);
    });

    it("fails actions with 503, keeps serving reads, stops cleanly, and has every acknowledged value after repair", async () => {
      scratch = await ScratchMount.ext4(16);
      const { config, dbPath, app, h, observer, commander } = await bridgeWithClients(scratch);

      expect((await h.action("tv", "volume", { level: 12 })).status).toBe(200);
      expect((await h.action("amp", "power_on")).status).toBe(200);
      expect((await h.action("amp", "volume", { level: 64 })).status).toBe(200);
      const acked = { tv: await h.state("tv"), amp: await h.state("amp") };

      const fatal: string[] = [];
      app.bridge.onFatal((reason) => fatal.push(reason));
      await scratch.forceReadOnly();

      const failed = await Promise.all([
        h.action("tv", "volume", { level: 93 }),
        h.action("amp", "volume", { level: 94 }),
        h.action("tv", "power_on"),
      ]);
      for (const res of failed) {
        // SQLite reports EROFS on a write as an I/O error; a read-only open would be SQLITE_READONLY.
        expect(res.status).toBe(503);
        expect(["storage_io_error", "storage_read_only"]).toContain(res.body.error.code);
        expect(res.body.error.message).toMatch(/read-only.*not saved/);
      }
      // A second round fails the same way: the writer is not stuck in a half-open transaction.
      const again = await h.action("tv", "volume", { level: 95 });
      expect(again.status).toBe(503);
      // Repeated I/O failure is fatal (DESIGN §3): reported once, however many more commits fail.
      expect((await h.action("tv", "volume", { level: 96 })).status).toBe(503);
      expect((await h.action("tv", "volume", { level: 97 })).status).toBe(503);
      expect(fatal).toHaveLength(1);
      expect(fatal[0]).toMatch(/state store: every commit failed \((io|read_only)\)/);

      expect(await h.state("tv")).toEqual(acked.tv);
      expect(await h.state("amp")).toEqual(acked.amp);
      expect(await h.storedViaHttp("tv")).toEqual(acked.tv);
      expect(await h.storedViaHttp("amp")).toEqual(acked.amp);
      const health = await h.health();
      expect(health.status).toBe("degraded");
      expect(health.store.write_error?.code).toMatch(/^storage_(io_error|read_only)$/);

      await commander.publish("/devices/amp/controls/volume/on", "11");
      await observer.waitFor("/devices/amp/controls/volume/meta/error", (m) => m.payload === "w");
      expect(await h.state("amp")).toEqual(acked.amp);

      // Shutdown cannot checkpoint or remove its lock file, but it must finish (logged, not hung).
      await deadline(app.close(), 10_000, "the bridge stopping on a read-only file system");
      running = null;

      // A read-only file system only comes back through unmount + fsck (a reboot). A plain
      // `mount -o remount,ro` would not even get here: it is refused while the database is open.
      await scratch.repairAndRemount();
      expect(((await readStoredValue(dbPath, "device:tv")) as { state: SimState }).state).toEqual(acked.tv);
      expect(((await readStoredValue(dbPath, "device:amp")) as { state: SimState }).state).toEqual(acked.amp);
      expect(await historyText(dbPath, "device:tv")).not.toMatch(/"volume":(93|95)\b/);
      expect(await historyText(dbPath, "device:amp")).not.toMatch(/"volume":(94|11)\b/);

      running = await startApp(config);
      const h2 = helpers(running.app);
      expect(await h2.state("tv")).toEqual(acked.tv);
      expect(await h2.state("amp")).toEqual(acked.amp);
      const next = await h2.action("tv", "volume", { level: 50 });
      expect(next.status).toBe(200);
      expect((await h2.health()).store.write_error).toBeNull();
    }, 30_000);
  });
});
