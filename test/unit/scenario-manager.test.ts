import { describe, expect, it } from "vitest";
import { loadConfig } from "../../app/config/loader.js";
import { DriverRegistry } from "../../app/devices/driver.js";
import { simulatedDriverFactory } from "../../app/devices/drivers/simulated.js";
import { DeviceManager } from "../../app/devices/manager.js";
import type { MqttGateway } from "../../app/mqtt/gateway.js";
import { ScenarioManager } from "../../app/scenarios/manager.js";
import { EventBus } from "../../app/shared/event-bus.js";
import type { BridgeEvents } from "../../app/lifespan.js";
import { MemoryStateStore } from "../../app/state/memory-store.js";
import { StateService } from "../../app/state/service.js";
import { createLogger } from "../../app/observability/logger.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";

/** An MQTT gateway that is never connected: these tests are about ordering and persistence. */
const offlineMqtt = {
  connected: false,
  subscribe: async () => async () => undefined,
  onConnect: () => () => undefined,
  publish: async () => {
    throw new Error("offline");
  },
} as unknown as MqttGateway;

async function setup(store = new MemoryStateStore()) {
  const dir = await tempDir();
  const configDir = await writeConfigDir(dir.path, {
    devices: [simulatedDevice("tv"), simulatedDevice("amp"), simulatedDevice("light")],
    scenarios: [
      {
        scenario_id: "tv",
        name: "TV",
        devices: ["tv", "amp"],
        startup: [
          { device: "tv", action: "power_on", delay_after_ms: 250 },
          { device: "amp", action: "power_on" },
          { device: "amp", action: "input", params: { input: "tv" } },
        ],
        shutdown: [
          { device: "tv", action: "power_off" },
          { device: "amp", action: "power_off" },
        ],
      },
      {
        scenario_id: "reading",
        name: "Reading",
        devices: ["amp", "light"],
        startup: [
          { device: "light", action: "power_on" },
          { device: "amp", action: "input", params: { input: "hdmi2" } },
        ],
        shutdown: [{ device: "light", action: "power_off" }],
      },
    ],
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
  const sleeps: number[] = [];
  const scenarios = new ScenarioManager({
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
  await scenarios.initialize();
  return { store, devices, scenarios, actions, sleeps, state };
}

describe("ScenarioManager", () => {
  it("runs startup steps in order with their delays and persists scenario:last", async () => {
    const { scenarios, actions, sleeps, store } = await setup();
    const result = await scenarios.switch("tv");
    expect(actions).toEqual(["tv:on:hdmi1", "amp:on:hdmi1", "amp:on:tv"]);
    expect(sleeps).toEqual([250]);
    expect(result).toEqual({
      scenario_id: "tv",
      devices: {
        tv: { power: true, volume: 20, muted: false, input: "hdmi1" },
        amp: { power: true, volume: 20, muted: false, input: "tv" },
      },
      switched_at: "2026-01-02T03:04:05.000Z",
      failed_steps: [],
    });
    expect(await store.get("scenario:last")).toEqual(result);
  });

  it("shuts down only the outgoing devices the incoming scenario does not use", async () => {
    const { scenarios, actions } = await setup();
    await scenarios.switch("tv");
    actions.length = 0;
    await scenarios.switch("reading");
    // tv goes off (not in "reading"); amp is kept, so its power_off is not sent.
    expect(actions).toEqual(["tv:off:hdmi1", "light:on:hdmi1", "amp:on:hdmi2"]);
  });

  it("serializes concurrent switches", async () => {
    const { scenarios } = await setup();
    const [a, b] = await Promise.all([scenarios.switch("tv"), scenarios.switch("reading")]);
    expect(a.scenario_id).toBe("tv");
    expect(b.scenario_id).toBe("reading");
    expect(scenarios.state()?.scenario_id).toBe("reading");
  });

  it("restores scenario:last at initialize without performing any action", async () => {
    const store = new MemoryStateStore();
    const first = await setup(store);
    await first.scenarios.switch("tv");
    const second = await setup(store);
    expect(second.scenarios.state()?.scenario_id).toBe("tv");
    expect(second.actions).toEqual([]);
    expect(second.devices.getState("tv").state.power).toBe(true);
  });

  it("ignores an unreadable or unknown scenario:last and starts with none", async () => {
    const store = new MemoryStateStore();
    await store.initialize();
    await store.set("scenario:last", { scenario_id: 42 });
    expect((await setup(store)).scenarios.state()).toBeNull();
    await store.set("scenario:last", { scenario_id: "gone", devices: {}, switched_at: "x", failed_steps: [] });
    expect((await setup(store)).scenarios.state()).toBeNull();
  });

  it("refuses unknown scenarios with a 404 error", async () => {
    const { scenarios } = await setup();
    await expect(scenarios.switch("nope")).rejects.toMatchObject({ statusCode: 404, code: "scenario_not_found" });
  });

  it("records a failed step and still runs the rest", async () => {
    const { scenarios, devices, actions } = await setup();
    await devices.shutdown();
    // Devices no longer accept actions: every step fails, and each failure is recorded.
    const result = await scenarios.switch("tv");
    expect(actions).toEqual([]);
    expect(result.failed_steps.map((f) => `${f.phase}[${f.index}] ${f.device}.${f.action}`)).toEqual([
      "startup[0] tv.power_on",
      "startup[1] amp.power_on",
      "startup[2] amp.input",
    ]);
  });
});
