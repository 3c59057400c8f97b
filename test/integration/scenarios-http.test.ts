import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { readStoredValue } from "../helpers/sqlite.js";

const scenarioFixtures = [
  {
    scenario_id: "watch_tv",
    name: "Watch TV",
    names: { en: "Watch TV", ru: "Телевизор" },
    description: "TV on its tuner, sound through the amp",
    room: "living_room",
    roles: { display: "tv", audio: "amp" },
    devices: ["tv", "amp"],
    startup: [
      { role: "display", action: "power_on", condition: "power == false", delay_after_ms: 100 },
      { device: "tv", action: "input", params: { input: "tv" } },
      { role: "audio", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 30 } },
    ],
    shutdown: [
      { device: "tv", action: "power_off" },
      { device: "amp", action: "input", params: { input: "hdmi1" } },
      { device: "amp", action: "power_off" },
    ],
  },
  {
    scenario_id: "music",
    name: "Music",
    roles: { audio: "amp" },
    devices: ["amp"],
    startup: [
      { device: "amp", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 45 } },
    ],
    shutdown: [{ device: "amp", action: "power_off" }],
  },
];

describe("scenario HTTP API (SQLite + aedes + inject)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let config: AppConfig;
  let dbPath: string;
  const running: RunningApp[] = [];

  async function start(): Promise<RunningApp> {
    const r = await startApp(config);
    running.push(r);
    return r;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    config = await testConfig(dir.path, broker.url, { scenarios: scenarioFixtures });
    dbPath = join(dir.path, "state.db");
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    await broker.close();
    await dir.remove();
  });

  it("lists scenarios with their names and serves the full definition with steps and conditions", async () => {
    const { app } = await start();
    const list = (await app.inject({ url: "/scenarios" })).json();
    expect(list.map((s: { id: string }) => s.id)).toEqual(["music", "watch_tv"]);
    expect(list[1]).toMatchObject({ names: { en: "Watch TV", ru: "Телевизор" }, roles: { display: "tv", audio: "amp" } });
    expect(list[0].names).toBeNull();

    const def = await app.inject({ url: "/scenario/definition/watch_tv" });
    expect(def.statusCode).toBe(200);
    expect(def.json()).toMatchObject({
      scenario_id: "watch_tv",
      room: "living_room",
      file: "config/scenarios/watch_tv.json",
      startup: [
        { device: "tv", role: "display", action: "power_on", params: {}, condition: "power == false", delay_after_ms: 100 },
        { device: "tv", role: null, action: "input", params: { input: "tv" }, condition: null, delay_after_ms: null },
        { device: "amp", role: "audio", action: "power_on" },
        { device: "amp", action: "volume", params: { level: 30 } },
      ],
      shutdown: [
        { device: "tv", action: "power_off" },
        { device: "amp", action: "input" },
        { device: "amp", action: "power_off" },
      ],
    });
    const missing = await app.inject({ url: "/scenario/definition/nope" });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe("scenario_not_found");
  });

  it("start -> 409 while active -> same-scenario switch is a no-op -> shutdown -> 404 -> restart restores none", async () => {
    const { app } = await start();
    const none = (await app.inject({ url: "/scenario/state" })).json();
    expect(none).toEqual({ scenario_id: null, devices: {}, switched_at: null, failed_steps: [] });

    const started = await app.inject({ method: "POST", url: "/scenario/start", payload: { id: "watch_tv" } });
    expect(started.statusCode).toBe(200);
    expect(started.json()).toMatchObject({ operation: "start", success: true, from: null, to: "watch_tv", failed_steps: [] });
    expect(started.json().state.devices.tv).toMatchObject({ power: true, input: "tv" });

    const conflict = await app.inject({ method: "POST", url: "/scenario/start", payload: { id: "music" } });
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().error).toMatchObject({ code: "scenario_active", message: expect.stringMatching(/watch_tv/) });

    const changes: string[] = [];
    app.bridge.bus.on("device.state", (e) => void changes.push(e.deviceId));
    const again = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "watch_tv" } });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ success: true, noop: true, from: "watch_tv", to: "watch_tv", failed_steps: [] });
    expect(changes).toEqual([]);

    const down = await app.inject({ method: "POST", url: "/scenario/shutdown" });
    expect(down.statusCode).toBe(200);
    expect(down.json()).toMatchObject({ operation: "shutdown", success: true, from: "watch_tv", to: null });
    expect((await app.inject({ url: "/devices/tv/state" })).json().state.power).toBe(false);
    expect((await app.inject({ url: "/devices/amp/state" })).json().state).toMatchObject({ power: false, input: "hdmi1" });

    const state = (await app.inject({ url: "/scenario/state" })).json();
    expect(state).toMatchObject({ scenario_id: null, devices: {}, failed_steps: [] });
    expect(typeof state.switched_at).toBe("string");
    expect(await readStoredValue(dbPath, "scenario:last")).toEqual(state);

    const twice = await app.inject({ method: "POST", url: "/scenario/shutdown" });
    expect(twice.statusCode).toBe(404);
    expect(twice.json().error.code).toBe("no_active_scenario");

    await app.close();
    running.pop();
    const second = await start();
    expect((await second.app.inject({ url: "/scenario/state" })).json()).toEqual(state);
    expect((await second.app.inject({ method: "POST", url: "/scenario/shutdown" })).statusCode).toBe(404);
    expect((await second.app.inject({ method: "POST", url: "/scenario/start", payload: { id: "music" } })).statusCode).toBe(200);
  });

  it("switch body takes graceful; shared devices are never power-cycled either way", async () => {
    const { app } = await start();
    const offs: string[] = [];
    app.bridge.bus.on("device.state", (e) => {
      if (!e.restored && e.state.power === false) offs.push(e.deviceId);
    });
    await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "watch_tv" } });
    const music = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "watch_tv", graceful: "yes" } });
    expect(music.statusCode).toBe(400);

    const abrupt = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music", graceful: false } });
    expect(abrupt.statusCode).toBe(200);
    expect(abrupt.json().skipped_steps).toEqual([
      { phase: "shutdown", index: 2, device: "amp", action: "power_off", reason: "shared_power" },
      { phase: "startup", index: 0, device: "amp", action: "power_on", reason: "shared_power" },
    ]);
    // Non-graceful ran watch_tv's amp.input step; the amp itself stayed on.
    expect((await app.inject({ url: "/devices/amp/state" })).json().state).toMatchObject({ power: true, input: "hdmi1", volume: 45 });

    const back = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "watch_tv" } });
    expect(back.json()).toMatchObject({ success: true, from: "music", to: "watch_tv" });
    const graceful = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } });
    expect(graceful.json().skipped_steps.map((s: { index: number; reason: string }) => `${s.index}:${s.reason}`)).toEqual([
      "1:shared_device",
      "2:shared_device",
      "0:shared_power",
    ]);
    expect(offs).toEqual(["tv", "tv"]);
  });

  it("role_action acts on the active scenario's role device with DESIGN §6 errors", async () => {
    const { app } = await start();
    const post = (payload: unknown) => app.inject({ method: "POST", url: "/scenario/role_action", payload: payload as object });

    const noScenario = await post({ role: "audio", action: "volume_up" });
    expect(noScenario.statusCode).toBe(404);
    expect(noScenario.json().error.code).toBe("no_active_scenario");

    await app.inject({ method: "POST", url: "/scenario/start", payload: { id: "watch_tv" } });
    const ok = await post({ role: "audio", action: "volume", params: { level: 12 } });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ scenario_id: "watch_tv", role: "audio", device: "amp", action: "volume", state: { volume: 12 } });
    expect(typeof ok.json().updated_at).toBe("string");
    expect(((await readStoredValue(dbPath, "device:amp")) as { state: { volume: number } }).state.volume).toBe(12);

    const cases: Array<[unknown, number, string]> = [
      [{ role: "lights", action: "power_on" }, 404, "role_not_found"],
      [{ role: "display", action: "warp" }, 400, "unknown_action"],
      [{ role: "audio", action: "volume", params: { level: 101 } }, 400, "invalid_params"],
      [{ role: "audio" }, 400, "invalid_request"],
      [{ role: "audio", action: "volume_up", extra: 1 }, 400, "invalid_request"],
    ];
    for (const [body, status, code] of cases) {
      const res = await post(body);
      expect(res.statusCode, res.body).toBe(status);
      expect(res.json().error.code).toBe(code);
    }
  });
});
