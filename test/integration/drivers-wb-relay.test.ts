import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../app/server.js";
import { simulatedDevice, testConfig } from "../helpers/fixtures.js";
import { DriverHarness } from "../helpers/peers/harness.js";
import { EmulatedWbSerialDevice } from "../helpers/peers/wb-serial-device.js";
import { readStoredValue } from "../helpers/sqlite.js";

const hall = {
  device_id: "hall",
  device_name: "Hall",
  driver: "wb_relay",
  config: {
    device: "wb-mr6c_45",
    fields: {
      power: { control: "K1", type: "bool" },
      fan: { control: "K2", type: "bool", invert: true },
      mode: { control: "Mode", type: "enum", map: { "0": "off", "1": "auto", "2": "boost" } },
      level: { device: "wb-mdm3_12", control: "Channel 1", type: "int", min: 0, max: 100 },
    },
  },
  commands: {
    power_on: { field: "power", value: true },
    power_off: { field: "power", value: false },
    fan: { field: "fan", params: [{ name: "on", type: "boolean" }] },
    mode: { field: "mode", params: [{ name: "mode", type: "string", enum: ["off", "auto", "boost"] }] },
    level: { field: "level", params: [{ name: "level", type: "integer", min: 0, max: 100 }] },
  },
};

describe("wb_relay driver through the bridge (aedes over TCP, emulated wb-mqtt-serial modules)", () => {
  let h: DriverHarness;
  let relay: EmulatedWbSerialDevice;
  let dimmer: EmulatedWbSerialDevice;

  beforeEach(async () => {
    h = await DriverHarness.create();
    // K2 is wired inverted: "1" on the wire is the fan off.
    relay = h.own(await EmulatedWbSerialDevice.start(h.broker.url, "wb-mr6c_45", { K1: "0", K2: "1", Mode: "0" }));
    dimmer = h.own(await EmulatedWbSerialDevice.start(h.broker.url, "wb-mdm3_12", { "Channel 1": "30" }));
  });
  afterEach(async () => {
    await h.close();
  });

  const act = (action: string, params?: Record<string, unknown>) =>
    h.running.app.inject({ method: "POST", url: "/devices/hall/action", payload: { action, ...(params ? { params } : {}) } });
  const stored = async () => ((await readStoredValue(h.dbPath, "device:hall")) as { state: Record<string, unknown> } | null)?.state;

  it("takes its state from the peer's retained values, writes K1/on, follows feedback, persists, restores", async () => {
    await h.start({ devices: [hall] });
    expect(await h.waitForState("hall", (s) => s.level === 30)).toEqual({
      reachable: true,
      error: null,
      power: false,
      fan: false,
      mode: "off",
      level: 30,
    });

    const command = relay.nextCommand("K1");
    const res = await act("power_on");
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().state.power).toBe(true);
    expect((await command).payload).toBe("1");
    expect(relay.values.get("K1")).toBe("1");
    expect((await stored())?.power).toBe(true);

    // Someone uses the wall switch: the module's value topic is the truth.
    await relay.set("K1", "0");
    await h.waitForState("hall", (s) => s.power === false);
    expect((await h.running.app.inject({ url: "/devices/hall/state" })).json().state.power).toBe(false);
    await relay.set("K1", "1");
    await h.waitForState("hall", (s) => s.power === true);
    const before = (await h.running.app.inject({ url: "/devices/hall/state" })).json();
    expect(await stored()).toEqual(before.state);

    // The modules go away and their retained values with them: the restart restores
    // from the database, not from feedback.
    await relay.forgetRetained();
    await dimmer.forgetRetained();
    const { app } = await h.restart();
    expect((await app.inject({ url: "/devices/hall/state" })).json()).toEqual({ ...before, restored: true });

    // The module reports K1 again, the value the database had: that confirms the restored
    // state, though nothing changes (no write, no event to await: the answer is polled).
    await relay.set("K1", "1");
    await vi.waitFor(async () => expect((await app.inject({ url: "/devices/hall/state" })).json().restored).toBe(false));
    expect((await app.inject({ url: "/devices/hall/state" })).json()).toEqual({ ...before, restored: false });
  });

  it("maps both ways: inverted bool and enum names to wire values, and feedback back to canonical values", async () => {
    await h.start({ devices: [hall] });
    await h.waitForState("hall", (s) => s.level === 30);

    const k2 = relay.nextCommand("K2");
    expect((await act("fan", { on: true })).json().state.fan).toBe(true);
    expect((await k2).payload).toBe("0");
    await relay.set("K2", "1");
    await h.waitForState("hall", (s) => s.fan === false);

    const mode = relay.nextCommand("Mode");
    expect((await act("mode", { mode: "boost" })).json().state.mode).toBe("boost");
    expect((await mode).payload).toBe("2");
    await relay.set("Mode", "1");
    await h.waitForState("hall", (s) => s.mode === "auto");

    const channel = dimmer.nextCommand("Channel 1");
    expect((await act("level", { level: 55 })).json().state.level).toBe(55);
    expect((await channel).payload).toBe("55");
    expect(await stored()).toMatchObject({ fan: false, mode: "auto", level: 55 });

    // A value the field cannot read is logged (device and field, never the value) and ignored.
    await relay.set("Mode", "MARKER-garbage");
    await relay.set("K2", "0");
    await h.waitForState("hall", (s) => s.fan === true);
    expect(h.running.app.bridge.devices.getState("hall").state.mode).toBe("auto");
    const warning = h.running.logs.find((l) => l.includes("cannot parse"));
    expect(JSON.parse(warning as string)).toMatchObject({ level: 40, device: "hall", field: "mode" });
    expect(h.running.logs.join("\n")).not.toContain("MARKER");
  });

  it("meta/error r: state reachable false with the flags, the DeviceManager reports it, writes are refused; cleared: back", async () => {
    await h.start({ devices: [hall] });
    await h.waitForState("hall", (s) => s.level === 30);
    const { app } = h.running;

    await relay.fail("K1", "r");
    await h.waitForState("hall", (s) => s.reachable === false && s.error === "r");
    await h.waitForReachable("hall", false);
    expect(app.bridge.devices.getState("hall").reachable).toBe(false);
    expect((await app.inject({ url: "/devices/hall/state" })).json()).toMatchObject({
      reachable: false,
      state: { reachable: false, error: "r" },
    });
    expect((await stored())?.reachable).toBe(false);

    const refused = await act("power_on");
    expect(refused.statusCode).toBe(503);
    expect(refused.json().error.code).toBe("device_unreachable");
    // Other controls still work, and the module sees its commands in order: no K1/on came before K2/on.
    const k2 = relay.nextCommand("K2");
    expect((await act("fan", { on: false })).statusCode).toBe(200);
    await k2;
    expect(relay.commands("K1")).toEqual([]);

    await relay.recover("K1");
    await h.waitForState("hall", (s) => s.reachable === true && s.error === null);
    await h.waitForReachable("hall", true);
    expect((await app.inject({ url: "/devices/hall/state" })).json().reachable).toBe(true);
    const k1 = relay.nextCommand("K1");
    expect((await act("power_on")).statusCode).toBe(200);
    expect((await k1).payload).toBe("1");
  });

  it("publishes no WB virtual device of its own for the relay (the module already is one)", async () => {
    const observer = await h.client();
    await observer.subscribe("/devices/#");
    await h.start({ devices: [hall, simulatedDevice("tv")] });
    // `ready` is published after every device's meta and values went out.
    await observer.waitFor("/devices/wb_bridge/controls/ready", (m) => m.payload === "1");
    const k1 = relay.nextCommand("K1");
    expect((await act("power_on")).statusCode).toBe(200);
    await k1;
    await observer.waitFor("/devices/wb-mr6c_45/controls/K1", (m) => m.payload === "1");

    expect(observer.on("/devices/tv/meta")).toHaveLength(1);
    expect(observer.on("/devices/hall/#")).toEqual([]);
  });

  it("refuses a bad wb_relay config, naming file and field", async () => {
    const bad = await testConfig(h.dir.path, h.broker.url, {
      devices: [
        {
          ...hall,
          config: { device: "wb-mr6c_45", fields: { power: { control: "K1", type: "switch" } } },
          commands: { power_on: { field: "power", value: true } },
        },
      ],
    });
    await expect(buildApp(bad)).rejects.toThrow(/config\/devices\/hall\.json: config\.fields\.power\.type: Invalid option/);
    const badCommand = await testConfig(h.dir.path, h.broker.url, {
      devices: [{ ...hall, commands: { power_on: { field: "light", value: true } } }],
    });
    await expect(buildApp(badCommand)).rejects.toThrow(/config\/devices\/hall\.json: commands\.power_on\.field: no field "light"/);
  });
});
