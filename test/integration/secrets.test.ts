import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { SignJWT } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { createLogger } from "../../app/observability/logger.js";
import { buildApp } from "../../app/server.js";
import { generateFernetKey } from "../../app/state/fernet.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";

/** Every GET route of the app, as paths (`/devices/:id`), read from Fastify's route tree. */
function getRoutes(app: FastifyInstance): string[] {
  const stack: string[] = [];
  const paths: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false, method: "GET" }).split("\n")) {
    const m = /^(.*?)(?:├── |└── )(.*) \((.*)\)$/.exec(line);
    if (!m) continue;
    const depth = (m[1] ?? "").length / 4;
    stack.length = depth;
    stack.push(m[2] ?? "");
    if ((m[3] ?? "").split(", ").includes("GET")) paths.push(stack.join(""));
  }
  return paths;
}

/** A line-capturing logger at any level (test/helpers' captureLogger stops at debug). */
function traceLogger(): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(line);
      done();
    },
  });
  return { log: createLogger("trace", stream), lines };
}

const PERMISSIONS = "state:read state:write devices:read devices:control scenarios:control admin";
const MARKER_INPUT = `marker_input_${randomBytes(6).toString("hex")}`;
const MARKER_STATE = `marker_state_${randomBytes(6).toString("hex")}`;

