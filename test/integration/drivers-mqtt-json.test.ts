import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { buildApp } from "../../app/server.js";
import { testConfig } from "../helpers/fixtures.js";
import { DriverHarness } from "../helpers/peers/harness.js";
import { EmulatedZigbeeLamp } from "../helpers/peers/zigbee-lamp.js";
import { retainedNow } from "../helpers/retained.js";
import { readStoredValue } from "../helpers/sqlite.js";

const BASE = "zigbee2mqtt/living_lamp";

const lamp = {
  device_id: "lamp",
  device_name: "Living room lamp",
  driver: "mqtt_json",
  config: {
    base_topic: BASE,
    state: {
      power: { path: "state", map: { ON: true, OFF: false } },
      brightness: { path: "brightness", type: "int", min: 0, max: 254 },
      temperature: { path: "sensors.temp", type: "float", units: "deg C" },
    },
  },
  commands: {
    power_on: { payload: { state: "ON" } },
    power_off: { payload: { state: "OFF" } },
    brightness: {
      params: [{ name: "level", type: "integer", min: 0, max: 254 }],
      payload: { brightness: "{{level}}", transition: 1 },
    },
  },
};

describe("mqtt_json driver through the bridge (aedes over TCP, emulated Zigbee2MQTT lamp)", () => {
  let h: DriverHarness;
  let bulb: EmulatedZigbeeLamp;

  beforeEach(async () => {
    h = await DriverHarness.create();
    bulb = h.own(await EmulatedZigbeeLamp.start(h.broker.url, BASE));
  });
  afterEach(async () => {
    await h.close();
  });

  const act = (action: string, params?: Record<string, unknown>) =>
    h.running.app.inject({ method: "POST", url: "/devices/lamp/action", payload: { action, ...(params ? { params } : {}) } });
  const stored = async () => ((await readStoredValue(h.dbPath, "device:lamp")) as { state: Record<string, unknown> } | null)?.state;

  it("HTTP action -> JSON on <base>/set -> the lamp's state JSON -> committed, published on WB -> restored after restart", async () => {
    const observer = await h.client();
    await observer.subscribe("/devices/lamp/controls/+");
    await h.start({ devices: [lamp] });

    const request = bulb.nextRequest();
    const res = await act("power_on");
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().state).toMatchObject({ power: true, available: true });
    expect(JSON.parse((await request).payload)).toEqual({ state: "ON" });
    // Only the lamp's answer carries the temperature: it went through the state mapping.
    await h.waitForState("lamp", (s) => s.temperature === 21.5);
    expect(await stored()).toEqual({ available: true, power: true, brightness: 10, temperature: 21.5 });
    await observer.waitFor("/devices/lamp/controls/power", (m) => m.payload === "1");
    await observer.waitFor("/devices/lamp/controls/temperature", (m) => m.payload === "21.5");

    // A typed template value: the lamp gets a JSON number.
    const dim = bulb.nextRequest();
    expect((await act("brightness", { level: 120 })).json().state.brightness).toBe(120);
    expect(JSON.parse((await dim).payload)).toEqual({ brightness: 120, transition: 1 });
    await h.waitForState("lamp", (s) => s.brightness === 120);
    // The lamp changes on its own (a remote): state follows.
    await bulb.report({ ...bulb.state, state: "OFF", sensors: { temp: 23 } });
    await h.waitForState("lamp", (s) => s.power === false && s.temperature === 23);
    const before = (await h.running.app.inject({ url: "/devices/lamp/state" })).json();
    expect(await stored()).toEqual(before.state);

    // Zigbee2MQTT does not retain state messages: after the restart only the database knows.
    const { app } = await h.restart();
    expect((await app.inject({ url: "/devices/lamp/state" })).json()).toEqual(before);
  });

  it("follows availability: offline -> available false, unreachable, actions refused; online (JSON form) -> back", async () => {
    await h.start({ devices: [lamp] });
    const { app } = h.running;

    await bulb.setAvailable(false);
    await h.waitForState("lamp", (s) => s.available === false);
    await h.waitForReachable("lamp", false);
    expect((await app.inject({ url: "/devices/lamp/state" })).json()).toMatchObject({ reachable: false, state: { available: false } });
    expect((await stored())?.available).toBe(false);
    const refused = await act("power_on");
    expect(refused.statusCode).toBe(503);
    expect(refused.json().error.code).toBe("device_unreachable");

    await bulb.setAvailable(true, "json");
    await h.waitForState("lamp", (s) => s.available === true);
    await h.waitForReachable("lamp", true);
    const request = bulb.nextRequest();
    expect((await act("power_on")).statusCode).toBe(200);
    // The refused action never reached the lamp: this is the first request it sees.
    await request;
    expect(bulb.requests).toEqual([{ state: "ON" }]);
  });

  it("a button's meta/error `r` from a press while the lamp was away clears when it answers again, and after a press", async () => {
    const observer = await h.client();
    await observer.subscribe("/devices/lamp/controls/+/meta/error");
    await h.start({ devices: [lamp] });
    const topic = "/devices/lamp/controls/power_on/meta/error";
    const after = (from: number, payload: string) => (m: { payload: string }) =>
      observer.received.indexOf(m as (typeof observer.received)[number]) >= from && m.payload === payload;

    await bulb.setAvailable(false);
    await h.waitForReachable("lamp", false);
    let from = observer.received.length;
    await observer.publish("/devices/lamp/controls/power_on/on", "1");
    await observer.waitFor(topic, after(from, "r"));

    from = observer.received.length;
    await bulb.setAvailable(true, "json");
    await h.waitForReachable("lamp", true);
    await observer.waitFor(topic, after(from, ""));
    expect((await retainedNow(h.broker.url)).get(topic)).toBeUndefined();

    // Away again: the press fails with `r`; this time a successful press is what clears it.
    await bulb.setAvailable(false);
    await h.waitForReachable("lamp", false);
    from = observer.received.length;
    await observer.publish("/devices/lamp/controls/power_on/on", "1");
    await observer.waitFor(topic, after(from, "r"));
    await bulb.setAvailable(true, "json");
    await h.waitForReachable("lamp", true);
    expect((await act("power_on")).statusCode).toBe(200);
    await h.waitForState("lamp", (s) => s.power === true);
    expect((await retainedNow(h.broker.url)).get(topic)).toBeUndefined();
  });

  it("logs malformed JSON feedback by topic, ignores it, and keeps working", async () => {
    await h.start({ devices: [lamp] });
    await bulb.publishRaw('{"state": "ON", MARKER-broken');
    await bulb.publishRaw("MARKER-not-json-at-all");
    await bulb.report({ ...bulb.state, sensors: { temp: 30 } });
    await h.waitForState("lamp", (s) => s.temperature === 30);

    const { app, logs } = h.running;
    const warnings = logs.filter((l) => l.includes("not valid JSON")).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatchObject({ level: 40, device: "lamp", topic: BASE });
    expect(logs.join("\n")).not.toContain("MARKER");
    expect((await app.inject({ url: "/devices/lamp/state" })).json().state).toEqual({
      available: true,
      power: false,
      brightness: 10,
      temperature: 30,
    });
    expect((await app.inject({ url: "/health/ready" })).statusCode).toBe(200);
  });

  it("refuses a bad mqtt_json config, naming file and field", async () => {
    const bad = await testConfig(h.dir.path, h.broker.url, {
      devices: [{ ...lamp, config: { state: lamp.config.state } }],
    });
    await expect(buildApp(bad)).rejects.toThrow(/config\/devices\/lamp\.json: config\.base_topic: Invalid input/);
    const badTemplate = await testConfig(h.dir.path, h.broker.url, {
      devices: [{ ...lamp, commands: { dim: { payload: { brightness: "{{level}}" } } } }],
    });
    await expect(buildApp(badTemplate)).rejects.toThrow(
      /config\/devices\/lamp\.json: commands\.dim\.payload\.brightness: "\{\{level\}\}" names no param of this command/,
    );
  });
});
