import { stat } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type BridgeChild, BUNDLE_ENTRY, BUNDLE_ENV, buildBundle, runToExit, setVolume, startBridge } from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";

const DEVICES = Array.from({ length: 10 }, (_, i) => `dev${i}`);

describe("the real process", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let env: Record<string, string>;
  const children: BridgeChild[] = [];

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    const configDir = await writeConfigDir(dir.path, {
      system: { persistence: { db_path: "unused-because-STATE_PATH-wins.db" }, rate_limit: { max: 0 } },
      devices: DEVICES.map((id) => simulatedDevice(id)),
    });
    env = { CONFIG_DIR: configDir, STATE_PATH: join(dir.path, "db", "state.db"), MQTT_URL: broker.url };
  });

  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
      await c.exited;
    }
    await broker.close();
    await dir.remove();
  });

  it("keeps every acknowledged action across SIGKILL mid-stream", async () => {
    const first = await startBridge(env);
    children.push(first);
    // Each device gets volumes 1, 2, 3, ... one request at a time; ten devices in parallel.
    const acked = new Map<string, number>(DEVICES.map((d) => [d, 0]));
    let total = 0;
    let killed = false;
    const killAt = 120;
    const worker = async (device: string) => {
      for (let level = 1; level <= 20 && !killed; level++) {
        try {
          await setVolume(first.url, device, level);
        } catch (err) {
          if (killed) return;
          throw err;
        }
        acked.set(device, level);
        total += 1;
        if (total === killAt) {
          killed = true;
          first.proc.kill("SIGKILL");
        }
      }
    };
    await Promise.all(DEVICES.map(worker));
    expect((await first.exited).signal).toBe("SIGKILL");
    expect(total).toBeGreaterThanOrEqual(killAt);

    const second = await startBridge(env);
    children.push(second);
    for (const device of DEVICES) {
      const res = await fetch(`${second.url}/devices/${device}/state`);
      const { state } = (await res.json()) as { state: { volume: number } };
      const ack = acked.get(device) ?? 0;
      // Acknowledged means durable; at most the one request in flight at the kill may also have landed.
      expect([ack, ack + 1], `${device}: acknowledged ${ack}, restored ${state.volume}`).toContain(state.volume);
    }
  });

  it("after kill -9 the retained ready is 0 (the will); the next start publishes ready 0 before anything else, 1 once ready", async () => {
    const ready = "/devices/wb_bridge/controls/ready";
    const observer = await TestMqttClient.connect(broker.url);
    try {
      await observer.subscribe("/devices/#");
      const first = await startBridge(env);
      children.push(first);
      await observer.waitFor(ready, (m) => m.payload === "1", 10_000);
      const killedAt = observer.received.length;
      first.proc.kill("SIGKILL");
      expect((await first.exited).signal).toBe("SIGKILL");
      await observer.waitFor(ready, (m) => observer.received.indexOf(m) >= killedAt && m.payload === "0");
      // What a client arriving now is told: the retained value, delivered on subscribing.
      // (aedes streams retained messages after the SUBACK, so this awaits the message
      // itself rather than a marker that could overtake it.)
      const late = await TestMqttClient.connect(broker.url);
      try {
        await late.subscribe(ready);
        expect((await late.waitFor(ready, (m) => m.retain)).payload).toBe("0");
      } finally {
        await late.close();
      }

      const startedAt = observer.received.length;
      const second = await startBridge(env);
      children.push(second);
      await observer.waitFor(ready, (m) => observer.received.indexOf(m) >= startedAt && m.payload === "1", 10_000);
      const published = observer.received.slice(startedAt);
      expect(published[0]).toMatchObject({ topic: ready, payload: "0" });
      expect(published.filter((m) => m.topic === ready).map((m) => m.payload)).toEqual(["0", "1"]);
      // "1" comes once the devices are restored and presented.
      const readyAt = published.findIndex((m) => m.topic === ready && m.payload === "1");
      const deviceTopics = published.slice(0, readyAt).filter((m) => m.topic.startsWith("/devices/dev"));
      expect(new Set(deviceTopics.map((m) => m.topic.split("/")[2]))).toEqual(new Set(DEVICES));
    } finally {
      await observer.close();
    }
  });

  it("shuts down cleanly on SIGTERM: exit 0, WAL folded into the database", async () => {
    const child = await startBridge(env);
    children.push(child);
    await Promise.all(DEVICES.map((d, i) => setVolume(child.url, d, 50 + i)));
    child.proc.kill("SIGTERM");
    expect(await child.exited).toEqual({ code: 0, signal: null });
    expect(child.output.join("\n")).toContain("bridge stopped");
    const wal = await stat(`${env.STATE_PATH}-wal`).catch(() => null);
    expect(wal === null || wal.size === 0).toBe(true);

    // The restart runs what `npm start` runs: the bundle built from this source.
    buildBundle();
    const again = await startBridge({ ...env, ...BUNDLE_ENV }, 20_000, BUNDLE_ENTRY);
    children.push(again);
    const res = await fetch(`${again.url}/devices/dev9/state`);
    expect(((await res.json()) as { state: { volume: number } }).state.volume).toBe(59);
    await setVolume(again.url, "dev9", 60);
    again.proc.kill("SIGTERM");
    expect(await again.exited).toEqual({ code: 0, signal: null });
  });

  it("exits 2 naming file and field when the configuration is bad", async () => {
    const configDir = await writeConfigDir(join(dir.path, "bad"), {
      devices: [{ ...simulatedDevice("tv"), commands: { power: { params: [{ name: "on", type: "bool" }] } } }],
    });
    const badSchema = await runToExit({ ...env, CONFIG_DIR: configDir });
    expect(badSchema.code).toBe(2);
    expect(badSchema.stderr).toMatch(/bad\/config\/devices\/tv\.json: commands\.power\.params\[0\]\.type: .*expected one of/);

    const driverProblem = await writeConfigDir(join(dir.path, "driver"), {
      devices: [simulatedDevice("amp", { driver: "teleporter" })],
    });
    const badDriver = await runToExit({ ...env, CONFIG_DIR: driverProblem });
    expect(badDriver.code).toBe(2);
    expect(badDriver.stderr).toMatch(/driver\/config\/devices\/amp\.json: driver: unknown driver "teleporter"/);
  });

  it("lists driver problems and scenario problems together in one run", async () => {
    const configDir = await writeConfigDir(join(dir.path, "both"), {
      devices: [simulatedDevice("tv", { commands: { fly: { params: [] } } })],
      scenarios: [{ scenario_id: "movie", name: "Movie", devices: ["nobody"], startup: [] }],
    });
    const result = await runToExit({ ...env, CONFIG_DIR: configDir });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/both\/config\/devices\/tv\.json: commands\.fly: the simulated driver has no command "fly"/);
    expect(result.stderr).toMatch(/both\/config\/scenarios\/movie\.json: devices\[0\]: unknown device "nobody"/);
  });

  it("exits 2 naming the path when CONFIG_DIR does not exist, instead of starting on defaults", async () => {
    const result = await runToExit({ ...env, CONFIG_DIR: join(dir.path, "typo-config") });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/typo-config: configuration directory does not exist/);
  });

  it("exits 1 with a clear message when the database cannot be opened", async () => {
    const result = await runToExit({ ...env, STATE_PATH: "/proc/version/state.db" });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/failed to start: cannot (create directory for|open) state database \/proc\/version\/state\.db/);
  });
});