describe("secrets and state values stay out of logs and responses", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance | null = null;
  let peer: TestMqttClient | null = null;

  const secrets = {
    mqttPassword: `mqtt-pw-${randomBytes(16).toString("hex")}`,
    encryptionKey: generateFernetKey(),
    jwtSecret: randomBytes(48).toString("base64url"),
  };
  // Fragments too: a truncated secret in an error message is a leak as well.
  const needles = Object.entries(secrets).flatMap(([name, value]) => [
    { name, text: value },
    { name: `${name} (first 16 chars)`, text: value.slice(0, 16) },
  ]);

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });

  afterEach(async () => {
    await peer?.close();
    peer = null;
    await app?.close();
    app = null;
    await broker.close();
    await dir.remove();
  });

  it("no secret in any GET response, failing request or log line at trace level", async () => {
    const env = {
      WB_MQTT_USER: "bridge",
      WB_MQTT_PASSWORD: secrets.mqttPassword,
      STATE_ENCRYPTION_KEY: secrets.encryptionKey,
      WB_JWT_SECRET: secrets.jwtSecret,
    };
    const config = await testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: "bridge-secrets", username_env: "WB_MQTT_USER", password_env: "WB_MQTT_PASSWORD", reconnect_min_ms: 100 },
          persistence: { db_path: `${dir.path}/state.db` },
          auth: { mode: "jwt", jwt: { hs256_secret_env: "WB_JWT_SECRET" } },
          logging: { level: "trace" },
        },
        devices: [simulatedDevice("tv"), simulatedDevice("amp")],
        scenarios: [{ scenario_id: "movie", name: "Movie", devices: ["tv"], startup: [{ device: "tv", action: "power_on" }] }],
      },
      env,
    );
    expect(config.secrets.encryptionKeys).toBe(secrets.encryptionKey);
    const { log, lines } = traceLogger();
    app = await buildApp(config, { logger: log, env, sleep: async () => undefined });
    await app.ready();
    expect(app.bridge.mqtt.connected).toBe(true);

    const token = await new SignJWT({ scope: PERMISSIONS })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("secrets-test")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(secrets.jwtSecret));
    const forged = await new SignJWT({ scope: PERMISSIONS })
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(randomBytes(48).toString("hex")));
    const auth = { authorization: `Bearer ${token}` };

    // Something to read back: a state key, a backup, a recovery point, a scenario switch.
    expect((await app.inject({ method: "PUT", url: "/state/test:x", headers: auth, payload: { note: "hello" } })).statusCode).toBeLessThan(
      300,
    );
    expect((await app.inject({ method: "POST", url: "/backups", headers: auth })).statusCode).toBeLessThan(300);
    expect(
      (await app.inject({ method: "POST", url: "/recovery-points", headers: auth, payload: { label: "t", key: "test:x" } })).statusCode,
    ).toBeLessThan(300);
    expect((await app.inject({ method: "POST", url: "/scenario/switch", headers: auth, payload: { id: "movie" } })).statusCode).toBe(200);

    const routes = getRoutes(app);
    expect(routes).toEqual(expect.arrayContaining(["/health", "/devices/:id/state", "/state/:key", "/backups"]));
    const fill = (path: string) =>
      path
        .replace(/\/devices\/:id/, "/devices/tv")
        .replace(/\/:id/g, "/movie")
        .replace(/:key/g, "test:x")
        .replace(/:[a-z_]+/g, "x")
        .replace(/\*/g, "x");
    const responses: Array<{ what: string; text: string }> = [];
    const record = (what: string, res: { statusCode: number; body: string; headers: Record<string, unknown> }) =>
      responses.push({ what: `${what} -> ${res.statusCode}`, text: `${JSON.stringify(res.headers)}\n${res.body}` });

    // /events is a never-ending stream; it carries state events, not configuration.
    for (const route of routes.filter((r) => r !== "/events")) {
      const url = fill(route);
      const res = await app.inject({ method: "GET", url, headers: auth });
      expect(res.statusCode, `GET ${url}`).toBeLessThan(500);
      record(`GET ${url}`, res);
    }
    const failing = [
      { method: "GET", url: "/devices/nope", headers: auth },
      { method: "GET", url: "/health", headers: { authorization: `Bearer ${forged}` } },
      { method: "GET", url: "/state/test:x", headers: { authorization: "Bearer not-a-token" } },
      { method: "POST", url: "/devices/tv/action", headers: auth, payload: { action: "volume", params: { level: 500 } } },
      { method: "POST", url: "/devices/tv/action", headers: { ...auth, "content-type": "application/json" }, payload: "{not json" },
      { method: "PUT", url: "/state/BAD KEY", headers: auth, payload: { a: 1 } },
      { method: "POST", url: "/scenario/switch", headers: auth, payload: { id: "nope" } },
      { method: "POST", url: "/backups/nope.db/restore", headers: auth },
    ] as const;
    for (const req of failing) {
      const res = await app.inject(req);
      expect(res.statusCode, `${req.method} ${req.url}`).toBeGreaterThanOrEqual(400);
      record(`${req.method} ${req.url}`, res);
    }
    await app.close();
    app = null;

    expect(responses.length).toBeGreaterThan(routes.length);
    expect(lines.length).toBeGreaterThan(20);
    for (const { name, text } of needles) {
      for (const r of responses) expect(r.text.includes(text), `${name} in the response of ${r.what}`).toBe(false);
      const leaked = lines.filter((l) => l.includes(text));
      expect(leaked, `${name} in the log`).toEqual([]);
    }
  });

  it("state values never appear in the log, even at trace level", async () => {
    const tv = simulatedDevice("tv", {
      config: { inputs: ["hdmi1", MARKER_INPUT] },
      commands: {
        power_on: {},
        input: { params: [{ name: "input", type: "string", enum: ["hdmi1", MARKER_INPUT] }] },
      },
    });
    const config = await testConfig(dir.path, broker.url, {
      system: {
        mqtt: { client_id: "bridge-markers", reconnect_min_ms: 100 },
        persistence: { db_path: `${dir.path}/state.db` },
      },
      devices: [tv],
    });
    const { log, lines } = traceLogger();
    app = await buildApp(config, { logger: log, sleep: async () => undefined });
    await app.ready();

    // Through the state API (create, patch, read, history) ...
    const put = await app.inject({ method: "PUT", url: "/state/test:x", payload: { note: MARKER_STATE, nested: { v: MARKER_STATE } } });
    expect(put.statusCode).toBe(201);
    const patch = await app.inject({ method: "PATCH", url: "/state/test:x", payload: { other: MARKER_STATE } });
    expect(patch.statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/state/test:x" })).body).toContain(MARKER_STATE);
    expect((await app.inject({ method: "GET", url: "/state/test:x/history" })).body).toContain(MARKER_STATE);
    // ... a value too large and a stale write (their errors must not echo the value) ...
    const big = await app.inject({ method: "PUT", url: "/state/test:big", payload: { note: MARKER_STATE.repeat(80_000) } });
    expect(big.statusCode).toBeGreaterThanOrEqual(400);
    const stale = await app.inject({
      method: "PUT",
      url: "/state/test:x",
      headers: { "if-match": '"stale"' },
      payload: { note: MARKER_STATE },
    });
    expect(stale.statusCode).toBe(412);
    // ... an HTTP device action ...
    const action = await app.inject({
      method: "POST",
      url: "/devices/tv/action",
      payload: { action: "input", params: { input: MARKER_INPUT } },
    });
    expect(action.statusCode).toBe(200);
    expect(action.body).toContain(MARKER_INPUT);
    // ... and a command over MQTT, awaited on the value it publishes.
    await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "input", params: { input: "hdmi1" } } });
    peer = await TestMqttClient.connect(broker.url);
    await peer.subscribe("/devices/tv/controls/input");
    await peer.publish("/devices/tv/controls/input/on", MARKER_INPUT);
    await peer.waitFor("/devices/tv/controls/input", (m) => m.payload === MARKER_INPUT);
    await app.close();
    app = null;

    // Every level is captured (the scan covers whatever later code logs at debug or trace).
    expect(log.isLevelEnabled("trace")).toBe(true);
    expect(lines.some((l) => l.includes('"msg":"incoming request"'))).toBe(true);
    for (const marker of [MARKER_STATE, MARKER_INPUT]) {
      expect(
        lines.filter((l) => l.includes(marker)),
        marker,
      ).toEqual([]);
    }
  });
});
