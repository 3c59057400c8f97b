import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { DeviceStateEvent } from "../../app/devices/events.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { powerScenario, simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema, withClient } from "../helpers/postgres.js";
import { dropPrefix, requireRedis, TEST_REDIS_URL, uniquePrefix } from "../helpers/redis.js";

const ready = await requirePostgres();
const redisReady = ready && (await requireRedis());

/**
 * Two bridges in one process on one PostgreSQL schema, as an active/standby pair: the
 * second stands by, follows the first's commits, refuses actions, and takes over when the
 * first stops. The kill -9 case with real processes is in test/fault/postgres-failover.test.ts.
 */
describe.runIf(ready)("active/standby pair on PostgreSQL (in process)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let schema: string;
  const running: RunningApp[] = [];

  async function config(cachePrefix?: string): Promise<AppConfig> {
    return testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: {
            backend: "postgres",
            postgres: { schema, pair: true },
            db_path: join(dir.path, "unused.db"),
            ...(cachePrefix ? { cache: { key_prefix: cachePrefix } } : {}),
          },
          logging: { level: "silent" },
          rate_limit: { max: 0 },
        },
        devices: [simulatedDevice("tv"), simulatedDevice("amp")],
        scenarios: [powerScenario("music", ["amp"])],
      },
      { STATE_DATABASE_URL: TEST_POSTGRES_URL, STATE_REDIS_URL: TEST_REDIS_URL },
    );
  }

  async function start(cachePrefix?: string): Promise<RunningApp> {
    const r = await startApp(await config(cachePrefix));
    running.push(r);
    return r;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    schema = uniqueSchema("pair");
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    await broker.close();
    await dropSchema(schema);
    await dir.remove();
  });

  it("the second bridge stands by, shows the active one's changes, refuses actions, and takes over when it stops", async () => {
    const a = await start();
    const b = await start();
    expect(a.app.bridge.phase).toBe("ready");
    expect(b.app.bridge.phase).toBe("standby");

    const healthA = (await a.app.inject({ method: "GET", url: "/health" })).json();
    const healthB = (await b.app.inject({ method: "GET", url: "/health" })).json();
    expect(healthA.lease).toMatchObject({ role: "active", epoch: 1, active_holder: null });
    expect(healthB).toMatchObject({ status: "standby", phase: "standby", lease: { role: "standby", epoch: null } });
    expect(healthB.lease.active_holder).toMatch(/^wb-bridge@[^ ]+:\d+ \(server backend pid \d+/);
    const metricsB = (await b.app.inject({ method: "GET", url: "/metrics" })).body;
    expect(metricsB).toMatch(/^wb_bridge_lease_active 0$/m);
    expect((await a.app.inject({ method: "GET", url: "/metrics" })).body).toMatch(/^wb_bridge_lease_active 1$/m);
    expect((await b.app.inject({ method: "GET", url: "/health/ready" })).statusCode).toBe(503);

    // The standby drives nothing: actions and switches are refused, naming the active bridge.
    const refused = await b.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "power_on" } });
    expect(refused.statusCode).toBe(503);
    expect(refused.json()).toMatchObject({ error: { code: "standby" } });
    expect(refused.json().error.message).toContain(healthB.lease.active_holder);
    const refusedSwitch = await b.app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } });
    expect(refusedSwitch.statusCode).toBe(503);

    // A change on the active bridge reaches the standby's listeners (and so its SSE stream) and reads.
    const followed = new Promise<DeviceStateEvent>((resolve) => {
      const off = b.app.bridge.bus.on("device.state", (e) => {
        if (e.deviceId === "tv" && e.source === "peer") {
          off();
          resolve(e);
        }
      });
    });
    const act = await a.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 33 } } });
    expect(act.statusCode).toBe(200);
    expect((await followed).state).toMatchObject({ volume: 33 });
    expect((await b.app.inject({ method: "GET", url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 33 });
    expect((await a.app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } })).statusCode).toBe(200);

    // The active one stops: the standby takes over with every acknowledged change.
    await a.app.close();
    running.splice(running.indexOf(a), 1);
    await b.app.bridge.driving;
    expect(b.app.bridge.phase).toBe("ready");
    expect(b.app.bridge.lease).toMatchObject({ role: "active", epoch: 2 });
    expect((await b.app.inject({ method: "GET", url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 33 });
    expect((await b.app.inject({ method: "GET", url: "/scenario/state" })).json()).toMatchObject({ scenario_id: "music" });
    const after = await b.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 34 } } });
    expect(after.statusCode).toBe(200);
  });

  async function concurrentPatches(cachePrefix?: string): Promise<void> {
    const a = await start(cachePrefix);
    const b = await start(cachePrefix);
    expect(b.app.bridge.phase).toBe("standby");
    const keys = ["test:shared-a", "test:shared-b"];
    const N = 1000;
    // 64 requests in flight at a time, alternating bridges and keys, each adding its own field.
    let next = 0;
    const failures: string[] = [];
    const worker = async () => {
      for (let i = next++; i < N; i = next++) {
        const app = i % 2 === 0 ? a.app : b.app;
        const key = keys[Math.floor(i / 2) % 2]!;
        const res = await app.inject({ method: "PATCH", url: `/state/${key}`, payload: { fields: { [`f${i}`]: i } } });
        if (res.statusCode !== 200) failures.push(`${i}: ${res.statusCode} ${res.body}`);
      }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    expect(failures).toEqual([]);
    const merged: Record<string, number> = {};
    for (const key of keys) {
      const value = (await a.app.inject({ method: "GET", url: `/state/${key}` })).json().value as { fields: Record<string, number> };
      Object.assign(merged, value.fields);
    }
    expect(Object.keys(merged)).toHaveLength(N);
    for (let i = 0; i < N; i++) expect(merged[`f${i}`]).toBe(i);
  }

  it("1,000 concurrent partial updates of the same keys through both bridges: none is lost", async () => {
    await concurrentPatches();
  }, 60_000);

  it.runIf(redisReady)(
    "the same with the Redis cache, whose key locks carry fencing tokens: none is lost",
    async () => {
      const prefix = uniquePrefix("pair");
      try {
        await concurrentPatches(prefix);
        // The updates were made under Redis locks: their fencing tokens reached the database.
        const fences = await withClient(TEST_POSTGRES_URL, (c) =>
          c.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.state_fence`),
        );
        expect(Number(fences.rows[0]?.n)).toBe(2);
      } finally {
        for (const r of running.splice(0)) await r.app.close();
        await dropPrefix(prefix);
      }
    },
    60_000,
  );

  it("a bridge whose lease has moved on cannot commit: the action fails, nothing is stored, and the bridge stops", async () => {
    const a = await start();
    const fatal = new Promise<string>((resolve) => a.app.bridge.onFatal(resolve));
    expect(
      (await a.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 20 } } })).statusCode,
    ).toBe(200);
    // What another bridge does when it takes the lease while this one is cut off from the server.
    await withClient(TEST_POSTGRES_URL, (c) => c.query(`UPDATE ${schema}.state_lease SET epoch = epoch + 1`));
    const res = await a.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 21 } } });
    expect(res.statusCode).toBeGreaterThanOrEqual(500);
    expect(await fatal).toContain("has moved to another bridge");
    const stored = await withClient(TEST_POSTGRES_URL, (c) =>
      c.query<{ value: string }>(`SELECT value FROM ${schema}.state_store WHERE key = 'device:tv'`),
    );
    expect(JSON.parse(stored.rows[0]!.value)).toMatchObject({ state: { volume: 20 } });
  });

  it("the standby catches up on changes committed while its notification connection was down", async () => {
    const a = await start();
    const b = await start();
    expect(b.app.bridge.phase).toBe("standby");
    const caughtUp = new Promise<DeviceStateEvent>((resolve) => {
      const off = b.app.bridge.bus.on("device.state", (e) => {
        if (e.deviceId === "amp" && e.source === "peer" && e.state.volume === 61) {
          off();
          resolve(e);
        }
      });
    });
    // Cut the standby's LISTEN session; the change is committed before it listens again.
    const cut = await withClient(TEST_POSTGRES_URL, (c) =>
      c.query<{ ok: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND query LIKE $1 AND application_name LIKE 'wb-bridge@%'`,
        [`%wb_${schema}%`],
      ),
    );
    // Both bridges listen (the active one hears the standby's writes); either cut shows the gap.
    expect(cut.rows.length).toBeGreaterThan(0);
    const act = await a.app.inject({ method: "POST", url: "/devices/amp/action", payload: { action: "volume", params: { level: 61 } } });
    expect(act.statusCode).toBe(200);
    expect((await caughtUp).state).toMatchObject({ volume: 61 });
    expect((await b.app.inject({ method: "GET", url: "/devices/amp/state" })).json().state).toMatchObject({ volume: 61 });
  });
});
