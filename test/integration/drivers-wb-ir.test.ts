import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../app/server.js";
import { testConfig } from "../helpers/fixtures.js";
import type { Received, TestMqttClient } from "../helpers/mqtt.js";
import { DriverHarness } from "../helpers/peers/harness.js";
import { EmulatedIrBlaster } from "../helpers/peers/msw-ir.js";
import { readStoredValue } from "../helpers/sqlite.js";

const force = [{ name: "force", type: "boolean", default: false }];

const tv = {
  device_id: "tv",
  device_name: "TV",
  driver: "wb_ir",
  config: { location: "msw_12" },
  commands: {
    power_on: { rom_position: 1, params: force },
    power_off: { rom_position: 2, params: force },
    power: { rom_position: 3 },
    input_hdmi1: { rom_position: 4, input: "hdmi1" },
    input_hdmi2: { rom_position: 5, input: "hdmi2", location: "msw_7" },
    volume_up: { rom_position: 6 },
  },
};

describe("wb_ir driver through the bridge (aedes over TCP, emulated WB-MSW v3)", () => {
  let h: DriverHarness;
  let msw12: EmulatedIrBlaster;

  beforeEach(async () => {
    h = await DriverHarness.create();
    msw12 = h.own(await EmulatedIrBlaster.start(h.broker.url, "msw_12"));
  });
  afterEach(async () => {
    await h.close();
  });

  const act = (action: string, params?: Record<string, unknown>) =>
    h.running.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action, ...(params ? { params } : {}) } });

  it("HTTP power_on plays ROM1 (QoS 1), commits power, publishes the WB value, and a restart restores it", async () => {
    const observer = await h.client();
    await observer.subscribe("/devices/tv/controls/power");
    await h.start({ devices: [tv] });

    const res = await act("power_on");
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().state).toEqual({ power: true, input: null, muted: false });
    await msw12.waitForPlaybacks(1);
    expect(msw12.playbacks).toEqual([{ rom: 1, payload: "1", qos: 1 }]);
    expect(await readStoredValue(h.dbPath, "device:tv")).toEqual({
      driver: "wb_ir",
      version: 1,
      state: { power: true, input: null, muted: false },
      updated_at: res.json().updated_at,
    });
    await observer.waitFor("/devices/tv/controls/power", (m) => m.payload === "1");

    const { app } = await h.restart();
    expect((await app.inject({ url: "/devices/tv/state" })).json().state).toEqual({ power: true, input: null, muted: false });
    // Restoring sends nothing to the blaster.
    expect(msw12.roms).toEqual([1]);
  });

  it("skips power_on/power_off when the device is believed in that state, and sends them with force: true", async () => {
    await h.start({ devices: [tv] });
    expect((await act("power_on")).statusCode).toBe(200);
    await msw12.waitForPlaybacks(1);

    const skipped = await act("power_on");
    expect(skipped.statusCode).toBe(200);
    expect(skipped.json().state.power).toBe(true);
    // Actions on a device run in order and the blaster sees them in order: once the next
    // code has arrived, a second ROM1 would have arrived before it.
    await act("volume_up");
    await msw12.waitForPlaybacks(2);
    expect(msw12.roms).toEqual([1, 6]);

    expect((await act("power_on", { force: true })).statusCode).toBe(200);
    await msw12.waitForPlaybacks(3);
    expect(msw12.roms).toEqual([1, 6, 1]);

    expect((await act("power_off")).json().state.power).toBe(false);
    expect((await act("power_off")).json().state.power).toBe(false);
    await act("volume_up");
    await msw12.waitForPlaybacks(5);
    expect(msw12.roms).toEqual([1, 6, 1, 2, 6]);
  });

  it("a power toggle flips the believed state; input codes go to their own blaster and are remembered", async () => {
    const msw7 = h.own(await EmulatedIrBlaster.start(h.broker.url, "msw_7"));
    await h.start({ devices: [tv] });
    expect((await act("power")).json().state.power).toBe(true);
    expect((await act("power")).json().state.power).toBe(false);
    expect((await act("power")).json().state.power).toBe(true);
    expect((await act("input_hdmi2")).json().state).toEqual({ power: true, input: "hdmi2", muted: false });
    await msw12.waitForPlaybacks(3);
    await msw7.waitForPlaybacks(1);
    expect(msw12.roms).toEqual([3, 3, 3]);
    expect(msw7.roms).toEqual([5]);

    // The WB switch `power` is bound to the toggle: a command on its /on topic sends the code.
    const wb = await h.client();
    await wb.publish("/devices/tv/controls/power/on", "0");
    await msw12.waitForPlaybacks(4);
    await h.waitForState("tv", (s) => s.power === false);

    const { app } = await h.restart();
    expect((await app.inject({ url: "/devices/tv/state" })).json().state).toEqual({ power: false, input: "hdmi2", muted: false });
  });

  it("broker away: the action fails with 503 device_unreachable and keeps the state; once back it works again", async () => {
    await h.start({ devices: [tv] });
    const { app } = h.running;
    const restartBroker = await h.stopBroker();
    await vi.waitFor(() => expect(app.bridge.mqtt.connected).toBe(false));

    const res = await act("power_on");
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe("device_unreachable");
    expect((await app.inject({ url: "/devices/tv/state" })).json()).toMatchObject({ state: { power: false }, reachable: false });
    expect(await readStoredValue(h.dbPath, "device:tv")).toBeNull();

    await restartBroker();
    const blaster = h.own(await EmulatedIrBlaster.start(h.broker.url, "msw_12"));
    const observer = await h.client();
    await observer.subscribe("/devices/wb_bridge/controls/ready");
    await observer.waitFor("/devices/wb_bridge/controls/ready", (m) => m.payload === "1", 10_000);

    const again = await act("power_on");
    expect(again.statusCode, again.body).toBe(200);
    await blaster.waitForPlaybacks(1);
    expect((await app.inject({ url: "/devices/tv/state" })).json()).toMatchObject({ state: { power: true }, reachable: true });
  });

  it("the demo amplifier's input_tv button: `r` from a press during a broker outage clears when the device answers again, and after a press", async () => {
    const amplifier = JSON.parse(await readFile(join(import.meta.dirname, "../../config/devices/amplifier.json"), "utf8")) as Record<
      string,
      unknown
    >;
    const location = (amplifier.config as { location: string }).location;
    h.own(await EmulatedIrBlaster.start(h.broker.url, location));
    await h.start({ devices: [amplifier] });
    const { app } = h.running;
    const topic = "/devices/amplifier/controls/input_tv/meta/error";
    const press = () => app.inject({ method: "POST", url: "/devices/amplifier/action", payload: { action: "input_tv" } });

    /** Broker down, a press fails with `r`, a fresh broker on the same port: the bridge is back and republished. */
    const outage = async () => {
      const restartBroker = await h.stopBroker();
      await vi.waitFor(() => expect(app.bridge.mqtt.connected).toBe(false));
      const failed = await press();
      expect(failed.statusCode).toBe(503);
      expect(failed.json().error.code).toBe("device_unreachable");
      // Registered last, so it runs after the WB devices' republish.
      const back = new Promise<void>((resolve) => {
        const off = app.bridge.mqtt.onConnect(() => {
          off();
          resolve();
        });
      });
      await restartBroker();
      await back;
      const blaster = h.own(await EmulatedIrBlaster.start(h.broker.url, location));
      const observer = await h.client();
      await observer.subscribe("/devices/amplifier/#");
      // The flag the failed press left, republished (and retained) after the reconnect.
      await observer.waitFor(topic, (m) => m.payload === "r");
      return { blaster, observer };
    };
    const after = (observer: TestMqttClient, from: number, payload: string) => (m: Received) =>
      observer.received.indexOf(m) >= from && m.payload === payload;

    // IR gives no feedback: the device answers again when a command goes out.
    let { blaster, observer } = await outage();
    let from = observer.received.length;
    expect((await app.inject({ method: "POST", url: "/devices/amplifier/action", payload: { action: "volume_up" } })).statusCode).toBe(200);
    await observer.waitFor(topic, after(observer, from, ""));
    await blaster.waitForPlaybacks(1);

    // Away again; this time a successful press of the button itself clears it.
    ({ blaster, observer } = await outage());
    from = observer.received.length;
    expect((await press()).statusCode).toBe(200);
    await observer.waitFor(topic, after(observer, from, ""));
    await observer.waitFor("/devices/amplifier/controls/input", after(observer, from, "tv"));
    await blaster.waitForPlaybacks(1);
    expect(blaster.roms).toEqual([6]);
    expect(app.bridge.devices.getState("amplifier").reachable).toBe(true);
  });

  it("refuses a bad wb_ir config, naming file and field", async () => {
    const bad = await testConfig(h.dir.path, h.broker.url, {
      devices: [{ ...tv, config: {}, commands: { power_on: { rom_position: "one" }, menu: { rom_position: 2, location: "msw/12" } } }],
    });
    await expect(buildApp(bad)).rejects.toThrow(
      /config\/devices\/tv\.json: commands\.power_on\.rom_position: Invalid input: expected number/,
    );
    await expect(buildApp(bad)).rejects.toThrow(/config\/devices\/tv\.json: commands\.menu\.location: expected one MQTT topic level/);
  });
});
