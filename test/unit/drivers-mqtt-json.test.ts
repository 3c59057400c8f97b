import { describe, expect, it } from "vitest";
import { DeviceUnreachableError } from "../../app/devices/driver.js";
import { getPath, mqttJsonDriverFactory, parseAvailability, renderTemplate } from "../../app/devices/drivers/mqtt-json.js";
import { deviceDefinition, FakeDriverContext } from "../helpers/peers/driver-context.js";

const BASE = "zigbee2mqtt/living lamp";

const lamp = deviceDefinition(
  {
    driver: "mqtt_json",
    config: {
      base_topic: BASE,
      state: {
        power: { path: "state", map: { ON: true, OFF: false } },
        brightness: { path: "brightness", type: "int", min: 0, max: 254 },
        temperature: { path: "sensors.temp", type: "float", units: "deg C" },
        effect: { path: "effect" },
      },
    },
    commands: {
      power_on: { payload: { state: "ON" } },
      brightness: {
        params: [
          { name: "level", type: "integer", min: 0, max: 254 },
          { name: "seconds", type: "number", required: false },
        ],
        payload: { brightness: "{{level}}", transition: "{{seconds}}", note: "set to {{level}}" },
      },
    },
  },
  "config/devices/lamp.json",
);

async function started() {
  const context = new FakeDriverContext();
  const driver = mqttJsonDriverFactory.create(lamp, context);
  await driver.setup?.(driver.defaultState());
  return { context, driver };
}

describe("mqtt_json templates, paths, availability", () => {
  it("an exact {{param}} becomes the typed value; inside text it is interpolated; absent params drop the member", () => {
    const template = { brightness: "{{level}}", on: "{{on}}", label: "scene {{n}}", list: ["{{n}}", "{{gone}}"], fixed: { a: 1 } };
    expect(renderTemplate(template, { level: 120, on: true, n: 2 })).toEqual({
      brightness: 120,
      on: true,
      label: "scene 2",
      list: [2],
      fixed: { a: 1 },
    });
    expect(renderTemplate({ label: "scene {{n}}", keep: "x" }, {})).toEqual({ keep: "x" });
  });

  it("reads dotted paths through objects and arrays", () => {
    const msg = { sensors: { temp: 21.5 }, list: [{ v: 1 }] };
    expect(getPath(msg, ["sensors", "temp"])).toBe(21.5);
    expect(getPath(msg, ["list", "0", "v"])).toBe(1);
    expect(getPath(msg, ["sensors", "humidity"])).toBeUndefined();
    expect(getPath(msg, ["toString"])).toBeUndefined();
  });

  it("understands online/offline as text and as JSON", () => {
    expect(["online", "offline", '{"state":"online"}', '{"state":"offline"}', "maybe", "{bad"].map(parseAvailability)).toEqual([
      true,
      false,
      true,
      false,
      undefined,
      undefined,
    ]);
  });
});

