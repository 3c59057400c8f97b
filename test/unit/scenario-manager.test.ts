import { describe, expect, it } from "vitest";
import { loadConfig } from "../../app/config/loader.js";
import { DriverRegistry } from "../../app/devices/driver.js";
import { simulatedDriverFactory } from "../../app/devices/drivers/simulated.js";
import { DeviceManager } from "../../app/devices/manager.js";
import type { BridgeEvents } from "../../app/lifespan.js";
import type { MqttGateway } from "../../app/mqtt/gateway.js";
import { createLogger } from "../../app/observability/logger.js";
import { ScenarioManager } from "../../app/scenarios/manager.js";
import { POWER_ACTIONS } from "../../app/scenarios/runner.js";
import type { ScenarioChangeResult } from "../../app/scenarios/state.js";
import { EventBus } from "../../app/shared/event-bus.js";
import { MemoryStateStore } from "../../app/state/memory-store.js";
import { StateService } from "../../app/state/service.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";

/** An MQTT gateway that is never connected: these tests are about ordering and persistence. */
const offlineMqtt = {
  connected: false,
  subscribe: async () => async () => undefined,
  onEveryConnection: async () => () => undefined,
  publish: async () => {
    throw new Error("offline");
  },
} as unknown as MqttGateway;

const tvScenario = {
  scenario_id: "tv",
  name: "TV",
  roles: { display: "tv", audio: "amp" },
  devices: ["tv", "amp"],
  startup: [
    { device: "tv", action: "power_on", delay_after_ms: 250 },
    { role: "audio", action: "power_on" },
    { device: "amp", action: "input", params: { input: "tv" } },
  ],
  shutdown: [
    { device: "tv", action: "power_off" },
    { device: "amp", action: "input", params: { input: "hdmi1" } },
    { device: "amp", action: "power_off" },
  ],
};

const readingScenario = {
  scenario_id: "reading",
  name: "Reading",
  devices: ["amp", "light"],
  startup: [
    { device: "light", action: "power_on" },
    { device: "amp", action: "power_on" },
    { device: "amp", action: "input", params: { input: "hdmi2" } },
  ],
  shutdown: [{ device: "light", action: "power_off" }],
};

async function setup(store = new MemoryStateStore(), scenarios: Record<string, unknown>[] = [tvScenario, readingScenario]) {
  const dir = await tempDir();
  const configDir = await writeConfigDir(dir.path, {
    devices: [
      simulatedDevice("tv"),
      simulatedDevice("amp"),
      simulatedDevice("light"),
      // Its command accepts "tv", its hardware (driver config) does not: fails at run time.
      simulatedDevice("odd", { config: { inputs: ["hdmi1"] } }),
    ],
    scenarios,
  });
  const config = await loadConfig({ configDir, env: {}, cwd: dir.path });
  await dir.remove();
  const log = createLogger("silent");
  await store.initialize();
  const state = new StateService(store, log);
  const bus = new EventBus<BridgeEvents>(log);
  const devices = new DeviceManager({
    devices: config.devices,
    drivers: new DriverRegistry([simulatedDriverFactory]),
    state,
    mqtt: offlineMqtt,
    bus,
    log,
  });
  const actions: string[] = [];
  bus.on("device.state", (e) => {
    if (!e.restored) actions.push(`${e.deviceId}:${e.state.power ? "on" : "off"}:${String(e.state.input)}`);
  });
  const events: Array<{ name: string; payload: unknown }> = [];
  bus.on("scenario.switched", (payload) => void events.push({ name: "scenario.switched", payload }));
  bus.on("scenario.shutdown", (payload) => void events.push({ name: "scenario.shutdown", payload }));
  const sleeps: number[] = [];
  const scenarioManager = new ScenarioManager({
    scenarios: config.scenarios,
    devices,
    state,
    bus,
    log,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    now: () => new Date("2026-01-02T03:04:05.000Z"),
  });
  await devices.initialize();
  await scenarioManager.initialize();
  return { store, devices, scenarios: scenarioManager, actions, sleeps, state, events };
}

