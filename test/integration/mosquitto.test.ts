import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningApp, startApp } from "../helpers/app.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { TestMqttClient } from "../helpers/mqtt.js";
import { readStoredValue } from "../helpers/sqlite.js";

const MOSQUITTO = "mqtt://127.0.0.1:1883";

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(2000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

const available = await reachable("127.0.0.1", 1883);
// In CI a missing broker is a failure (the suite below runs and fails); locally it is a printed skip.
const skipLocally = !available && !process.env.CI;
if (skipLocally) {
  console.warn("mosquitto interop tests skipped: nothing listens on 127.0.0.1:1883 and CI is not set");
}

describe.skipIf(skipLocally)("interop with the system mosquitto on 127.0.0.1:1883", () => {
  const id = `interop_${process.pid}_${Date.now().toString(36)}`;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let running: RunningApp | null = null;
  let observer: TestMqttClient;

  beforeAll(async () => {
    if (!available) throw new Error("CI is set but no MQTT broker listens on 127.0.0.1:1883 (mosquitto is required)");
    dir = await tempDir();
    observer = await TestMqttClient.connect(MOSQUITTO);
    await observer.subscribe(`/devices/${id}/#`);
  });

  afterAll(async () => {
    await running?.app.close();
    if (observer) {
      // Leave no retained topics of ours behind on the shared broker.
      const retained = [...new Set(observer.received.filter((m) => m.payload !== "").map((m) => m.topic))];
      for (const topic of retained) await observer.publish(topic, "", true);
      await observer.close();
    }
    await dir?.remove();
  });

  it("performs HTTP and MQTT actions, persists them, and restores them after restart", async () => {
    const config = await testConfig(dir.path, MOSQUITTO, { devices: [simulatedDevice(id)] });
    running = await startApp(config);
    const { app } = running;

    const res = await app.inject({ method: "POST", url: `/devices/${id}/action`, payload: { action: "volume", params: { level: 33 } } });
    expect(res.statusCode).toBe(200);
    await observer.waitFor(`/devices/${id}/controls/volume`, (m) => m.payload === "33");

    await observer.publish(`/devices/${id}/controls/power/on`, "1");
    await observer.waitFor(`/devices/${id}/controls/power`, (m) => m.payload === "1");
    await observer.publish(`/devices/${id}/controls/volume/on`, "not-a-number");
    await observer.waitFor(`/devices/${id}/controls/volume/meta/error`, (m) => m.payload === "w");

    const stored = (await readStoredValue(join(dir.path, "state.db"), `device:${id}`)) as { state: unknown };
    expect(stored.state).toEqual({ power: true, volume: 33, muted: false, input: "hdmi1" });

    await app.close();
    running = await startApp(config);
    const restored = await running.app.inject({ url: `/devices/${id}/state` });
    expect(restored.json().state).toEqual(stored.state);
  });
});
