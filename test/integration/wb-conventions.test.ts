import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import type { AppConfig } from "../../app/config/loader.js";
import { DeviceUnreachableError, type DriverContext, type DriverFactory } from "../../app/devices/driver.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { captureLogger, simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";

/** A test driver whose hardware the test can unplug: actions then fail as unreachable. */
function flakyDriver(): { factory: DriverFactory; hardware: { up: boolean; context?: DriverContext } } {
  const hardware: { up: boolean; context?: DriverContext } = { up: true };
  const stateSchema = z.object({ power: z.boolean(), temperature: z.number() }).strict();
  const factory: DriverFactory = {
    name: "flaky",
    validate: () => [],
    create: (_device, context) => {
      hardware.context = context;
      return {
        stateSchema,
        stateVersion: 1,
        defaultState: () => ({ power: false, temperature: 21.25 }),
        controls: () => [
          { field: "power", type: "switch", title: "Power" },
          { field: "temperature", type: "value", units: "deg C", precision: 0.1, readonly: true },
        ],
        handleAction: async (action) => {
          if (!hardware.up) throw new DeviceUnreachableError("heater does not answer");
          return { power: action === "power_on" ? true : action === "power_off" ? false : action === "power" };
        },
      };
    },
  };
  return { factory, hardware };
}

