import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type AppConfig, loadConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { tempDir } from "../helpers/fixtures.js";
import { mosquittoAvailable, PrivateMosquitto } from "../helpers/mosquitto.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { type Retained, retainedSnapshot } from "../helpers/retained.js";
import { readStoredValue } from "../helpers/sqlite.js";

const demoConfigDir = join(import.meta.dirname, "../../config");
const goldenFile = join(import.meta.dirname, "../golden/demo-wb-topics.json");

/** The demo config on the given broker, with its database in `dir`. */
async function demoConfig(dir: string, brokerUrl: string): Promise<AppConfig> {
  return loadConfig({
    configDir: demoConfigDir,
    env: { STATE_PATH: join(dir, "demo.db"), MQTT_URL: brokerUrl, HTTP_PORT: "0" },
    cwd: dir,
  });
}

async function golden(): Promise<Retained> {
  return JSON.parse(await readFile(goldenFile, "utf8")) as Retained;
}

describe("the demo configuration on MQTT (golden)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let running: RunningApp | null = null;

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });
  afterEach(async () => {
    await running?.app.close();
    running = null;
    await broker.close();
    await dir.remove();
  });

  it("publishes exactly the pinned WB topics and payloads", async () => {
    running = await startApp(await demoConfig(dir.path, broker.url));
    if (process.env.UPDATE_GOLDEN) {
      const snapshot = await retainedSnapshot(broker.url, Number.MAX_SAFE_INTEGER);
      await writeFile(goldenFile, `${JSON.stringify(snapshot, null, 1)}\n`);
    }
    const expected = await golden();
    expect(await retainedSnapshot(broker.url, expected.length)).toEqual(expected);
  });
});

const skipLocally = !mosquittoAvailable() && !process.env.CI;
if (skipLocally) console.warn("demo-on-mosquitto tests skipped: no mosquitto binary and CI is not set");

describe.skipIf(skipLocally)("the demo configuration on a real mosquitto", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let mosquitto: PrivateMosquitto;
  let running: RunningApp | null = null;

  beforeEach(async () => {
    dir = await tempDir();
    mosquitto = await PrivateMosquitto.start();
  });
  afterEach(async () => {
    await running?.app.close();
    running = null;
    await mosquitto.stop();
    await dir.remove();
  });

  it("shows every demo device in WB format, executes /on, persists, and republishes after a broker restart", async () => {
    running = await startApp(await demoConfig(dir.path, mosquitto.url));
    const expected = await golden();
    expect(await retainedSnapshot(mosquitto.url, expected.length)).toEqual(expected);

    const client = await TestMqttClient.connect(mosquitto.url);
    await client.subscribe("/devices/living_room_tv/controls/volume");
    await client.publish("/devices/living_room_tv/controls/volume/on", "37");
    await client.waitFor("/devices/living_room_tv/controls/volume", (m) => m.payload === "37");
    await client.close();
    const stored = (await readStoredValue(join(dir.path, "demo.db"), "device:living_room_tv")) as { state: { volume: number } };
    expect(stored.state.volume).toBe(37);

    // A broker restart without persistence loses every retained message; the bridge brings them back.
    await mosquitto.restart();
    const after = expected.map(([topic, payload]): [string, string] =>
      topic === "/devices/living_room_tv/controls/volume" ? [topic, "37"] : [topic, payload],
    );
    expect(await retainedSnapshot(mosquitto.url, after.length)).toEqual(after);
  });

  it("switching movie -> music keeps the shared amplifier on: no power code is sent to it", async () => {
    running = await startApp(await demoConfig(dir.path, mosquitto.url));
    const blaster = await TestMqttClient.connect(mosquitto.url);
    await blaster.subscribe("/devices/wb-msw-v3_21/controls/+/on");
    const { app } = running;

    const movie = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "movie" } });
    expect(movie.json()).toMatchObject({ success: true, to: "movie" });
    await blaster.waitFor("/devices/wb-msw-v3_21/controls/Play from ROM1/on");
    const before = blaster.received.length;

    const music = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } });
    expect(music.json()).toMatchObject({ success: true, from: "movie", to: "music" });
    // The input code (ROM 8) arrives; by then any power code sent before it would have too.
    await blaster.waitFor("/devices/wb-msw-v3_21/controls/Play from ROM8/on");
    const during = blaster.received.slice(before).map((m) => m.topic);
    expect(during).toEqual(["/devices/wb-msw-v3_21/controls/Play from ROM8/on"]);
    expect(app.bridge.devices.getState("amplifier").state).toMatchObject({ power: true, input: "bluetooth" });
    expect(app.bridge.devices.getState("projector").state.power).toBe(false);
    await blaster.close();
  });
});
