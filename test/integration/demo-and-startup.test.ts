import { existsSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../app/config/loader.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "../../app/mqtt/broker.js";
import { createLogger } from "../../app/observability/logger.js";
import { buildApp } from "../../app/server.js";
import { startApp } from "../helpers/app.js";
import { runToExit } from "../helpers/bridge-process.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { freePort } from "../helpers/ports.js";
import { readStoredValue } from "../helpers/sqlite.js";

const demoConfigDir = join(import.meta.dirname, "../../config");

describe("the demo configuration and start-up conditions", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const cleanup: Array<() => Promise<void>> = [];

  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    await dir.remove();
  });

  it("runs the committed demo config on its embedded broker and answers state for every device", async () => {
    // The demo's own embedded broker, moved to a free port so tests never collide with a running bridge.
    const base = await loadConfig({ configDir: demoConfigDir, env: { STATE_PATH: join(dir.path, "demo.db") }, cwd: dir.path });
    const config = {
      ...base,
      system: {
        ...base.system,
        http: { ...base.system.http, port: 0 },
        mqtt: { ...base.system.mqtt, embedded: { ...base.system.mqtt.embedded, port: 0 } },
      },
    };
    const { app } = await startApp(config);
    cleanup.push(() => app.close());
    const broker = app.bridge.embeddedBroker;
    expect(broker).not.toBeNull();
    // The bridge's own client is connected to it in-process, not over loopback TCP.
    expect(broker?.inProcessConnections).toBe(1);

    const observer = await TestMqttClient.connect(broker!.url);
    cleanup.push(() => observer.close());
    await observer.subscribe("/devices/#");
    const devices = (await app.inject({ url: "/devices" })).json() as Array<{ id: string }>;
    expect(devices.length).toBe(config.devices.length);
    for (const { id } of devices) {
      const res = await app.inject({ url: `/devices/${id}/state` });
      expect(res.statusCode).toBe(200);
      expect(res.json().id).toBe(id);
      // wb_relay devices are already WB devices: the bridge adds no second one for them.
      if (app.bridge.devices.snapshot(id).publishesWbDevice) await observer.waitFor(`/devices/${id}/meta`);
    }
    for (const scenario of config.scenarios) {
      const res = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: scenario.scenario_id } });
      expect(res.statusCode).toBe(200);
      expect(res.json().failed_steps).toEqual([]);
    }
  });

  it("starts and serves without a broker, persists actions, then connects and publishes when it appears", async () => {
    const port = await freePort();
    const config = await testConfig(dir.path, `mqtt://127.0.0.1:${port}`);
    const { log } = captureLogger();
    const app = await buildApp(config, { logger: log, mqttConnectWaitMs: 100 });
    cleanup.push(() => app.close());
    await app.ready();

    const ready = await app.inject({ url: "/health/ready" });
    expect(ready.statusCode).toBe(503);
    expect(ready.json().reasons).toContain("MQTT broker is not connected");
    const action = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 88 } } });
    expect(action.statusCode).toBe(200);
    expect(((await readStoredValue(join(dir.path, "state.db"), "device:tv")) as { state: { volume: number } }).state.volume).toBe(88);

    const broker: EmbeddedBroker = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });
    cleanup.push(() => broker.close());
    const observer = await TestMqttClient.connect(broker.url);
    cleanup.push(() => observer.close());
    await observer.subscribe("/devices/tv/controls/volume");
    await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "88", 10_000);
    expect((await app.inject({ url: "/health/ready" })).statusCode).toBe(200);
  });

  it("keeps serving HTTP and committing while the broker is away", async () => {
    const broker = await startTestBroker();
    const config = await testConfig(dir.path, broker.url);
    const { app } = await startApp(config);
    cleanup.push(() => app.close());
    const port = broker.port;
    await broker.close();

    const res = await app.inject({ method: "POST", url: "/devices/amp/action", payload: { action: "power_on" } });
    expect(res.statusCode).toBe(200);
    expect((await app.inject({ url: "/health" })).json().mqtt.connected).toBe(false);

    const back = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });
    cleanup.push(() => back.close());
    const observer = await TestMqttClient.connect(back.url);
    cleanup.push(() => observer.close());
    await observer.subscribe("/devices/amp/controls/power");
    await observer.waitFor("/devices/amp/controls/power", (m) => m.payload === "1", 10_000);
  });

  it("with its HTTP or embedded broker port taken, the demo start says which port and how to change it, before touching anything", async () => {
    const squatter = createServer();
    await new Promise<void>((resolve) => squatter.listen(0, "127.0.0.1", resolve));
    cleanup.push(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const taken = (squatter.address() as AddressInfo).port;
    const db = join(dir.path, "demo.db");
    const env = { CONFIG_DIR: demoConfigDir, STATE_PATH: db };

    const http = await runToExit({ ...env, HTTP_PORT: String(taken), MQTT_EMBEDDED_PORT: String(await freePort()) });
    expect(http.code).toBe(1);
    expect(http.stderr).toBe(
      `wb-bridge: failed to start: HTTP port 127.0.0.1:${taken} is already in use by another process; set HTTP_PORT=<port> (or "http.port" in config/system.json) to a free port\n`,
    );
    expect(existsSync(db)).toBe(false);

    const mqtt = await runToExit({ ...env, MQTT_EMBEDDED_PORT: String(taken) });
    expect(mqtt.code).toBe(1);
    expect(mqtt.stderr).toContain(
      `embedded MQTT broker port 127.0.0.1:${taken} is already in use by another process; set MQTT_EMBEDDED_PORT=<port>`,
    );
    expect(mqtt.stderr).toContain("MQTT_URL=mqtt://host:port uses that broker instead");
    expect(existsSync(db)).toBe(false);
  }, 60_000);
});
