import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import { BRIDGE_DEVICE_ID, bridgeWill } from "../../app/mqtt/bridge-device.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { StoreCorruptError } from "../../app/state/store.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { readRows, readStoredValue } from "../helpers/sqlite.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const scenarios = [
  {
    scenario_id: "watch_tv",
    name: "Watch TV",
    devices: ["tv", "amp"],
    startup: [
      { device: "tv", action: "power_on", delay_after_ms: 100 },
      { device: "tv", action: "input", params: { input: "tv" } },
      { device: "amp", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 30 } },
    ],
    shutdown: [
      { device: "tv", action: "power_off" },
      { device: "amp", action: "power_off" },
    ],
  },
  {
    scenario_id: "music",
    name: "Music",
    devices: ["amp"],
    startup: [
      { device: "amp", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 45 } },
    ],
    shutdown: [{ device: "amp", action: "power_off" }],
  },
];

describe("bridge end to end (SQLite file + aedes over TCP + HTTP)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let config: AppConfig;
  let dbPath: string;
  const running: RunningApp[] = [];
  const clients: TestMqttClient[] = [];

  async function start(): Promise<RunningApp> {
    const r = await startApp(config);
    running.push(r);
    return r;
  }
  async function peer(): Promise<TestMqttClient> {
    const c = await TestMqttClient.connect(broker.url);
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    config = await testConfig(dir.path, broker.url, { scenarios });
    dbPath = join(dir.path, "state.db");
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const r of running.splice(0)) await r.app.close();
    await broker.close();
    await dir.remove();
  });

  it("HTTP action -> committed row -> MQTT value -> restart -> same state", async () => {
    const observer = await peer();
    await observer.subscribe("/devices/tv/#");
    const { app } = await start();

    const res = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 63 } } });
    expect(res.statusCode).toBe(200);
    expect(res.json().state).toMatchObject({ volume: 63 });

    // Acknowledged means committed: the row is in the file, read by another connection.
    expect(await readStoredValue(dbPath, "device:tv")).toEqual({
      driver: "simulated",
      version: 1,
      state: { power: false, volume: 63, muted: false, input: "hdmi1" },
      updated_at: res.json().updated_at,
    });
    const value = await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "63");
    expect(value.payload).toBe("63");
    const meta = await observer.waitFor("/devices/tv/controls/volume/meta");
    expect(JSON.parse(meta.payload)).toMatchObject({ type: "range", readonly: false, min: 0, max: 100 });
    expect(JSON.parse((await observer.waitFor("/devices/tv/meta")).payload)).toEqual({
      driver: "wb-bridge",
      title: { en: "Device tv" },
    });

    const before = (await app.inject({ url: "/devices/tv/state" })).json();
    await app.close();
    running.pop();

    const second = await start();
    const after = (await second.app.inject({ url: "/devices/tv/state" })).json();
    expect(after).toEqual({ ...before, restored: true });
    expect(after.state.volume).toBe(63);
  });

  it("GET /devices/:id/state says restored: true for a state restored at start until a successful action confirms it", async () => {
    const { app } = await start();
    const fresh = (await app.inject({ url: "/devices/tv/state" })).json();
    // Defaults, not restored: nothing was stored yet.
    expect(fresh).toMatchObject({ id: "tv", restored: false });
    const acted = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 41 } } });
    expect(acted.json()).toMatchObject({ state: { volume: 41 }, restored: false });
    await app.close();
    running.pop();

    // Another bridge over the same SQLite file.
    const second = (await start()).app;
    const restored = await second.inject({ url: "/devices/tv/state" });
    expect(restored.statusCode).toBe(200);
    expect(restored.json()).toMatchObject({ state: { volume: 41 }, reachable: true, restored: true });
    // amp was never stored: its defaults are not a restored state.
    expect((await second.inject({ url: "/devices/amp/state" })).json().restored).toBe(false);

    // A failed action confirms nothing.
    const bad = await second.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 500 } } });
    expect(bad.statusCode).toBe(400);
    expect((await second.inject({ url: "/devices/tv/state" })).json().restored).toBe(true);

    const action = await second.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume_up" } });
    expect(action.statusCode).toBe(200);
    expect(action.json().restored).toBe(false);
    expect((await second.inject({ url: "/devices/tv/state" })).json()).toMatchObject({ restored: false });
  });

  it("MQTT /on command -> committed row -> value published -> restart -> same state", async () => {
    const observer = await peer();
    await observer.subscribe("/devices/amp/controls/+");
    const { app } = await start();

    await observer.publish("/devices/amp/controls/power/on", "1");
    await observer.waitFor("/devices/amp/controls/power", (m) => m.payload === "1");
    await observer.publish("/devices/amp/controls/volume/on", "27");
    await observer.waitFor("/devices/amp/controls/volume", (m) => m.payload === "27");
    await observer.publish("/devices/amp/controls/input/on", "hdmi2");
    await observer.waitFor("/devices/amp/controls/input", (m) => m.payload === "hdmi2");
    // A pushbutton control: payload ignored, action performed.
    await observer.publish("/devices/amp/controls/volume_up/on", "1");
    await observer.waitFor("/devices/amp/controls/volume", (m) => m.payload === "32");
    // The same value again still gets its answer on the value topic.
    const earlier = observer.on("/devices/amp/controls/volume");
    await observer.publish("/devices/amp/controls/volume/on", "32");
    await observer.waitFor("/devices/amp/controls/volume", (m) => m.payload === "32" && !earlier.includes(m));

    const stored = (await readStoredValue(dbPath, "device:amp")) as { state: Record<string, unknown> };
    expect(stored.state).toEqual({ power: true, volume: 32, muted: false, input: "hdmi2" });

    await app.close();
    running.pop();
    const second = await start();
    expect((await second.app.inject({ url: "/devices/amp/state" })).json().state).toEqual(stored.state);
  });

  it("restores the last scenario without sending any device command", async () => {
    const { app } = await start();
    const switched = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "watch_tv" } });
    expect(switched.statusCode).toBe(200);
    const music = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } });
    expect(music.statusCode).toBe(200);
    // The TV is not part of "music": switched off; the amp stays on with the new volume.
    expect((await app.inject({ url: "/devices/tv/state" })).json().state.power).toBe(false);
    expect((await app.inject({ url: "/devices/amp/state" })).json().state).toMatchObject({ power: true, volume: 45 });
    const state = (await app.inject({ url: "/scenario/state" })).json();
    expect(state).toMatchObject({ scenario_id: "music", failed_steps: [] });
    expect(state.devices.amp).toMatchObject({ power: true, volume: 45 });
    expect(await readStoredValue(dbPath, "scenario:last")).toEqual(state);

    const rowsBefore = await readRows(dbPath, "SELECT key, value, updated_at FROM state_store ORDER BY key");
    await app.close();
    running.pop();

    const spy = await peer();
    await spy.subscribe("/devices/+/controls/+/on");
    const second = await start();
    const liveChanges: string[] = [];
    second.app.bridge.bus.on("device.state", (e) => {
      if (!e.restored) liveChanges.push(e.deviceId);
    });
    expect((await second.app.inject({ url: "/scenario/state" })).json()).toEqual(state);
    // Nothing was re-run: no /on commands, no live state changes, no rows rewritten.
    expect(spy.on("/devices/+/controls/+/on")).toEqual([]);
    expect(liveChanges).toEqual([]);
    expect(await readRows(dbPath, "SELECT key, value, updated_at FROM state_store ORDER BY key")).toEqual(rowsBefore);
  });

  it("never executes a retained /on command (stale commands must not replay at start)", async () => {
    const stale = await peer();
    await stale.publish("/devices/tv/controls/volume/on", "77", true);
    const observer = await peer();
    await observer.subscribe("/devices/tv/controls/+");
    const { app, logs } = await start();
    // A live command after the retained one: once it is applied, the retained one was seen and skipped.
    await observer.publish("/devices/tv/controls/power/on", "1");
    await observer.waitFor("/devices/tv/controls/power", (m) => m.payload === "1");
    expect((await app.inject({ url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 20, power: true });
    expect(logs.some((l) => l.includes("ignoring retained command"))).toBe(true);
    await stale.publish("/devices/tv/controls/volume/on", "", true);
  });

  it("ignores an empty publish on an /on topic (a client clearing its retained command): no action, no error flag", async () => {
    const observer = await peer();
    await observer.subscribe("/devices/tv/controls/#");
    const { app, logs } = await start();
    await observer.waitFor("/devices/tv/controls/power/meta/error", (m) => m.payload === "");
    const flagsBefore = observer.on("/devices/tv/controls/+/meta/error").length;
    // The broker forwards the clearing publish to live subscribers as an ordinary, empty message.
    await observer.publish("/devices/tv/controls/volume/on", "", true);
    await observer.publish("/devices/tv/controls/power/on", "", true);
    // A live command after them: once it is applied, both empty ones were handled.
    await observer.publish("/devices/tv/controls/input/on", "tv");
    await observer.waitFor("/devices/tv/controls/input", (m) => m.payload === "tv");
    expect(observer.on("/devices/tv/controls/+/meta/error").slice(flagsBefore)).toEqual([]);
    expect((await app.inject({ url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 20, power: false, input: "tv" });
    expect(logs.some((l) => l.includes("ignoring an empty command"))).toBe(true);
  });

  it("answers malformed MQTT payloads on meta/error, keeps state, and clears the error on success", async () => {
    const observer = await peer();
    await observer.subscribe("/devices/tv/controls/#");
    const { app } = await start();

    await observer.publish("/devices/tv/controls/volume/on", "loud");
    // At start every control's error is cleared (""); the bad payload sets "w".
    await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "w");
    await observer.publish("/devices/tv/controls/volume/on", "250");
    await observer.publish("/devices/tv/controls/input/on", "vga");
    await observer.waitFor("/devices/tv/controls/input/meta/error", (m) => m.payload === "w");
    await observer.publish("/devices/tv/controls/nonexistent/on", "1");
    await observer.waitFor("/devices/tv/controls/nonexistent/meta/error", (m) => m.payload === "w");
    expect((await app.inject({ url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 20, input: "hdmi1" });

    const before = observer.on("/devices/tv/controls/volume/meta/error");
    await observer.publish("/devices/tv/controls/volume/on", "55");
    await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "55");
    await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "" && !before.includes(m));
    expect((await app.inject({ url: "/health/ready" })).statusCode).toBe(200);
  });

  it("rejects bad HTTP input with DESIGN §6 errors and loses nothing", async () => {
    const { app } = await start();
    await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 40 } } });
    const post = (url: string, payload: string, type = "application/json") =>
      app.inject({ method: "POST", url, payload, headers: { "content-type": type } });

    const cases: Array<[Awaited<ReturnType<typeof post>>, number, string | RegExp]> = [
      [await post("/devices/tv/action", '{"action": "volume",'), 400, /json/i],
      [await post("/devices/tv/action", "{}"), 400, /body\.action/],
      [await post("/devices/tv/action", '{"action":"warp"}'), 400, /has no action "warp"/],
      [await post("/devices/tv/action", '{"action":"volume","params":{"level":"high"}}'), 400, /level/],
      [await post("/devices/tv/action", '{"action":"volume","params":{"level":101}}'), 400, /level/],
      [await post("/devices/tv/action", '{"action":"volume","params":{"level":5,"extra":1}}'), 400, /extra/],
      [await post("/devices/tv/action", '{"action":"volume","junk":true}'), 400, /junk/],
      [await post("/devices/nope/action", '{"action":"volume"}'), 404, /unknown device "nope"/],
      [await post("/devices/tv/action", JSON.stringify({ action: "volume", pad: "x".repeat(300_000) })), 413, /.+/],
      [await post("/scenario/switch", '{"id":"nope"}'), 404, /unknown scenario "nope"/],
      [await app.inject({ url: "/devices/nope/state" }), 404, /unknown device/],
      [await app.inject({ url: "/no/such/route" }), 404, /no route/],
    ];
    for (const [res, status, message] of cases) {
      expect(res.statusCode, res.body).toBe(status);
      const body = res.json();
      expect(typeof body.error.code).toBe("string");
      expect(body.error.message).toMatch(message);
    }
    expect((await app.inject({ url: "/devices/tv/state" })).json().state.volume).toBe(40);
    expect(((await readStoredValue(dbPath, "device:tv")) as { state: { volume: number } }).state.volume).toBe(40);
  });

  it("runs one device's actions in arrival order and commits the last", async () => {
    const { app } = await start();
    const order: number[] = [];
    app.bridge.bus.on("device.state", (e) => {
      if (e.deviceId === "tv" && !e.restored) order.push(e.state.volume as number);
    });
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => app.bridge.devices.performAction("tv", "volume", { level: i + 1 }, "http")),
    );
    expect(results.map((r) => r.state.volume)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(order).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(((await readStoredValue(dbPath, "device:tv")) as { state: { volume: number } }).state.volume).toBe(40);
  });

  it("starts from defaults when a stored value fails validation, keeps the row, logs only the key", async () => {
    const seed = new SQLiteStateStore({ path: dbPath });
    await seed.initialize();
    await seed.set("device:tv", { driver: "simulated", version: 1, state: { volume: "MARKER-loud-value" } });
    await seed.set("device:amp", { driver: "simulated", version: 1, state: { power: true, volume: 12, muted: false, input: "tv" } });
    await seed.close();

    const { app, logs } = await start();
    expect((await app.inject({ url: "/devices/tv/state" })).json()).toEqual({
      id: "tv",
      state: { power: false, volume: 20, muted: false, input: "hdmi1" },
      updated_at: null,
      reachable: true,
      // Its stored value was unusable: defaults are not a restored state.
      restored: false,
    });
    expect((await app.inject({ url: "/devices/amp/state" })).json().state).toEqual({
      power: true,
      volume: 12,
      muted: false,
      input: "tv",
    });
    expect(await readStoredValue(dbPath, "device:tv")).toEqual({
      driver: "simulated",
      version: 1,
      state: { volume: "MARKER-loud-value" },
    });
    expect(logs.some((l) => l.includes('"key":"device:tv"'))).toBe(true);
    expect(logs.join("\n")).not.toContain("MARKER");
  });

  it("refuses actions with 409 on a device whose stored state a newer bridge wrote, leaving the row as it was", async () => {
    const seed = new SQLiteStateStore({ path: dbPath });
    await seed.initialize();
    // Row schema newer than the device namespace knows, and record version newer than the driver's.
    const rowNewer = { driver: "simulated", version: 1, state: { power: true, volume: 33, ambilight: "warm" } };
    const recordNewer = { driver: "simulated", version: 2, state: { power: true, volume: 44, eq: { bass: 3 } } };
    await seed.write([
      { key: "device:tv", value: rowNewer, version: 2 },
      { key: "device:amp", value: recordNewer },
    ]);
    await seed.close();
    const before = await readRows(dbPath, "SELECT key, value, version, updated_at FROM state_store ORDER BY key");

    const observer = await peer();
    await observer.subscribe("/devices/amp/controls/#");
    const { app } = await start();
    await observer.publish("/devices/amp/controls/volume/on", "7");
    await observer.waitFor("/devices/amp/controls/volume/meta/error", (m) => m.payload !== "");
    for (const id of ["tv", "amp"]) {
      const res = await app.inject({ method: "POST", url: `/devices/${id}/action`, payload: { action: "volume", params: { level: 5 } } });
      expect(res.statusCode).toBe(409);
      expect(res.json().error).toMatchObject({
        code: "state_version_unsupported",
        message: expect.stringMatching(/written by a newer version of the bridge/),
      });
    }
    expect(await readRows(dbPath, "SELECT key, value, version, updated_at FROM state_store ORDER BY key")).toEqual(before);
  });

  it("republishes everything and resubscribes after the broker restarts without persistence", async () => {
    const { app } = await start();
    await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 71 } } });
    const port = broker.port;
    await broker.close();
    const { startEmbeddedBroker } = await import("../../app/mqtt/broker.js");
    const { createLogger } = await import("../../app/observability/logger.js");
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });

    // A fresh broker knows nothing; the bridge must bring back its retained state.
    const observer = await peer();
    await observer.subscribe("/devices/#");
    await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "71", 10_000);
    await observer.waitFor("/devices/wb_bridge/controls/ready", (m) => m.payload === "1", 10_000);
    expect(app.bridge.mqtt.connectCount).toBeGreaterThanOrEqual(2);
    // Commands work again: the subscription was renewed.
    await observer.publish("/devices/tv/controls/volume/on", "72");
    await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "72");
  });

  it("publishes the bridge device: ready only after restore, offline mark on clean shutdown", async () => {
    const observer = await peer();
    await observer.subscribe("/devices/wb_bridge/#");
    const { app } = await start();
    expect((await observer.waitFor("/devices/wb_bridge/controls/ready", (m) => m.payload === "1")).payload).toBe("1");
    expect((await observer.waitFor("/devices/wb_bridge/controls/version")).payload).toMatch(/^\d+\.\d+\.\d+/);
    expect((await app.inject({ url: "/health" })).json()).toMatchObject({ status: "ok", phase: "ready", devices: 2 });
    await app.close();
    running.pop();
    await observer.waitFor("/devices/wb_bridge/controls/ready", (m) => m.payload === "0");
    expect((await observer.waitFor("/devices/wb_bridge/meta/error", (m) => m.payload === "r")).payload).toBe("r");
  });

  it("publishes each /devices/wb_bridge topic once at start and once again after a reconnect", async () => {
    // The bridge reaches the broker through a proxy the test can cut; the observer stays
    // connected to the broker itself, so it sees every publication across the reconnect.
    const proxy = await TcpProxy.start(broker.host, broker.port);
    try {
      const proxied = await testConfig(join(dir.path, "proxied"), `mqtt://127.0.0.1:${proxy.port}`, { scenarios });
      const observer = await peer();
      const filter = `/devices/${BRIDGE_DEVICE_ID}/#`;
      await observer.subscribe(filter);
      const r = await startApp(proxied);
      running.push(r);
      const bridge = r.app.bridge;
      const readyTopic = `/devices/${BRIDGE_DEVICE_ID}/controls/ready`;
      await observer.waitFor(readyTopic, (m) => m.payload === "1");
      /** topic -> payloads, in arrival order, of the bridge's publications from `from` on. */
      const publications = (from: number) => {
        const by = new Map<string, string[]>();
        for (const m of observer.received.slice(from)) by.set(m.topic, [...(by.get(m.topic) ?? []), m.payload]);
        return by;
      };
      const once = (by: Map<string, string[]>) =>
        [...by]
          .filter(([topic, payloads]) => topic !== readyTopic && payloads.length !== 1)
          .map(([topic, payloads]) => `${topic}: ${payloads.length}`);

      const atStart = publications(0);
      expect(once(atStart)).toEqual([]);
      expect(atStart.get(readyTopic)).toEqual(["0", "1"]);
      const topics = [...atStart.keys()].sort();
      expect(topics).toHaveLength(7);

      // The connection drops: the broker publishes the will; the bridge reconnects.
      const lost = new Promise<void>((resolve) => {
        const remove = bridge.mqtt.onDisconnect(() => {
          remove();
          resolve();
        });
      });
      const connectsBefore = bridge.mqtt.connectCount;
      const cutAt = observer.received.length;
      proxy.cut();
      await lost;
      await observer.waitFor(bridgeWill.topic, (m) => observer.received.indexOf(m) >= cutAt && m.payload === bridgeWill.payload);
      const from = observer.received.length;
      proxy.restore();
      // The republish ends by clearing the device's error mark.
      const errorTopic = `/devices/${BRIDGE_DEVICE_ID}/meta/error`;
      await observer.waitFor(errorTopic, (m) => observer.received.indexOf(m) >= from && m.payload === "", 10_000);
      expect(bridge.mqtt.connectCount).toBe(connectsBefore + 1);
      const again = publications(from);
      expect(once(again)).toEqual([]);
      expect(again.get(readyTopic)).toEqual(["1"]);
      expect([...again.keys()].sort()).toEqual(topics);
    } finally {
      await proxy.close();
    }
  });

  it("refuses to start on a damaged database, moves it aside, and leaves nothing running", async () => {
    const { writeFile } = await import("node:fs/promises");
    await writeFile(dbPath, "garbage ".repeat(1000));
    const { buildApp } = await import("../../app/server.js");
    const { captureLogger } = await import("../helpers/fixtures.js");
    const { log } = captureLogger();
    const app = await buildApp(config, { logger: log });
    await expect(app.ready()).rejects.toBeInstanceOf(StoreCorruptError);
    expect(app.bridge.phase).toBe("failed");
    expect(app.bridge.mqtt.connected).toBe(false);
    const rows = await readRows(dbPath, "SELECT name FROM sqlite_master").catch(() => null);
    // A fresh empty database was not silently created in its place.
    expect(rows === null || rows.length === 0).toBe(true);
  });

  it("refuses a device with an unknown driver before anything starts", async () => {
    const { buildApp } = await import("../../app/server.js");
    const bad = await testConfig(join(dir.path, "other"), broker.url, {
      devices: [simulatedDevice("tv", { driver: "teleporter" })],
    });
    await expect(buildApp(bad)).rejects.toThrow(/config\/devices\/tv\.json: driver: unknown driver "teleporter"/);
  });
});