const skipped = (r: ScenarioChangeResult) => r.skipped_steps.map((s) => `${s.phase}[${s.index}] ${s.device}.${s.action}: ${s.reason}`);
const failed = (r: ScenarioChangeResult) => r.failed_steps.map((f) => `${f.phase}[${f.index}] ${f.device}.${f.action}`);

describe("ScenarioManager", () => {
  it("runs startup steps in order with their delays and persists scenario:last", async () => {
    const { scenarios, actions, sleeps, store } = await setup();
    const result = await scenarios.switch("tv");
    expect(actions).toEqual(["tv:on:hdmi1", "amp:on:hdmi1", "amp:on:tv"]);
    expect(sleeps).toEqual([250]);
    const state = {
      scenario_id: "tv",
      devices: {
        tv: { power: true, volume: 20, muted: false, input: "hdmi1" },
        amp: { power: true, volume: 20, muted: false, input: "tv" },
      },
      switched_at: "2026-01-02T03:04:05.000Z",
      failed_steps: [],
    };
    expect(result).toEqual({
      operation: "switch",
      success: true,
      from: null,
      to: "tv",
      noop: false,
      failed_steps: [],
      skipped_steps: [],
      state,
    });
    expect(await store.get("scenario:last")).toEqual(state);
  });

  it("names the power actions in one constant", () => {
    expect([...POWER_ACTIONS].sort()).toEqual(["power", "power_off", "power_on", "power_toggle"]);
  });

  it("graceful switch: shuts down only unshared outgoing devices and never power-cycles a shared one", async () => {
    const { scenarios, actions } = await setup();
    await scenarios.switch("tv");
    actions.length = 0;
    const result = await scenarios.switch("reading");
    // amp is shared: none of tv's shutdown steps for it run, and reading's amp.power_on is skipped.
    expect(actions).toEqual(["tv:off:hdmi1", "light:on:hdmi1", "amp:on:hdmi2"]);
    expect(skipped(result)).toEqual([
      "shutdown[1] amp.input: shared_device",
      "shutdown[2] amp.power_off: shared_device",
      "startup[1] amp.power_on: shared_power",
    ]);
    expect(result).toMatchObject({ success: true, from: "tv", to: "reading", state: { scenario_id: "reading" } });
  });

  it("non-graceful switch: runs the whole outgoing shutdown except power steps for shared devices", async () => {
    const { scenarios, actions } = await setup();
    await scenarios.switch("tv");
    actions.length = 0;
    const result = await scenarios.switch("reading", { graceful: false });
    // amp.input hdmi1 (not a power step) runs; amp.power_off does not: amp stays on throughout.
    expect(actions).toEqual(["tv:off:hdmi1", "amp:on:hdmi1", "light:on:hdmi1", "amp:on:hdmi2"]);
    expect(actions.some((a) => a.startsWith("amp:off"))).toBe(false);
    expect(skipped(result)).toEqual(["shutdown[2] amp.power_off: shared_power", "startup[1] amp.power_on: shared_power"]);
  });

  it("switching to the active scenario does nothing and succeeds", async () => {
    const { scenarios, actions, store, events } = await setup();
    const first = await scenarios.switch("tv");
    actions.length = 0;
    events.length = 0;
    const stored = await store.get("scenario:last");
    const again = await scenarios.switch("tv", { graceful: false });
    expect(actions).toEqual([]);
    expect(events).toEqual([]);
    expect(again).toEqual({ ...first, from: "tv", noop: true });
    expect(await store.get("scenario:last")).toEqual(stored);
  });

  it("collects step failures (device refuses at run time, condition on a missing field) and runs the rest", async () => {
    const { scenarios, actions } = await setup(undefined, [
      {
        scenario_id: "odd",
        name: "Odd",
        devices: ["odd", "tv"],
        startup: [
          { device: "odd", action: "input", params: { input: "tv" } },
          { device: "tv", action: "power_on", condition: "powr == false" },
          { device: "tv", action: "volume", params: { level: 33 } },
        ],
      },
    ]);
    const result = await scenarios.switch("odd");
    expect(result.success).toBe(false);
    expect(failed(result)).toEqual(["startup[0] odd.input", "startup[1] tv.power_on"]);
    expect(result.failed_steps[0]!.error).toMatch(/has no such input/);
    expect(result.failed_steps[1]!.error).toMatch(/condition "powr == false": .*"powr"/);
    expect(actions).toEqual(["tv:off:hdmi1"]);
    expect(result.state).toMatchObject({ scenario_id: "odd", failed_steps: result.failed_steps });
  });

  it("records a failed step for a device that is not accepting actions", async () => {
    const { scenarios, devices, actions } = await setup();
    await devices.shutdown();
    const result = await scenarios.switch("tv");
    expect(actions).toEqual([]);
    expect(failed(result)).toEqual(["startup[0] tv.power_on", "startup[1] amp.power_on", "startup[2] amp.input"]);
  });

  it("evaluates each condition right before its step, against the state earlier steps left", async () => {
    const { scenarios, actions } = await setup(undefined, [
      {
        scenario_id: "cond",
        name: "Conditions",
        devices: ["tv"],
        startup: [
          { device: "tv", action: "power_on", condition: "power == false" },
          // power is true now (the step above ran): skipped.
          { device: "tv", action: "power", params: { on: false }, condition: "power == false" },
          { device: "tv", action: "input", params: { input: "tv" }, condition: "input != 'tv' && power == true" },
          { device: "tv", action: "volume", params: { level: 5 }, condition: "input == 'hdmi1' || volume == 99" },
        ],
      },
    ]);
    const result = await scenarios.switch("cond");
    expect(actions).toEqual(["tv:on:hdmi1", "tv:on:tv"]);
    expect(skipped(result)).toEqual(["startup[1] tv.power: condition", "startup[3] tv.volume: condition"]);
    expect(result.success).toBe(true);
  });

  it("serializes concurrent switches", async () => {
    const { scenarios } = await setup();
    const [a, b] = await Promise.all([scenarios.switch("tv"), scenarios.switch("reading")]);
    expect(a.to).toBe("tv");
    expect(b).toMatchObject({ from: "tv", to: "reading" });
    expect(scenarios.state()?.scenario_id).toBe("reading");
  });

  it("start runs the startup when none is active and refuses with 409 when one is", async () => {
    const { scenarios, actions } = await setup();
    const started = await scenarios.start("reading");
    expect(started).toMatchObject({ operation: "start", success: true, from: null, to: "reading" });
    expect(actions).toEqual(["light:on:hdmi1", "amp:on:hdmi1", "amp:on:hdmi2"]);
    await expect(scenarios.start("tv")).rejects.toMatchObject({ statusCode: 409, code: "scenario_active" });
    await expect(scenarios.start("reading")).rejects.toMatchObject({ statusCode: 409 });
    expect(actions).toHaveLength(3);
  });

  it("shutdownActive runs the active shutdown, persists no active scenario, and 404s when none is", async () => {
    const { scenarios, actions, store, events } = await setup();
    await expect(scenarios.shutdownActive()).rejects.toMatchObject({ statusCode: 404, code: "no_active_scenario" });
    await scenarios.switch("tv");
    actions.length = 0;
    events.length = 0;
    const result = await scenarios.shutdownActive();
    expect(actions).toEqual(["tv:off:hdmi1", "amp:on:hdmi1", "amp:off:hdmi1"]);
    const none = { scenario_id: null, devices: {}, switched_at: "2026-01-02T03:04:05.000Z", failed_steps: [] };
    expect(result).toEqual({
      operation: "shutdown",
      success: true,
      from: "tv",
      to: null,
      noop: false,
      failed_steps: [],
      skipped_steps: [],
      state: none,
    });
    expect(await store.get("scenario:last")).toEqual(none);
    expect(scenarios.activeScenario()).toBeNull();
    expect(events).toEqual([{ name: "scenario.shutdown", payload: { scenario_id: "tv", success: true, failed_steps: [], state: none } }]);
    await expect(scenarios.shutdownActive()).rejects.toMatchObject({ statusCode: 404 });
    // After a shutdown, start is allowed again.
    await expect(scenarios.start("tv")).resolves.toMatchObject({ to: "tv" });
  });

  it("emits JSON-serializable scenario.switched events", async () => {
    const { scenarios, events } = await setup();
    await scenarios.start("tv");
    await scenarios.switch("reading");
    expect(events.map((e) => e.name)).toEqual(["scenario.switched", "scenario.switched"]);
    const last = events[1]!.payload;
    expect(JSON.parse(JSON.stringify(last))).toEqual(last);
    expect(last).toMatchObject({ from: "tv", to: "reading", operation: "switch", success: true, failed_steps: [] });
    expect(events[0]!.payload).toMatchObject({ from: null, to: "tv", operation: "start" });
  });

  it("performs role actions on the active scenario's role device", async () => {
    const { scenarios, devices } = await setup();
    await expect(scenarios.roleAction("audio", "volume", { level: 10 })).rejects.toMatchObject({
      statusCode: 404,
      code: "no_active_scenario",
    });
    await scenarios.switch("tv");
    const result = await scenarios.roleAction("audio", "volume", { level: 10 });
    expect(result).toMatchObject({ scenario_id: "tv", role: "audio", device: "amp", action: "volume", state: { volume: 10 } });
    expect(devices.getState("amp").state.volume).toBe(10);
    await expect(scenarios.roleAction("lights", "power_on")).rejects.toMatchObject({ statusCode: 404, code: "role_not_found" });
    await expect(scenarios.roleAction("audio", "warp")).rejects.toMatchObject({ statusCode: 400, code: "unknown_action" });
    await expect(scenarios.roleAction("audio", "volume", { level: 500 })).rejects.toMatchObject({ statusCode: 400 });
    // "reading" has no roles.
    await scenarios.switch("reading");
    await expect(scenarios.roleAction("audio", "volume_up")).rejects.toMatchObject({ code: "role_not_found" });
  });

  it("restores scenario:last at initialize without performing any action", async () => {
    const store = new MemoryStateStore();
    const first = await setup(store);
    await first.scenarios.switch("tv");
    const second = await setup(store);
    expect(second.scenarios.state()?.scenario_id).toBe("tv");
    expect(second.scenarios.activeScenario()?.scenario_id).toBe("tv");
    expect(second.actions).toEqual([]);
    expect(second.devices.getState("tv").state.power).toBe(true);
  });

  it("restores 'no scenario active' after a shutdown", async () => {
    const store = new MemoryStateStore();
    const first = await setup(store);
    await first.scenarios.switch("tv");
    await first.scenarios.shutdownActive();
    const second = await setup(store);
    expect(second.scenarios.state()).toMatchObject({ scenario_id: null, devices: {} });
    expect(second.scenarios.activeScenario()).toBeNull();
    await expect(second.scenarios.shutdownActive()).rejects.toMatchObject({ statusCode: 404 });
    expect(second.actions).toEqual([]);
  });

  it("ignores an unreadable or unknown scenario:last and starts with none", async () => {
    const store = new MemoryStateStore();
    await store.initialize();
    await store.set("scenario:last", { scenario_id: 42 });
    expect((await setup(store)).scenarios.state()).toBeNull();
    await store.set("scenario:last", { scenario_id: "gone", devices: {}, switched_at: "x", failed_steps: [] });
    expect((await setup(store)).scenarios.state()).toBeNull();
  });

  it("reads a scenario:last written before shutdown existed (string id, no failed_steps)", async () => {
    const store = new MemoryStateStore();
    await store.initialize();
    await store.set("scenario:last", { scenario_id: "reading", devices: {}, switched_at: "2025-12-01T00:00:00.000Z" });
    const { scenarios } = await setup(store);
    expect(scenarios.state()).toEqual({ scenario_id: "reading", devices: {}, switched_at: "2025-12-01T00:00:00.000Z", failed_steps: [] });
    expect(scenarios.activeScenario()?.scenario_id).toBe("reading");
  });

  it("refuses unknown scenarios with a 404 error", async () => {
    const { scenarios } = await setup();
    await expect(scenarios.switch("nope")).rejects.toMatchObject({ statusCode: 404, code: "scenario_not_found" });
    await expect(scenarios.start("nope")).rejects.toMatchObject({ statusCode: 404, code: "scenario_not_found" });
  });
});