describe("mqtt_json driver", () => {
  it("accepts a valid config", () => {
    expect(mqttJsonDriverFactory.validate(lamp)).toEqual([]);
    expect(mqttJsonDriverFactory.create(lamp, new FakeDriverContext()).stateVersion).toBe(1);
  });

  it("publishes the rendered JSON to <base>/set and returns what it asked for as the optimistic change", async () => {
    const { context, driver } = await started();
    const state = driver.defaultState();
    expect(await driver.handleAction("power_on", {}, state)).toEqual({ power: true });
    expect(await driver.handleAction("brightness", { level: 120 }, state)).toEqual({ brightness: 120 });
    expect(context.published).toEqual([
      { topic: `${BASE}/set`, payload: '{"state":"ON"}', options: { qos: 1, retain: false } },
      { topic: `${BASE}/set`, payload: '{"brightness":120,"note":"set to 120"}', options: { qos: 1, retain: false } },
    ]);
  });

  it("maps state messages on <base> by path and map; malformed JSON is logged by topic and ignored", async () => {
    const { context } = await started();
    context.deliver(BASE, JSON.stringify({ state: "ON", brightness: 200, sensors: { temp: 22.25 }, effect: "blink", other: 1 }));
    context.deliver(BASE, '{"state": "MARKER-broken');
    context.deliver(BASE, "[1,2]");
    context.deliver(BASE, JSON.stringify({ state: "TOGGLE", brightness: "bright" }));
    context.deliver(BASE, JSON.stringify({ brightness: null }));
    expect(context.reports).toEqual([{ power: true, brightness: 200, temperature: 22.25, effect: "blink" }, { brightness: null }]);
    expect(context.logs.find((l) => l.includes("not valid JSON"))).toContain(`"topic":"${BASE}"`);
    expect(context.logs.find((l) => l.includes("not a JSON object"))).toBeDefined();
    expect(context.logs.filter((l) => l.includes("cannot parse")).map((l) => JSON.parse(l).field)).toEqual(["power", "brightness"]);
    expect(context.logs.join("\n")).not.toContain("MARKER");
  });

  it("follows <base>/availability into `available` and reachability; refuses actions while offline", async () => {
    const { context, driver } = await started();
    context.deliver(`${BASE}/availability`, "offline", true);
    expect(context.reports.at(-1)).toEqual({ available: false });
    expect(context.reachability.at(-1)).toBe(false);
    await expect(driver.handleAction("power_on", {}, context.merged(driver.defaultState()))).rejects.toBeInstanceOf(DeviceUnreachableError);
    expect(context.published).toEqual([]);
    context.deliver(`${BASE}/availability`, '{"state":"online"}');
    expect(context.reports.at(-1)).toEqual({ available: true });
    expect(context.reachability.at(-1)).toBe(true);
  });

  it("subscribes <base> and <base>/availability; shutdown() removes exactly those", async () => {
    const { context, driver } = await started();
    expect([...context.subscriptions.keys()]).toEqual([BASE, `${BASE}/availability`]);
    await driver.shutdown?.();
    expect(context.subscriptions.size).toBe(0);
  });

  it("shows booleans as switches, bounded numbers as ranges, the rest as value/text, availability readonly", () => {
    const driver = mqttJsonDriverFactory.create(lamp, new FakeDriverContext());
    expect(driver.controls()).toEqual([
      { field: "power", type: "switch" },
      expect.objectContaining({ field: "brightness", type: "range", min: 0, max: 254 }),
      expect.objectContaining({ field: "temperature", type: "value", units: "deg C" }),
      { field: "effect", type: "text" },
      { field: "available", type: "switch", title: "Available", readonly: true },
    ]);
  });

  it("names file and field for every config problem", () => {
    const bad = deviceDefinition(
      {
        driver: "mqtt_json",
        config: {
          base_topic: "zigbee2mqtt/#",
          state: { power: { path: "state", map: { ON: true, OFF: "off" } }, level: { path: "a..b" } },
        },
        commands: { on: { payload: "ON" } },
      },
      "config/devices/lamp.json",
    );
    expect(mqttJsonDriverFactory.validate(bad)).toEqual([
      expect.stringMatching(/^config\/devices\/lamp\.json: config\.base_topic: expected an MQTT topic without wildcards/),
      "config/devices/lamp.json: config.state.power.type: required when map values are of mixed types",
      expect.stringMatching(/^config\/devices\/lamp\.json: config\.state\.level\.path: expected member names separated by dots/),
      expect.stringMatching(/^config\/devices\/lamp\.json: commands\.on\.payload: Invalid input: expected record/),
    ]);
    const refs = deviceDefinition(
      {
        driver: "mqtt_json",
        config: { base_topic: "zigbee2mqtt/lamp", state: { available: { path: "x" } } },
        commands: { dim: { params: [{ name: "level", type: "integer" }], payload: { brightness: "{{levle}}" } } },
      },
      "config/devices/lamp.json",
    );
    expect(mqttJsonDriverFactory.validate(refs)).toEqual([
      'config/devices/lamp.json: config.state.available: "available" is a state field of the driver itself',
    ]);
    const { state: _state, ...config } = refs.config as Record<string, unknown>;
    expect(mqttJsonDriverFactory.validate({ ...refs, config })).toEqual([
      'config/devices/lamp.json: commands.dim.payload.brightness: "{{levle}}" names no param of this command (declared: level)',
    ]);
  });
});
