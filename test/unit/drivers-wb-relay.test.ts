import { describe, expect, it } from "vitest";
import { DeviceUnreachableError } from "../../app/devices/driver.js";
import { wbRelayDriverFactory } from "../../app/devices/drivers/wb-relay.js";
import { BadRequestError } from "../../app/shared/errors.js";
import { deviceDefinition, FakeDriverContext } from "../helpers/peers/driver-context.js";

const hall = deviceDefinition(
  {
    driver: "wb_relay",
    config: {
      device: "wb-mr6c_45",
      fields: {
        power: { control: "K1", type: "bool", title: "Light" },
        fan: { control: "K2", type: "bool", invert: true },
        mode: { control: "Mode", type: "enum", map: { "0": "off", "1": "auto" } },
        level: { device: "wb-mdm3_12", control: "Channel 1", type: "int", min: 0, max: 100 },
      },
    },
    commands: {
      power_on: { field: "power", value: true },
      fan: { field: "fan", params: [{ name: "on", type: "boolean" }] },
      mode: { field: "mode", params: [{ name: "mode", type: "string", enum: ["off", "auto"] }] },
      level: { field: "level", params: [{ name: "level", type: "integer" }] },
    },
  },
  "config/devices/hall.json",
);

const TOPICS = [
  "/devices/wb-mr6c_45/controls/K1",
  "/devices/wb-mr6c_45/controls/K1/meta/error",
  "/devices/wb-mr6c_45/controls/K2",
  "/devices/wb-mr6c_45/controls/K2/meta/error",
  "/devices/wb-mr6c_45/controls/Mode",
  "/devices/wb-mr6c_45/controls/Mode/meta/error",
  "/devices/wb-mdm3_12/controls/Channel 1",
  "/devices/wb-mdm3_12/controls/Channel 1/meta/error",
];

async function started() {
  const context = new FakeDriverContext();
  const driver = wbRelayDriverFactory.create(hall, context);
  await driver.setup?.(driver.defaultState());
  return { context, driver };
}

