import type { FastifyInstance } from "fastify";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readiness } from "../../app/http/system.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "../../app/mqtt/broker.js";
import { createLogger } from "../../app/observability/logger.js";
import { buildApp } from "../../app/server.js";
import { readVersion } from "../../app/version.js";
import { startApp } from "../helpers/app.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { freePort } from "../helpers/ports.js";
import { parseMetrics, sampleValue } from "../helpers/prometheus.js";

async function metric(app: FastifyInstance, name: string): Promise<number> {
  return sampleValue(parseMetrics((await app.inject({ url: "/metrics" })).body), name);
}

describe("health endpoints", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker | null;
  const cleanup: Array<() => Promise<unknown>> = [];

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    await broker?.close();
    await dir.remove();
  });

  it("/health reports the state count, database size, uptime, version and no cache", async () => {
    const { app } = await startApp(await testConfig(dir.path, broker!.url));
    cleanup.push(() => app.close());
    await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 12 } } });
    await app.bridge.store.write([
      { key: "note:a", value: { x: 1 } },
      { key: "note:b", value: { x: 2 } },
    ]);

    const res = await app.inject({ url: "/health" });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ status: "ok", phase: "ready", version: readVersion() });
    expect(typeof body.uptime_s).toBe("number");
    expect(body.uptime_s).toBeGreaterThanOrEqual(0);
    expect(body.state.keys).toBe((await app.bridge.store.list("")).length);
    expect(body.state.keys).toBeGreaterThanOrEqual(3);
    expect(body.state.db_size_bytes).toBeGreaterThan(0);
    expect(body.state.cache_hit_rate).toBeNull();

    await app.bridge.store.write([{ key: "note:c", value: { x: 3 } }]);
    expect((await app.inject({ url: "/health" })).json().state.keys).toBe(body.state.keys + 1);
  });

  it("/health/live answers while the process runs", async () => {
    const { app } = await startApp(await testConfig(dir.path, broker!.url));
    cleanup.push(() => app.close());
    const res = await app.inject({ url: "/health/live" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ live: true });
  });

  it("is not ready before start: store closed, broker not connected, restore not finished", async () => {
    const { log } = captureLogger();
    const app = await buildApp(await testConfig(dir.path, broker!.url), { logger: log });
    cleanup.push(() => app.close());
    // HTTP is served only after start (Fastify's ready), so the check itself is asked here.
    expect(readiness(app.bridge)).toEqual(["bridge is created", "state store is not open", "MQTT broker is not connected"]);
    await app.ready();
    expect(readiness(app.bridge)).toEqual([]);
    expect((await app.inject({ url: "/health/ready" })).json()).toEqual({ ready: true, reasons: [] });
  });

  it("/health/ready is 503 with reasons while the broker is down, and 200 again once it is back", async () => {
    const { app } = await startApp(await testConfig(dir.path, broker!.url));
    cleanup.push(() => app.close());
    expect((await app.inject({ url: "/health/ready" })).statusCode).toBe(200);
    const port = broker!.port;

    const lost = new Promise<void>((resolve) => app.bridge.mqtt.onDisconnect(resolve));
    await broker!.close();
    broker = null;
    await lost;

    const down = await app.inject({ url: "/health/ready" });
    expect(down.statusCode).toBe(503);
    expect(down.json()).toEqual({ ready: false, reasons: ["MQTT broker is not connected"] });
    expect((await app.inject({ url: "/health" })).json().status).toBe("degraded");
    expect(await metric(app, "wb_bridge_mqtt_connected")).toBe(0);
    expect(await metric(app, "wb_bridge_mqtt_disconnects_total")).toBe(1);
    expect(await metric(app, "wb_bridge_ready")).toBe(1);

    const back = new Promise<void>((resolve) => app.bridge.mqtt.onConnect(resolve));
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });
    await back;
    expect((await app.inject({ url: "/health/ready" })).statusCode).toBe(200);
    expect(await metric(app, "wb_bridge_mqtt_connected")).toBe(1);
    expect(await metric(app, "wb_bridge_mqtt_reconnects_total")).toBe(1);
  });

  it("/health/ready is 503 when the bridge started without its broker", async () => {
    const config = await testConfig(dir.path, `mqtt://127.0.0.1:${await freePort()}`);
    const { log } = captureLogger();
    const app = await buildApp(config, { logger: log, mqttConnectWaitMs: 50 });
    cleanup.push(() => app.close());
    const res = await app.inject({ url: "/health/ready" });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ ready: false, reasons: ["MQTT broker is not connected"] });
  });
});

describe("request ids", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance;
  let logs: string[];

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    ({ app, logs } = await startApp(await testConfig(dir.path, broker.url)));
  });
  afterEach(async () => {
    await app.close();
    await broker.close();
    await dir.remove();
  });

  it("echoes an incoming x-request-id and logs the request under it", async () => {
    const res = await app.inject({ url: "/devices", headers: { "x-request-id": "proxy-7f3a.42" } });
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-request-id"]).toBe("proxy-7f3a.42");
    const lines = logs.map((l) => JSON.parse(l) as { reqId?: string; msg?: string });
    expect(lines.some((l) => l.reqId === "proxy-7f3a.42" && l.msg === "incoming request")).toBe(true);
    expect(lines.some((l) => l.reqId === "proxy-7f3a.42" && l.msg === "request completed")).toBe(true);
  });

  it("generates an id when none (or an unusable one) is sent, errors included", async () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const plain = await app.inject({ url: "/devices" });
    expect(plain.headers["x-request-id"]).toMatch(uuid);
    const hostile = await app.inject({ url: "/devices/nope", headers: { "x-request-id": "a b\u0007c" } });
    expect(hostile.statusCode).toBe(404);
    expect(hostile.headers["x-request-id"]).toMatch(uuid);
    expect(plain.headers["x-request-id"]).not.toBe(hostile.headers["x-request-id"]);
  });
});
