import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { failedStart, type RunningApp, startApp } from "../helpers/app.js";
import { runToExit } from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, testConfig, writeConfigDir } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { dropPrefix, requireRedis, TEST_REDIS_URL, uniquePrefix } from "../helpers/redis.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const ready = await requireRedis();

function cacheCounter(metrics: string, result: string): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`wb_bridge_state_cache_total{result="${result}"}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe.runIf(ready)("the bridge with the Redis state cache (real SQLite file, real Redis, aedes, Fastify inject)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let prefix: string;
  const running: RunningApp[] = [];
  const proxies: TcpProxy[] = [];

  async function config(redisUrl: string, cache: Record<string, unknown> = {}): Promise<AppConfig> {
    return testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: { db_path: join(dir.path, "state.db"), cache: { key_prefix: prefix, ttl_s: 60, ...cache } },
          logging: { level: "silent" },
          rate_limit: { max: 0 },
        },
      },
      { STATE_REDIS_URL: redisUrl },
    );
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    prefix = uniquePrefix("bridge");
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    for (const p of proxies.splice(0)) await p.close();
    await broker.close();
    await dropPrefix(prefix);
    await dir.remove();
  });

  it("reads state through the cache and counts hits and misses in /metrics", async () => {
    const r = await startApp(await config(TEST_REDIS_URL));
    running.push(r);
    const { app } = r;
    expect((await app.inject({ method: "PUT", url: "/state/note:a", payload: { text: "one" } })).statusCode).toBe(201);
    const before = (await app.inject({ url: "/metrics" })).body;
    for (let i = 0; i < 3; i++) expect((await app.inject({ url: "/state/note:a" })).json()).toMatchObject({ value: { text: "one" } });
    expect((await app.inject({ method: "PUT", url: "/state/note:a", payload: { text: "two" } })).statusCode).toBe(200);
    expect((await app.inject({ url: "/state/note:a" })).json()).toMatchObject({ value: { text: "two" } });
    const after = (await app.inject({ url: "/metrics" })).body;
    expect(cacheCounter(after, "hit")).toBeGreaterThan(cacheCounter(before, "hit"));
    expect(cacheCounter(after, "miss")).toBeGreaterThan(cacheCounter(before, "miss"));
    expect(cacheCounter(after, "error")).toBe(0);
    const rate = (await app.inject({ url: "/health" })).json().state.cache_hit_rate as number;
    expect(rate).toBeGreaterThan(0);
    expect(rate).toBeLessThan(1);
    expect(r.logs.some((l) => l.includes("Redis state cache connected"))).toBe(true);
  });

  it("refuses to start when Redis does not answer, naming it without its password", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    proxies.push(proxy);
    proxy.cut();
    const { err, logs } = await failedStart(await config(`redis://:CACHE-SECRET@127.0.0.1:${proxy.port}`));
    expect(String(err)).toContain(`cannot connect to the Redis state cache at redis://:***@127.0.0.1:${proxy.port}`);
    expect(String(err)).toContain("required_at_start");
    expect(`${String(err)}\n${logs.join("\n")}`).not.toContain("CACHE-SECRET");
  });

  it("with required_at_start false, starts with a warning when Redis does not answer, and serves state from the database", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    proxies.push(proxy);
    proxy.cut();
    const r = await startApp(await config(`redis://:CACHE-SECRET@127.0.0.1:${proxy.port}`, { required_at_start: false }));
    running.push(r);
    const { app } = r;
    expect(app.bridge.phase).toBe("ready");
    const warning = r.logs.find((l) => l.includes("Redis state cache not reachable at start"));
    expect(warning).toBeDefined();
    expect(warning).toContain(`redis://:***@127.0.0.1:${proxy.port}`);
    expect((await app.inject({ method: "PUT", url: "/state/note:a", payload: { text: "one" } })).statusCode).toBe(201);
    expect((await app.inject({ url: "/state/note:a" })).json()).toMatchObject({ value: { text: "one" } });
    expect(r.logs.join("\n")).not.toContain("CACHE-SECRET");
    const health = await app.inject({ url: "/health" });
    expect(health.body).not.toContain("CACHE-SECRET");
  });
});

describe("Redis state cache configuration", () => {
  it("names the variable when the URL is missing or malformed, never the URL", async () => {
    const dir = await tempDir();
    try {
      const system = { persistence: { db_path: join(dir.path, "state.db"), cache: {} }, logging: { level: "silent" } };
      await expect(testConfig(dir.path, "mqtt://127.0.0.1:1", { system })).rejects.toThrow(
        /persistence\.cache\.redis_url_env: environment variable STATE_REDIS_URL is not set/,
      );
      for (const wrong of ["http://u:SECRET@h:6379", "redis://:SECRET@", "redis://:SECRET@h:6379/zero", "SECRET"]) {
        const bad = testConfig(dir.path, "mqtt://127.0.0.1:1", { system }, { STATE_REDIS_URL: wrong });
        await expect(bad).rejects.toThrow(/STATE_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/);
        await expect(bad).rejects.not.toThrow(/SECRET/);
      }
      const named = { persistence: { cache: { redis_url_env: "MY_REDIS" } }, logging: { level: "silent" } };
      const ok = await testConfig(dir.path, "mqtt://127.0.0.1:1", { system: named }, { MY_REDIS: "rediss://:pw@cache.lan:6380/2" });
      expect(ok.system.persistence.cache).toEqual({
        redis_url_env: "MY_REDIS",
        ttl_s: 300,
        key_prefix: "wb:",
        required_at_start: true,
        lock_ttl_ms: 10_000,
        lock_wait_ms: 5000,
      });
      expect(ok.secrets.cacheRedisUrl).toBe("rediss://:pw@cache.lan:6380/2");
      const none = await testConfig(dir.path, "mqtt://127.0.0.1:1", {}, { STATE_REDIS_URL: "redis://127.0.0.1:6379" });
      expect(none.system.persistence.cache).toBeUndefined();
      expect(none.secrets.cacheRedisUrl).toBeNull();
    } finally {
      await dir.remove();
    }
  });

  it("exits 2 naming the variable when the URL is malformed", async () => {
    const dir = await tempDir();
    try {
      const configDir = await writeConfigDir(dir.path, {
        system: { persistence: { cache: { ttl_s: 30 } } },
        devices: [simulatedDevice("tv")],
      });
      const result = await runToExit({
        CONFIG_DIR: configDir,
        STATE_PATH: join(dir.path, "state.db"),
        MQTT_URL: "mqtt://127.0.0.1:1",
        STATE_REDIS_URL: "redis//:CACHE-SECRET@host",
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("STATE_REDIS_URL must be a redis:// or rediss:// URL");
      expect(result.stderr).not.toContain("CACHE-SECRET");
    } finally {
      await dir.remove();
    }
  });
});