describe("wb_relay driver", () => {
  it("accepts a valid config and fronts an existing WB device (no second virtual device)", () => {
    expect(wbRelayDriverFactory.validate(hall)).toEqual([]);
    const driver = wbRelayDriverFactory.create(hall, new FakeDriverContext());
    expect(driver.publishesWbDevice).toBe(false);
    expect(driver.stateVersion).toBe(1);
    expect(driver.defaultState()).toEqual({ reachable: true, error: null, power: null, fan: null, mode: null, level: null });
  });

  it("subscribes value and meta/error of every field in setup(); shutdown() removes exactly those", async () => {
    const { context, driver } = await started();
    expect([...context.subscriptions.keys()].sort()).toEqual([...TOPICS].sort());
    // Someone else's subscription on the same filter must survive the driver's shutdown.
    await context.mqtt.subscribe(TOPICS[0] as string, () => undefined);
    await driver.shutdown?.();
    expect([...context.subscriptions.entries()]).toEqual([[TOPICS[0], 1]]);
  });

  it("writes mapped wire values to the control's /on topic and returns the optimistic change", async () => {
    const { context, driver } = await started();
    const state = driver.defaultState();
    expect(await driver.handleAction("power_on", {}, state)).toEqual({ power: true });
    expect(await driver.handleAction("fan", { on: true }, state)).toEqual({ fan: true });
    expect(await driver.handleAction("mode", { mode: "auto" }, state)).toEqual({ mode: "auto" });
    expect(await driver.handleAction("level", { level: 42 }, state)).toEqual({ level: 42 });
    expect(context.published.map((p) => [p.topic, p.payload])).toEqual([
      ["/devices/wb-mr6c_45/controls/K1/on", "1"],
      ["/devices/wb-mr6c_45/controls/K2/on", "0"],
      ["/devices/wb-mr6c_45/controls/Mode/on", "1"],
      ["/devices/wb-mdm3_12/controls/Channel 1/on", "42"],
    ]);
    expect(context.published.every((p) => p.options?.qos === 1 && p.options.retain === false)).toBe(true);
  });

  it("refuses values outside the field's bounds without publishing", async () => {
    const { context, driver } = await started();
    await expect(driver.handleAction("level", { level: 150 }, driver.defaultState())).rejects.toBeInstanceOf(BadRequestError);
    expect(context.published).toEqual([]);
  });

  it("reports canonical values from the value topics; ignores unparsable ones with a warning naming the field", async () => {
    const { context } = await started();
    context.deliver("/devices/wb-mr6c_45/controls/K1", "1", true);
    context.deliver("/devices/wb-mr6c_45/controls/K2", "1");
    context.deliver("/devices/wb-mr6c_45/controls/Mode", "0");
    context.deliver("/devices/wb-mdm3_12/controls/Channel 1", "73");
    context.deliver("/devices/wb-mr6c_45/controls/Mode", "MARKER-9");
    context.deliver("/devices/wb-mr6c_45/controls/K1", "");
    expect(context.reports).toEqual([{ power: true }, { fan: false }, { mode: "off" }, { level: 73 }]);
    const warning = context.logs.find((l) => l.includes("cannot parse"));
    expect(warning).toMatch(/"field":"mode"/);
    expect(context.logs.join("\n")).not.toContain("MARKER");
  });

  it("mirrors meta/error: r marks the device unreachable and refuses writes to that control", async () => {
    const { context, driver } = await started();
    context.deliver("/devices/wb-mr6c_45/controls/K1/meta/error", "r", true);
    expect(context.reports.at(-1)).toEqual({ reachable: false, error: "r" });
    expect(context.reachability.at(-1)).toBe(false);
    context.deliver("/devices/wb-mr6c_45/controls/K2/meta/error", "w");
    expect(context.reports.at(-1)).toEqual({ reachable: false, error: "rw" });

    const state = context.merged(driver.defaultState());
    await expect(driver.handleAction("power_on", {}, state)).rejects.toBeInstanceOf(DeviceUnreachableError);
    expect(context.published).toEqual([]);

    context.deliver("/devices/wb-mr6c_45/controls/K1/meta/error", "");
    context.deliver("/devices/wb-mr6c_45/controls/K2/meta/error", "");
    expect(context.reports.at(-1)).toEqual({ reachable: true, error: null });
    expect(context.reachability.at(-1)).toBe(true);
    await driver.handleAction("power_on", {}, state);
    expect(context.published.map((p) => p.topic)).toEqual(["/devices/wb-mr6c_45/controls/K1/on"]);
  });

  it("resets restored error flags before subscribing, so a flag cleared while the bridge was down does not stick", async () => {
    const context = new FakeDriverContext();
    const driver = wbRelayDriverFactory.create(hall, context);
    await driver.setup?.({ ...driver.defaultState(), reachable: false, error: "r" });
    expect(context.reports).toEqual([{ reachable: true, error: null }]);
  });

  it("shows fields as WB controls by type, plus readonly reachable and error", () => {
    const driver = wbRelayDriverFactory.create(hall, new FakeDriverContext());
    expect(driver.controls()).toEqual([
      { field: "power", type: "switch", title: "Light" },
      { field: "fan", type: "switch" },
      { field: "mode", type: "text", enum: ["off", "auto"] },
      expect.objectContaining({ field: "level", type: "range", min: 0, max: 100 }),
      { field: "reachable", type: "switch", title: "Reachable", readonly: true },
      { field: "error", type: "text", title: "Error", readonly: true },
    ]);
  });

  it("names file and field for every config problem", () => {
    const bad = deviceDefinition(
      {
        driver: "wb_relay",
        config: {
          fields: {
            power: { control: "K/1", type: "bool" },
            mode: { device: "wb-mr6c_45", control: "Mode", type: "enum" },
            level: { device: "wb-mr6c_45", control: "L", type: "integer" },
            error: { device: "wb-mr6c_45", control: "E", type: "str" },
          },
        },
      },
      "config/devices/hall.json",
    );
    expect(wbRelayDriverFactory.validate(bad)).toEqual([
      expect.stringMatching(/^config\/devices\/hall\.json: config\.fields\.power\.control: expected one MQTT topic level/),
      "config/devices/hall.json: config.fields.mode.map: an enum field needs a map (wire value -> name)",
      expect.stringMatching(/^config\/devices\/hall\.json: config\.fields\.level\.type: Invalid option/),
    ]);

    const commands = deviceDefinition(
      {
        driver: "wb_relay",
        config: {
          device: "wb-mr6c_45",
          fields: { power: { control: "K1", type: "bool" }, mode: { control: "Mode", type: "enum", map: { "0": "off", "1": "auto" } } },
        },
        commands: {
          power_on: { field: "powr", value: true },
          power_off: { field: "power", value: "off" },
          power: { field: "power", params: [{ name: "on", type: "string" }] },
          mode: { field: "mode", params: [{ name: "mode", type: "string", enum: ["off", "turbo"] }] },
          nothing: { field: "mode" },
          extra: { field: "mode", value: "auto", typo: 1 },
        },
      },
      "config/devices/hall.json",
    );
    expect(wbRelayDriverFactory.validate(commands)).toEqual(['config/devices/hall.json: commands.extra: Unrecognized key: "typo"']);
    const { extra: _extra, ...rest } = commands.commands;
    expect(wbRelayDriverFactory.validate({ ...commands, commands: rest })).toEqual([
      'config/devices/hall.json: commands.power_on.field: no field "powr" in config.fields (known: power, mode)',
      'config/devices/hall.json: commands.power_off.value: expected a boolean for field "power"',
      'config/devices/hall.json: commands.power.params[0].type: field "power" is bool; expected a param of type boolean',
      'config/devices/hall.json: commands.mode.params[0].enum: not values of field "mode": turbo',
      'config/devices/hall.json: commands.nothing.params: expected exactly one param (its value is written to field "mode"), or a fixed "value"',
    ]);
  });
});
