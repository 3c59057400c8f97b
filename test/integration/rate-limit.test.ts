import { join } from "node:path";
import type { FastifyInstance, FastifyRequest, LightMyRequestResponse } from "fastify";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { clientKey, SharedWindowStore } from "../../app/http/rate-limit.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { hsToken, SECRET_ENV, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET } from "../helpers/auth.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

function action(app: FastifyInstance, remoteAddress = "127.0.0.1"): Promise<LightMyRequestResponse> {
  return app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "power_on" }, remoteAddress });
}

describe("rate limits on write routes and body size limits", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let running: RunningApp | null = null;

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });

  afterEach(async () => {
    vi.restoreAllMocks();
    await running?.app.close();
    running = null;
    await broker.close();
    await dir.remove();
  });

  async function start(rateLimit?: { max: number; window_ms?: number }, jwt = false): Promise<FastifyInstance> {
    const system = rateLimit && {
      mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
      persistence: { db_path: join(dir.path, "state.db") },
      logging: { level: "silent" },
      rate_limit: rateLimit,
      ...(jwt ? { auth: { mode: "jwt", jwt: { hs256_secret_env: SECRET_ENV, issuer: TEST_ISSUER, audience: TEST_AUDIENCE } } } : {}),
    };
    const env = jwt ? { [SECRET_ENV]: TEST_SECRET } : {};
    running = await startApp(await testConfig(dir.path, broker.url, system ? { system } : {}, env));
    return running.app;
  }

  it("answers the 4th write from one client with 429, Retry-After and the error body; reads and other clients go on", async () => {
    const app = await start({ max: 3, window_ms: 60_000 });
    for (let i = 0; i < 3; i++) {
      const ok = await action(app);
      expect(ok.statusCode).toBe(200);
      expect(ok.headers["x-ratelimit-remaining"]).toBe(String(2 - i));
    }

    const limited = await action(app);
    expect(limited.statusCode).toBe(429);
    expect(Number(limited.headers["retry-after"])).toBeGreaterThan(0);
    expect(Number(limited.headers["retry-after"])).toBeLessThanOrEqual(60);
    expect(limited.headers["content-type"]).toMatch(/application\/json/);
    expect(limited.json()).toMatchObject({ error: { code: "rate_limited", message: expect.stringMatching(/retry in/) } });

    // One budget for all writes: another write route is limited for this client too.
    const otherWrite = await app.inject({ method: "PUT", url: "/state/app:x", payload: { a: 1 } });
    expect(otherWrite.statusCode).toBe(429);

    // Reads are not limited.
    for (let i = 0; i < 5; i++) {
      const read = await app.inject({ url: "/devices/tv/state" });
      expect(read.statusCode).toBe(200);
      expect(read.headers["x-ratelimit-remaining"]).toBeUndefined();
    }

    // Another client has its own budget.
    expect((await action(app, "10.0.0.2")).statusCode).toBe(200);
    expect((await app.inject({ method: "PUT", url: "/state/app:x", payload: { a: 1 }, remoteAddress: "10.0.0.2" })).statusCode).toBe(201);
  });

  it("does not limit at all with max 0", async () => {
    const app = await start({ max: 0 });
    for (let i = 0; i < 10; i++) {
      const res = await action(app);
      expect(res.statusCode).toBe(200);
      expect(res.headers["x-ratelimit-limit"]).toBeUndefined();
    }
  });

  it("refuses a body over the limit with 413 in the error format", async () => {
    const app = await start();
    const big = { action: "power_on", params: { blob: "x".repeat(300 * 1024) } };
    const res = await app.inject({ method: "POST", url: "/devices/tv/action", payload: big });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
    // Still within the limit of the /state routes, which accept larger values.
    const state = await app.inject({ method: "PUT", url: "/state/app:big", payload: { blob: "x".repeat(300 * 1024) } });
    expect(state.statusCode).toBe(201);
  });

  it("with tokens, counts per subject: one subject shares a budget across addresses, two subjects on one address do not", async () => {
    const app = await start({ max: 2, window_ms: 60_000 }, true);
    const as = async (sub: string, remoteAddress: string) =>
      app.inject({
        method: "POST",
        url: "/devices/tv/action",
        payload: { action: "power_on" },
        remoteAddress,
        headers: { authorization: `Bearer ${await hsToken({ claims: { sub, scope: "devices:control" } })}` },
      });
    expect((await as("alice", "10.0.0.1")).statusCode).toBe(200);
    expect((await as("alice", "10.0.0.2")).statusCode).toBe(200);
    const limited = await as("alice", "10.0.0.3");
    expect(limited.statusCode).toBe(429);
    expect(limited.json().error.code).toBe("rate_limited");
    expect((await as("bob", "10.0.0.1")).statusCode).toBe(200);
    // A request the auth layer refuses is answered 401 before the limit is counted.
    const anonymous = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "power_on" } });
    expect(anonymous.statusCode).toBe(401);
  });

  it("keys clients by the authenticated subject when there is one, else by address", () => {
    const request = (extra: Record<string, unknown>) => ({ ip: "192.0.2.7", ...extra }) as unknown as FastifyRequest;
    expect(clientKey(request({ auth: { subject: "alice", permissions: new Set() } }))).toBe("sub:alice");
    expect(clientKey(request({ auth: { sub: "carol" } }))).toBe("sub:carol");
    expect(clientKey(request({ auth: null }))).toBe("ip:192.0.2.7");
    expect(clientKey(request({ auth: { subject: null } }))).toBe("ip:192.0.2.7");
    expect(clientKey(request({}))).toBe("ip:192.0.2.7");
    expect(clientKey(request({ ip: "::ffff:192.0.2.7" }))).toBe("ip:192.0.2.7");
  });

  it("opens a new window once the old one has passed", () => {
    const now = vi.spyOn(Date, "now").mockReturnValue(1_000_000);
    const store = new SharedWindowStore();
    const counts: Array<{ current: number; ttl: number }> = [];
    const incr = () => store.child().incr("ip:a", (_err, res) => void counts.push(res!), 1000, 10);
    incr();
    now.mockReturnValue(1_000_400);
    incr();
    now.mockReturnValue(1_001_000);
    incr();
    expect(counts).toEqual([
      { current: 1, ttl: 1000 },
      { current: 2, ttl: 600 },
      { current: 1, ttl: 1000 },
    ]);
  });
});
