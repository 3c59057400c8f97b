import { describe, expect, it } from "vitest";
import { DeviceUnreachableError } from "../../app/devices/driver.js";
import { wbIrDriverFactory } from "../../app/devices/drivers/wb-ir.js";
import { MqttNotConnectedError } from "../../app/mqtt/gateway.js";
import { deviceDefinition, FakeDriverContext } from "../helpers/peers/driver-context.js";

const force = [{ name: "force", type: "boolean", default: false }];

const tv = deviceDefinition(
  {
    driver: "wb_ir",
    config: { location: "msw_12" },
    commands: {
      power_on: { rom_position: 1, params: force },
      power_off: { rom_position: 2, params: force },
      power: { rom_position: 3 },
      input_hdmi1: { rom_position: 4, input: "hdmi1" },
      input_hdmi2: { rom_position: 5, input: "hdmi2", location: "msw_7" },
      volume_up: { rom_position: 6 },
      mute: { rom_position: 7 },
      netflix: { rom_position: 8, role: "plain" },
    },
  },
  "config/devices/tv.json",
);

function make() {
  const context = new FakeDriverContext();
  return { context, driver: wbIrDriverFactory.create(tv, context) };
}

describe("wb_ir driver", () => {
  it("accepts a valid config", () => {
    expect(wbIrDriverFactory.validate(tv)).toEqual([]);
  });

  it("publishes 1 to 'Play from ROM<n>/on' of the command's blaster, QoS 1, not retained", async () => {
    const { context, driver } = make();
    const state = driver.defaultState();
    expect(await driver.handleAction("volume_up", {}, state)).toEqual({});
    expect(await driver.handleAction("input_hdmi2", {}, state)).toEqual({ input: "hdmi2" });
    expect(context.published).toEqual([
      { topic: "/devices/msw_12/controls/Play from ROM6/on", payload: "1", options: { qos: 1, retain: false } },
      { topic: "/devices/msw_7/controls/Play from ROM5/on", payload: "1", options: { qos: 1, retain: false } },
    ]);
  });

  it("toggles power and mute; power_on/off set it", async () => {
    const { driver } = make();
    const off = { power: false, input: null, muted: false };
    expect(await driver.handleAction("power", {}, off)).toEqual({ power: true });
    expect(await driver.handleAction("power", {}, { ...off, power: true })).toEqual({ power: false });
    expect(await driver.handleAction("mute", {}, off)).toEqual({ muted: true });
    expect(await driver.handleAction("power_on", {}, off)).toEqual({ power: true });
    expect(await driver.handleAction("power_off", {}, { ...off, power: true })).toEqual({ power: false });
    expect(await driver.handleAction("netflix", {}, off)).toEqual({});
  });

  it("skips power_on when believed on (nothing published) unless force is true", async () => {
    const { context, driver } = make();
    const on = { power: true, input: null, muted: false };
    expect(await driver.handleAction("power_on", { force: false }, on)).toEqual({});
    expect(await driver.handleAction("power_off", {}, { ...on, power: false })).toEqual({});
    expect(context.published).toEqual([]);
    expect(await driver.handleAction("power_on", { force: true }, on)).toEqual({ power: true });
    expect(context.published.map((p) => p.topic)).toEqual(["/devices/msw_12/controls/Play from ROM1/on"]);
  });

  it("throws DeviceUnreachableError when the publish fails, then reports reachable after a success", async () => {
    const { context, driver } = make();
    context.publishError = new MqttNotConnectedError("/devices/msw_12/controls/Play from ROM3/on");
    await expect(driver.handleAction("power", {}, driver.defaultState())).rejects.toBeInstanceOf(DeviceUnreachableError);
    expect(context.reachability).toEqual([]);
    context.publishError = null;
    await driver.handleAction("power", {}, driver.defaultState());
    expect(context.reachability).toEqual([true]);
  });

  it("shows power (writable through the 'power' toggle), input with its choices and mute as controls", () => {
    const { driver } = make();
    expect(driver.controls()).toEqual([
      { field: "power", type: "switch", title: "Power" },
      { field: "input", type: "text", title: "Input", enum: ["hdmi1", "hdmi2"], readonly: true },
      { field: "muted", type: "switch", title: "Mute", readonly: true },
    ]);
    expect(driver.stateVersion).toBe(1);
    expect(driver.stateSchema.safeParse({ power: true, input: "hdmi1", muted: false }).success).toBe(true);
    expect(driver.stateSchema.safeParse({ power: "yes", input: null, muted: false }).success).toBe(false);
  });

  it("names file and field for every config problem", () => {
    const bad = deviceDefinition(
      {
        driver: "wb_ir",
        config: { blaster: "msw_12" },
        commands: {
          power_on: { rom_position: 0 },
          power_off: { rom_positon: 2 },
        },
      },
      "config/devices/tv.json",
    );
    expect(wbIrDriverFactory.validate(bad)).toEqual([
      expect.stringMatching(/^config\/devices\/tv\.json: config: Unrecognized key: "blaster"/),
      expect.stringMatching(/^config\/devices\/tv\.json: commands\.power_on\.rom_position: Too small/),
      expect.stringMatching(/^config\/devices\/tv\.json: commands\.power_off\.rom_position: Invalid input/),
      expect.stringMatching(/^config\/devices\/tv\.json: commands\.power_off: Unrecognized key: "rom_positon"/),
    ]);

    const crossField = deviceDefinition(
      {
        driver: "wb_ir",
        commands: {
          power_on: { rom_position: 1, params: [{ name: "force", type: "boolean" }] },
          input: { rom_position: 2, role: "input" },
          menu: { rom_position: 3, location: "msw_1", input: "hdmi1", role: "plain", params: [{ name: "x", type: "integer" }] },
        },
      },
      "config/devices/tv.json",
    );
    expect(wbIrDriverFactory.validate(crossField)).toEqual([
      'config/devices/tv.json: commands.power_on.location: required when config.location is not set (the blaster\'s WB device id, e.g. "msw_12")',
      'config/devices/tv.json: commands.power_on.params[0]: a power_on command takes only {"name": "force", "type": "boolean", "default": false}',
      'config/devices/tv.json: commands.input.location: required when config.location is not set (the blaster\'s WB device id, e.g. "msw_12")',
      'config/devices/tv.json: commands.input.input: required for role "input" (the name of the input this code selects)',
      'config/devices/tv.json: commands.input: "input" is the name of a state control; name the command differently (e.g. input_hdmi1)',
      'config/devices/tv.json: commands.menu.input: only a command with role "input" selects an input (this one has role "plain")',
      "config/devices/tv.json: commands.menu.params[0]: a plain IR command takes no params",
    ]);
  });
});
