import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { hsToken, SECRET_ENV, TEST_AUDIENCE, TEST_SECRET } from "../helpers/auth.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

describe("the HS256 secret never leaves the process", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });
  afterEach(async () => {
    await broker.close();
    await dir.remove();
  });

  it("no response body or log line contains it, across successes and failures", async () => {
    const config = await testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: { db_path: join(dir.path, "state.db") },
          logging: { level: "trace" },
          auth: { mode: "jwt", jwt: { hs256_secret_env: SECRET_ENV, audience: TEST_AUDIENCE } },
        },
      },
      { [SECRET_ENV]: TEST_SECRET },
    );
    const { log, lines } = captureLogger("debug");
    const app = await buildApp(config, { logger: log, sleep: async () => undefined });
    try {
      await app.ready();
      const admin = await hsToken({ claims: { scope: "admin" } });
      const reader = await hsToken({ claims: { scope: "devices:read" } });
      const requests: Array<{ method: "GET" | "POST" | "PUT"; url: string; token?: string; payload?: unknown; status: number }> = [
        { method: "GET", url: "/devices", status: 401 },
        { method: "GET", url: "/devices", token: "garbage", status: 401 },
        { method: "GET", url: "/devices", token: await hsToken({ expiresIn: -3600 }), status: 401 },
        { method: "GET", url: "/devices", token: await hsToken({}, "wrong-secret-wrong-secret-wrong-secret!"), status: 401 },
        { method: "POST", url: "/backups", token: reader, status: 403 },
        { method: "GET", url: "/health", token: admin, status: 200 },
        { method: "GET", url: "/devices/tv", token: reader, status: 200 },
        { method: "POST", url: "/devices/tv/action", token: admin, payload: { action: "nope" }, status: 400 },
        { method: "PUT", url: "/state/user:k1", token: admin, payload: { value: 1 }, status: 201 },
        { method: "GET", url: "/no/such/route", status: 404 },
      ];
      const bodies: string[] = [];
      for (const r of requests) {
        const res = await app.inject({
          method: r.method,
          url: r.url,
          headers: r.token ? { authorization: `Bearer ${r.token}` } : {},
          ...(r.payload !== undefined ? { payload: r.payload as object } : {}),
        });
        expect(res.statusCode, `${r.method} ${r.url}`).toBe(r.status);
        bodies.push(res.body, JSON.stringify(res.headers));
      }
      await app.close();
      expect(lines.length).toBeGreaterThan(10);
      expect(lines.some((l) => l.includes("token rejected"))).toBe(true);
      for (const text of [...bodies, ...lines]) expect(text).not.toContain(TEST_SECRET);
      // Tokens are credentials too: never echoed in bodies, never logged.
      for (const text of [...bodies, ...lines]) expect(text).not.toContain(admin);
    } finally {
      await app.close();
    }
  });
});
