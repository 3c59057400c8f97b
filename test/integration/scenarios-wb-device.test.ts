import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { type Received, startTestBroker, TestMqttClient } from "../helpers/mqtt.js";

const scenarios = [
  {
    scenario_id: "watch_tv",
    name: "Watch TV",
    names: { ru: "Телевизор" },
    roles: { display: "tv", audio: "amp" },
    devices: ["tv", "amp"],
    startup: [
      { role: "display", action: "power_on" },
      { role: "audio", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 30 } },
    ],
    shutdown: [
      { device: "tv", action: "power_off" },
      { device: "amp", action: "power_off" },
    ],
  },
  {
    scenario_id: "music",
    name: "Music",
    roles: { audio: "amp" },
    devices: ["amp"],
    startup: [{ device: "amp", action: "power_on" }],
    shutdown: [{ device: "amp", action: "power_off" }],
  },
];

const DEV = "/devices/scenarios";
const VALUE = `${DEV}/controls/scenario`;
const ON = `${VALUE}/on`;
const ERROR = `${VALUE}/meta/error`;
// Commands of the fixture devices that need no value: pushbuttons per role.
const buttonsOf = (role: string) => ["power_on", "power_off", "volume_up"].map((a) => `${role}_${a}`);

describe("scenario system WB device (aedes over TCP)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let config: AppConfig;
  const running: RunningApp[] = [];
  const clients: TestMqttClient[] = [];

  async function start(): Promise<RunningApp> {
    const r = await startApp(config);
    running.push(r);
    return r;
  }
  async function peer(filter?: string): Promise<TestMqttClient> {
    const c = await TestMqttClient.connect(broker.url);
    clients.push(c);
    if (filter) await c.subscribe(filter);
    return c;
  }
  /**
   * The controls a client connecting now is told about (retained, non-empty meta), once
   * the expected ones have arrived. Deletions are checked on the observer's stream.
   */
  async function retainedControls(expected: string[]): Promise<string[]> {
    const fresh = await peer(`${DEV}/controls/+/meta`);
    for (const control of expected) await fresh.waitFor(`${DEV}/controls/${control}/meta`, (m) => m.retain);
    return fresh.received
      .filter((m: Received) => m.retain && m.payload !== "")
      .map((m) => m.topic.slice(`${DEV}/controls/`.length, -"/meta".length))
      .sort();
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    config = await testConfig(dir.path, broker.url, { scenarios });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const r of running.splice(0)) await r.app.close();
    await broker.close();
    await dir.remove();
  });

  it("publishes the device retained: meta, a writable text control with the scenario choices, value none", async () => {
    await start();
    const observer = await peer(`${DEV}/#`);
    expect(JSON.parse((await observer.waitFor(`${DEV}/meta`, (m) => m.retain)).payload)).toEqual({
      driver: "wb-bridge",
      title: { en: "Scenarios" },
    });
    expect((await observer.waitFor(`${DEV}/meta/name`, (m) => m.retain)).payload).toBe("Scenarios");
    const meta = JSON.parse((await observer.waitFor(`${VALUE}/meta`, (m) => m.retain)).payload);
    expect(meta).toMatchObject({ type: "text", readonly: false, order: 1 });
    expect(meta.enum).toEqual({
      none: { en: "None", ru: "Нет" },
      music: { en: "Music" },
      watch_tv: { en: "Watch TV", ru: "Телевизор" },
    });
    expect((await observer.waitFor(VALUE, (m) => m.retain)).payload).toBe("none");
    expect(await retainedControls(["scenario"])).toEqual(["scenario"]);
  });

  it("switches by /on, shows role pushbuttons, runs them, and replaces them on the next switch", async () => {
    const { app } = await start();
    const observer = await peer(`${DEV}/#`);
    await observer.waitFor(VALUE, (m) => m.payload === "none");

    await observer.publish(ON, "watch_tv");
    await observer.waitFor(VALUE, (m) => m.payload === "watch_tv");
    expect((await app.inject({ url: "/scenario/state" })).json().scenario_id).toBe("watch_tv");
    const buttonMeta = JSON.parse((await observer.waitFor(`${DEV}/controls/audio_volume_up/meta`)).payload);
    expect(buttonMeta).toMatchObject({ type: "pushbutton", readonly: false });
    const all = ["scenario", ...buttonsOf("audio"), ...buttonsOf("display")].sort();
    expect(await retainedControls(all)).toEqual(all);

    // A press runs the role action on the role's device; the press is answered, not retained.
    await observer.publish(`${DEV}/controls/audio_volume_up/on`, "1");
    const answer = await observer.waitFor(`${DEV}/controls/audio_volume_up`, (m) => m.payload === "1");
    expect(answer.retain).toBe(false);
    expect((await app.inject({ url: "/devices/amp/state" })).json().state.volume).toBe(35);

    // "music" has only the audio role: the display buttons are deleted (empty retained meta and value).
    await observer.publish(ON, "music");
    await observer.waitFor(VALUE, (m) => m.payload === "music");
    for (const control of buttonsOf("display")) {
      await observer.waitFor(`${DEV}/controls/${control}/meta`, (m) => m.payload === "");
      await observer.waitFor(`${DEV}/controls/${control}`, (m) => m.payload === "");
    }
    const audioOnly = ["scenario", ...buttonsOf("audio")].sort();
    expect(await retainedControls(audioOnly)).toEqual(audioOnly);
    expect((await app.inject({ url: "/devices/tv/state" })).json().state.power).toBe(false);

    // A button of the old scenario is not run.
    const before = (await app.inject({ url: "/devices/tv/state" })).json();
    await observer.publish(`${DEV}/controls/display_power_on/on`, "1");
    await observer.publish(`${DEV}/controls/audio_volume_up/on`, "1");
    await observer.waitFor(`${DEV}/controls/audio_volume_up`, (m) => m.payload === "1" && m !== answer);
    expect((await app.inject({ url: "/devices/tv/state" })).json()).toEqual(before);
  });

  it("writing none shuts down and removes the role buttons; unknown ids set meta/error w until a success", async () => {
    const { app } = await start();
    const observer = await peer(`${DEV}/#`);
    await observer.publish(ON, "watch_tv");
    await observer.waitFor(VALUE, (m) => m.payload === "watch_tv");

    await observer.publish(ON, "cinema");
    expect((await observer.waitFor(ERROR, (m) => m.payload === "w")).payload).toBe("w");
    expect((await app.inject({ url: "/scenario/state" })).json().scenario_id).toBe("watch_tv");

    const events: string[] = [];
    app.bridge.bus.on("scenario.shutdown", (e) => void events.push(e.scenario_id));
    await observer.publish(ON, "none");
    await observer.waitFor(VALUE, (m) => m.payload === "none");
    await observer.waitFor(ERROR, (m) => m.payload === "");
    for (const control of [...buttonsOf("audio"), ...buttonsOf("display")]) {
      await observer.waitFor(`${DEV}/controls/${control}/meta`, (m) => m.payload === "");
    }
    expect(events).toEqual(["watch_tv"]);
    expect((await app.inject({ url: "/scenario/state" })).json()).toMatchObject({ scenario_id: null });
    expect((await app.inject({ url: "/devices/amp/state" })).json().state.power).toBe(false);
    expect(await retainedControls(["scenario"])).toEqual(["scenario"]);
  });

  it("never executes a retained /on and deletes stale role controls left on the broker", async () => {
    const stale = await peer();
    await stale.publish(ON, "watch_tv", true);
    await stale.publish(`${DEV}/controls/ghost_power_on/meta`, JSON.stringify({ type: "pushbutton" }), true);
    const observer = await peer(`${DEV}/#`);
    const { app, logs } = await start();

    await observer.waitFor(`${DEV}/controls/ghost_power_on/meta`, (m) => m.payload === "" && !m.retain);
    // A live command after the retained one: once it is applied, the retained one was seen and skipped.
    await observer.publish(ON, "music");
    await observer.waitFor(VALUE, (m) => m.payload === "music");
    const state = (await app.inject({ url: "/scenario/state" })).json();
    expect(state.scenario_id).toBe("music");
    // watch_tv never ran: the TV was never switched on.
    expect((await app.inject({ url: "/devices/tv/state" })).json().state.power).toBe(false);
    expect(logs.some((l) => l.includes("ignoring retained command") && l.includes('"device":"scenarios"'))).toBe(true);
    await stale.publish(ON, "", true);
  });

  it("restores the active scenario's value and buttons after a restart and republishes after a broker restart", async () => {
    const first = await start();
    await first.app.inject({ method: "POST", url: "/scenario/start", payload: { id: "music" } });
    await first.app.close();
    running.pop();

    const { app } = await start();
    const port = broker.port;
    await broker.close();
    const { startEmbeddedBroker } = await import("../../app/mqtt/broker.js");
    const { createLogger } = await import("../../app/observability/logger.js");
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });

    // The fresh broker knows nothing; the bridge brings the device back on reconnect.
    const observer = await peer(`${DEV}/#`);
    await observer.waitFor(VALUE, (m) => m.payload === "music", 10_000);
    await observer.waitFor(`${DEV}/controls/audio_power_off/meta`, (m) => m.payload !== "", 10_000);
    expect(app.bridge.mqtt.connectCount).toBeGreaterThanOrEqual(2);
    // Commands work again: the subscription was renewed.
    await observer.publish(ON, "watch_tv");
    await observer.waitFor(VALUE, (m) => m.payload === "watch_tv");
  });
});
