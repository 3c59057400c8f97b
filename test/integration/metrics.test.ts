import { request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { register as globalRegistry } from "prom-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { readVersion } from "../../app/version.js";
import { startApp } from "../helpers/app.js";
import { captureLogger, simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { parseMetrics, type Sample, sampleValue } from "../helpers/prometheus.js";

const scenarios = [{ scenario_id: "tv", name: "TV", devices: ["tv"], startup: [{ device: "tv", action: "power_on" }] }];

async function scrape(app: FastifyInstance): Promise<Sample[]> {
  const res = await app.inject({ url: "/metrics" });
  expect(res.statusCode).toBe(200);
  return parseMetrics(res.body);
}

function systemWith(root: string, metrics: Record<string, unknown>): Record<string, unknown> {
  return {
    mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
    persistence: { db_path: join(root, "state.db") },
    logging: { level: "silent" },
    metrics,
  };
}

describe("GET /metrics", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  const cleanup: Array<() => Promise<unknown>> = [];

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
    await broker.close();
    await dir.remove();
  });

  async function start(files: Parameters<typeof testConfig>[2] = { scenarios }): Promise<FastifyInstance> {
    const { app } = await startApp(await testConfig(dir.path, broker.url, files));
    cleanup.push(() => app.close());
    return app;
  }

  it("serves the Prometheus text format from the app's own registry, with process and event-loop metrics", async () => {
    const app = await start();
    const res = await app.inject({ url: "/metrics" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parseMetrics(res.body);
    expect(sampleValue(samples, "wb_bridge_info", { version: readVersion() })).toBe(1);
    expect(sampleValue(samples, "wb_bridge_ready")).toBe(1);
    expect(sampleValue(samples, "wb_bridge_mqtt_connected")).toBe(1);
    expect(samples.some((s) => s.name === "nodejs_eventloop_lag_seconds")).toBe(true);
    expect(samples.some((s) => s.name === "process_cpu_user_seconds_total")).toBe(true);
    // No singleton: prom-client's global registry holds none of it.
    expect(await globalRegistry.metrics()).not.toContain("wb_bridge_");
    expect(app.bridge.metrics.registry).not.toBe(globalRegistry);
  });

  it("counts an HTTP action, an MQTT command and a scenario switch with their labels and latencies", async () => {
    const app = await start();
    const peer = await TestMqttClient.connect(broker.url);
    cleanup.push(() => peer.close());
    await peer.subscribe("/devices/tv/controls/volume");
    const before = await scrape(app);
    const action = (labels: Record<string, string>) => (s: Sample[]) => sampleValue(s, "wb_bridge_device_actions_total", labels);
    const latencyCount = (labels: Record<string, string>) => (s: Sample[]) =>
      sampleValue(s, "wb_bridge_device_action_duration_seconds_count", labels);

    const http = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 31 } } });
    expect(http.statusCode).toBe(200);
    const bad = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 400 } } });
    expect(bad.statusCode).toBe(400);
    // The bridge publishes the commanded value only after the action committed.
    await peer.publish("/devices/tv/controls/volume/on", "42");
    await peer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "42");
    const switched = await app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "tv" } });
    expect(switched.statusCode).toBe(200);
    const operation = (switched.json() as { operation: string }).operation;

    const after = await scrape(app);
    const delta = (f: (s: Sample[]) => number) => f(after) - f(before);
    expect(delta(action({ device: "tv", action: "volume", source: "http", result: "ok" }))).toBe(1);
    expect(delta(action({ device: "tv", action: "volume", source: "http", result: "error" }))).toBe(1);
    expect(delta(action({ device: "tv", action: "volume", source: "mqtt", result: "ok" }))).toBe(1);
    expect(delta(action({ device: "tv", action: "power_on", source: "scenario", result: "ok" }))).toBe(1);
    expect(delta(latencyCount({ device: "tv", action: "volume", result: "ok" }))).toBe(2);
    expect(delta(latencyCount({ device: "tv", action: "volume", result: "error" }))).toBe(1);
    expect(delta((s) => sampleValue(s, "wb_bridge_scenario_switches_total", { scenario: "tv", operation, result: "ok" }))).toBe(1);

    expect(delta((s) => sampleValue(s, "wb_bridge_mqtt_messages_total", { direction: "in" }))).toBeGreaterThanOrEqual(1);
    expect(delta((s) => sampleValue(s, "wb_bridge_mqtt_messages_total", { direction: "out" }))).toBeGreaterThanOrEqual(3);

    const writes = (ns: string) => (s: Sample[]) =>
      sampleValue(s, "wb_bridge_state_operations_total", { op: "write", namespace: ns, result: "ok" });
    expect(delta(writes("device"))).toBeGreaterThanOrEqual(3);
    expect(delta(writes("scenario"))).toBeGreaterThanOrEqual(1);
    expect(
      delta((s) => sampleValue(s, "wb_bridge_state_operation_duration_seconds_count", { op: "write", namespace: "device", result: "ok" })),
    ).toBe(delta(writes("device")));
    expect(delta((s) => sampleValue(s, "wb_bridge_state_commits_total", { result: "ok" }))).toBeGreaterThanOrEqual(1);

    // Bounded labels: never a key, never a value.
    const text = (await app.inject({ url: "/metrics" })).body;
    expect(text).not.toContain("device:tv");
    expect(text).not.toMatch(/\bkey="/);
  });

  it("observes group-commit batch sizes", async () => {
    const app = await start();
    const before = await scrape(app);
    // Ten writes in one turn of the event loop join one transaction.
    await Promise.all(Array.from({ length: 10 }, (_, i) => app.bridge.store.write([{ key: `bench:k${i}`, value: { i } }])));
    const after = await scrape(app);
    const delta = (name: string, labels: Record<string, string> = {}) =>
      sampleValue(after, name, labels) - sampleValue(before, name, labels);
    expect(delta("wb_bridge_state_commit_batch_writes_count")).toBe(1);
    expect(delta("wb_bridge_state_commit_batch_writes_sum")).toBe(10);
    expect(delta("wb_bridge_state_commit_batch_writes_bucket", { le: "8" })).toBe(0);
    expect(delta("wb_bridge_state_commit_batch_writes_bucket", { le: "16" })).toBe(1);
    expect(delta("wb_bridge_state_commit_duration_seconds_count", { result: "ok" })).toBe(1);
    expect(delta("wb_bridge_state_operations_total", { op: "write", namespace: "bench", result: "ok" })).toBe(10);
  });

  it("times backups by reason and result", async () => {
    const app = await start();
    const backups = app.bridge.backups;
    if (!backups) throw new Error("the SQLite app has a backup manager");
    await backups.create("manual");
    const samples = await scrape(app);
    expect(sampleValue(samples, "wb_bridge_backups_total", { reason: "manual", result: "ok" })).toBe(1);
    expect(sampleValue(samples, "wb_bridge_backup_duration_seconds_count", { reason: "manual", result: "ok" })).toBe(1);
    expect(sampleValue(samples, "wb_bridge_last_backup_timestamp_seconds", { result: "ok" })).toBeGreaterThan(Date.now() / 1000 - 60);
  });

  it("shows SSE clients: 1 while one is connected, 0 once it left", async () => {
    const { log } = captureLogger();
    const app = await buildApp(await testConfig(dir.path, broker.url), { logger: log });
    cleanup.push(() => app.close());
    await app.listen({ host: "127.0.0.1", port: 0 });
    const address = app.server.address();
    if (!address || typeof address === "string") throw new Error("no address");
    expect(sampleValue(await scrape(app), "wb_bridge_sse_clients")).toBe(0);

    // The server side of the stream: its close is what the bridge reacts to.
    const serverSide = new Promise<ServerResponse>((resolve) =>
      app.server.on("request", (req: IncomingMessage, res: ServerResponse) => {
        if (req.url === "/events") resolve(res);
      }),
    );
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest(`http://127.0.0.1:${address.port}/events`, (res) => resolve(res));
      req.on("error", reject);
      req.end();
    });
    expect(sampleValue(await scrape(app), "wb_bridge_sse_clients")).toBe(1);

    const res = await serverSide;
    const closed = new Promise<void>((resolve) => res.once("close", () => resolve()));
    response.destroy();
    await closed;
    expect(sampleValue(await scrape(app), "wb_bridge_sse_clients")).toBe(0);
  });

  it("is admin-only by default, public when configured, and absent (404) when disabled", async () => {
    const defaults = await start();
    expect(defaults.routeTable().find((r) => r.url === "/metrics" && r.method === "GET")?.permission).toBe("admin");
    await defaults.close();

    const publicDir = await tempDir();
    cleanup.push(() => publicDir.remove());
    const open = await startApp(
      await testConfig(publicDir.path, broker.url, {
        system: systemWith(publicDir.path, { public: true }),
        devices: [simulatedDevice("tv")],
      }),
    );
    cleanup.push(() => open.app.close());
    expect(open.app.routeTable().find((r) => r.url === "/metrics" && r.method === "GET")?.permission).toBe("public");
    expect((await open.app.inject({ url: "/metrics" })).statusCode).toBe(200);

    const offDir = await tempDir();
    cleanup.push(() => offDir.remove());
    const off = await startApp(
      await testConfig(offDir.path, broker.url, { system: systemWith(offDir.path, { enabled: false }), devices: [simulatedDevice("tv")] }),
    );
    cleanup.push(() => off.app.close());
    const res = await off.app.inject({ url: "/metrics" });
    expect(res.statusCode).toBe(404);
  });
});