describe("Wiren Board conventions", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let observer: TestMqttClient;
  const apps: Array<{ close(): Promise<unknown> }> = [];

  async function start(config: AppConfig, drivers: DriverFactory[] = []) {
    const app = await buildApp(config, { logger: captureLogger().log, drivers });
    apps.push(app);
    await app.ready();
    return app;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    observer = await TestMqttClient.connect(broker.url);
    await observer.subscribe("/devices/#");
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    await observer.close();
    await broker.close();
    await dir.remove();
  });

  it("publishes device and control meta exactly as the convention defines", async () => {
    const tv = simulatedDevice("tv", {
      names: { ru: "Телевизор" },
      controls: {
        volume: { title: { ru: "Громкость" }, units: "%" },
        power_on: { order: 50, title: { en: "On", ru: "Вкл" } },
      },
    });
    const config = await testConfig(dir.path, broker.url, { devices: [tv] });
    await start(config);
    const meta = async (topic: string) => JSON.parse((await observer.waitFor(topic)).payload) as unknown;

    expect(await meta("/devices/tv/meta")).toEqual({ driver: "wb-bridge", title: { en: "Device tv", ru: "Телевизор" } });
    expect((await observer.waitFor("/devices/tv/meta/name")).payload).toBe("Device tv");
    expect(await meta("/devices/tv/controls/power/meta")).toEqual({
      type: "switch",
      readonly: false,
      order: 1,
      title: { en: "Power" },
    });
    expect(await meta("/devices/tv/controls/volume/meta")).toEqual({
      type: "range",
      readonly: false,
      order: 2,
      min: 0,
      max: 100,
      units: "%",
      title: { en: "Volume", ru: "Громкость" },
    });
    // A state field without a command of the same name is read-only.
    expect(await meta("/devices/tv/controls/muted/meta")).toMatchObject({ type: "switch", readonly: true, order: 3 });
    expect(await meta("/devices/tv/controls/input/meta")).toMatchObject({ type: "text", readonly: false, order: 4 });
    expect(await meta("/devices/tv/controls/power_on/meta")).toEqual({
      type: "pushbutton",
      readonly: false,
      order: 50,
      title: { en: "On", ru: "Вкл" },
    });
    expect((await observer.waitFor("/devices/tv/controls/power")).payload).toBe("0");
    expect((await observer.waitFor("/devices/tv/controls/volume")).payload).toBe("20");
    // Every retained message of a live control has a payload: an empty one would delete it.
    const values = observer.on("/devices/tv/controls/+").filter((m) => m.retain);
    expect(values.every((m) => m.payload !== "")).toBe(true);
    expect(observer.on("/devices/tv/controls/power_on")).toEqual([]);
  });

  it("answers a pushbutton with a non-retained 1 and refuses commands to read-only controls", async () => {
    const config = await testConfig(dir.path, broker.url, { devices: [simulatedDevice("tv")] });
    const app = await start(config);
    await observer.waitFor("/devices/tv/controls/power", (m) => m.payload === "0");
    await observer.publish("/devices/tv/controls/power_on/on", "1");
    const press = await observer.waitFor("/devices/tv/controls/power_on");
    expect(press).toMatchObject({ payload: "1", retain: false });
    await observer.waitFor("/devices/tv/controls/power", (m) => m.payload === "1");

    await observer.publish("/devices/tv/controls/muted/on", "1");
    await observer.waitFor("/devices/tv/controls/muted/meta/error", (m) => m.payload === "w");
    expect(app.bridge.devices.getState("tv").state.muted).toBe(false);
  });

  it("flags unreachable hardware with r, keeps the last good value, and clears when it answers again", async () => {
    const { factory, hardware } = flakyDriver();
    const heater = {
      device_id: "heater",
      device_name: "Heater",
      driver: "flaky",
      commands: { power_on: {}, power_off: {} },
    };
    const config = await testConfig(dir.path, broker.url, { devices: [heater] });
    const app = await start(config, [factory]);
    expect((await observer.waitFor("/devices/heater/controls/temperature")).payload).toBe("21.3");
    expect(JSON.parse((await observer.waitFor("/devices/heater/controls/temperature/meta")).payload)).toMatchObject({
      type: "value",
      readonly: true,
      units: "deg C",
      precision: 0.1,
    });
    await app.bridge.devices.performAction("heater", "power_on", {}, "http");
    await observer.waitFor("/devices/heater/controls/power", (m) => m.payload === "1");

    hardware.up = false;
    const res = await app.inject({ method: "POST", url: "/devices/heater/action", payload: { action: "power_off" } });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe("device_unreachable");
    await observer.waitFor("/devices/heater/meta/error", (m) => m.payload === "r");
    await observer.waitFor("/devices/heater/controls/power/meta/error", (m) => m.payload === "r");
    await observer.waitFor("/devices/heater/controls/power_off/meta/error", (m) => m.payload === "r");
    expect((await app.inject({ url: "/devices/heater/state" })).json()).toMatchObject({
      reachable: false,
      state: { power: true },
    });
    const values = observer.on("/devices/heater/controls/power");
    expect(values[values.length - 1]?.payload).toBe("1");

    hardware.up = true;
    hardware.context?.setReachable(true);
    await observer.waitFor("/devices/heater/meta/error", (m) => m.payload === "");
    await observer.waitFor("/devices/heater/controls/power/meta/error", (m) => m.payload === "");
    expect(app.bridge.devices.getState("heater").reachable).toBe(true);
  });

  it("applies hardware feedback reported by a driver: committed, published, evented", async () => {
    const { factory, hardware } = flakyDriver();
    const config = await testConfig(dir.path, broker.url, {
      devices: [{ device_id: "heater", device_name: "Heater", driver: "flaky", commands: { power_on: {} } }],
    });
    const app = await start(config, [factory]);
    const sources: string[] = [];
    app.bridge.bus.on("device.state", (e) => {
      sources.push(e.source);
    });
    hardware.context?.report({ temperature: 19.96 });
    await observer.waitFor("/devices/heater/controls/temperature", (m) => m.payload === "20.0");
    expect(app.bridge.devices.getState("heater").state.temperature).toBe(19.96);
    // Repeating a known value is no change: nothing is written or emitted.
    hardware.context?.report({ temperature: 19.96 });
    await app.bridge.devices.performAction("heater", "power_on", {}, "http");
    expect(sources).toEqual(["device", "http"]);
  });

  it("marks every device offline on clean shutdown and clears stale errors at the next start", async () => {
    const config = await testConfig(dir.path, broker.url);
    const app = await start(config);
    await observer.publish("/devices/tv/controls/volume/on", "nope");
    await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "w");
    await app.close();
    apps.pop();
    await observer.waitFor("/devices/tv/meta/error", (m) => m.payload === "r");
    await observer.waitFor("/devices/amp/meta/error", (m) => m.payload === "r");

    const before = observer.received.length;
    await start(config);
    await observer.waitFor("/devices/tv/meta/error", (m) => m.payload === "" && observer.received.indexOf(m) >= before);
    await observer.waitFor("/devices/tv/controls/volume/meta/error", (m) => m.payload === "" && observer.received.indexOf(m) >= before);
  });
});
