import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { AppConfig } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { failedStart, type RunningApp, startApp } from "../helpers/app.js";
import { powerScenario, simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema, withClient } from "../helpers/postgres.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";

const ready = await requirePostgres();

/** The URL with a password the bridge must never show (the test server trusts local connections). */
function withPassword(url: string, port?: number): string {
  const u = new URL(url);
  u.username = u.username || "postgres";
  u.password = "PG-SECRET-PASSWORD";
  if (port !== undefined) u.port = String(port);
  return u.toString();
}

describe.runIf(ready)("PostgreSQL backend (real server, aedes over TCP, HTTP)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let schema: string;
  const running: RunningApp[] = [];
  const proxies: TcpProxy[] = [];

  async function config(url = withPassword(TEST_POSTGRES_URL)): Promise<AppConfig> {
    return testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: { backend: "postgres", postgres: { schema, connect_timeout_ms: 1000 }, db_path: join(dir.path, "unused.db") },
          logging: { level: "silent" },
          rate_limit: { max: 0 },
        },
        devices: [simulatedDevice("tv"), simulatedDevice("amp")],
        scenarios: [powerScenario("music", ["amp"])],
      },
      { STATE_DATABASE_URL: url },
    );
  }

  async function start(cfg: AppConfig): Promise<RunningApp> {
    const r = await startApp(cfg);
    running.push(r);
    return r;
  }

  async function storedValue(key: string): Promise<unknown> {
    return withClient(TEST_POSTGRES_URL, async (c) => {
      const res = await c.query<{ value: string }>(`SELECT value FROM ${schema}.state_store WHERE key = $1`, [key]);
      return res.rows[0] ? JSON.parse(res.rows[0].value) : null;
    });
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    schema = uniqueSchema("bridge");
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    for (const p of proxies.splice(0)) await p.close();
    await broker.close();
    await dropSchema(schema);
    await dir.remove();
  });

  it("commits actions and scenario switches to PostgreSQL and restores them on the next start", async () => {
    const first = await start(await config());
    const act = await first.app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level: 41 } } });
    expect(act.statusCode).toBe(200);
    expect(await storedValue("device:tv")).toMatchObject({ state: { volume: 41 } });
    const sw = await first.app.inject({ method: "POST", url: "/scenario/switch", payload: { id: "music" } });
    expect(sw.statusCode).toBe(200);
    expect(await storedValue("scenario:last")).toMatchObject({ scenario_id: "music" });

    const health = await first.app.inject({ method: "GET", url: "/health" });
    expect(health.json().store).toMatchObject({ open: true, backend: "postgres" });
    expect(health.json().store.path).toContain(`schema ${schema}`);
    expect(health.body).not.toContain("PG-SECRET-PASSWORD");
    expect(first.logs.join("\n")).not.toContain("PG-SECRET-PASSWORD");
    await first.app.close();
    running.splice(0);

    // Nothing on disk: the state came from the server.
    const second = await start(await config());
    expect((await second.app.inject({ method: "GET", url: "/devices/tv/state" })).json().state).toMatchObject({ volume: 41 });
    expect((await second.app.inject({ method: "GET", url: "/scenario/state" })).json()).toMatchObject({ scenario_id: "music" });
    const history = await withClient(TEST_POSTGRES_URL, (c) =>
      c.query<{ transition: string }>(`SELECT transition FROM ${schema}.state_history WHERE key = 'device:tv' ORDER BY id`),
    );
    expect(history.rows[0]?.transition).toBe("create");
  });

  it("refuses a second bridge on the same schema, naming the one that holds it, and lets it start once that one stops", async () => {
    const first = await start(await config());
    const { err } = await failedStart(await config());
    expect(String(err)).toMatch(/is in use by wb-bridge@[^ ]+:\d+ \(server backend pid \d+/);
    expect(String(err)).toContain(`schema ${schema}`);
    expect(String(err)).not.toContain("PG-SECRET-PASSWORD");
    await first.app.close();
    running.splice(0);
    const second = await start(await config());
    expect(second.app.bridge.phase).toBe("ready");
  });

  it("fails actions with 503 storage_unavailable while the server is unreachable, loses nothing acknowledged, and recovers by itself", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_POSTGRES_URL).port || 5432));
    proxies.push(proxy);
    const { app, logs } = await start(await config(withPassword(TEST_POSTGRES_URL, proxy.port)));
    const action = (level: number) =>
      app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level } } });
    expect((await action(10)).statusCode).toBe(200);

    proxy.cut();
    const refused = await action(20);
    expect(refused.statusCode).toBe(503);
    expect(refused.json().error.code).toBe("storage_unavailable");
    expect(refused.body).not.toContain("PG-SECRET-PASSWORD");
    // Reads keep being served from the bridge's own state.
    const during = await app.inject({ method: "GET", url: "/devices/tv/state" });
    expect(during.statusCode).toBe(200);
    expect(during.json().state).toMatchObject({ volume: 10 });
    const health = await app.inject({ method: "GET", url: "/health" });
    expect(health.json().store.write_error).toMatchObject({ code: "storage_unavailable" });

    proxy.restore();
    // The writer reconnects on the next commit: the first action after the outage succeeds.
    const after = await action(30);
    expect(after.statusCode).toBe(200);
    expect(await storedValue("device:tv")).toMatchObject({ state: { volume: 30 } });
    expect((await app.inject({ method: "GET", url: "/health" })).json().store.write_error).toBeNull();
    expect(logs.join("\n")).not.toContain("PG-SECRET-PASSWORD");
  });

  it("stops the start with a clear error when the server does not answer", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", 1);
    proxies.push(proxy);
    proxy.cut();
    const { err } = await failedStart(await config(withPassword(TEST_POSTGRES_URL, proxy.port)));
    expect(String(err)).toContain(`cannot connect to PostgreSQL postgres://***:***@127.0.0.1:${proxy.port}/`);
    expect(String(err)).not.toContain("PG-SECRET-PASSWORD");
  });
});

describe("PostgreSQL backend configuration", () => {
  it("names the variable when the URL is missing, and never shows the URL when it is wrong", async () => {
    const dir = await tempDir();
    try {
      const system = { persistence: { backend: "postgres" }, logging: { level: "silent" } };
      await expect(testConfig(dir.path, "mqtt://127.0.0.1:1", { system })).rejects.toThrow(
        /persistence\.postgres\.url_env: environment variable STATE_DATABASE_URL is not set/,
      );
      const bad = testConfig(dir.path, "mqtt://127.0.0.1:1", { system }, { STATE_DATABASE_URL: "mysql://u:SECRET@h/db" });
      await expect(bad).rejects.toThrow(/STATE_DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/);
      await expect(bad).rejects.not.toThrow(/SECRET/);
      await expect(testConfig(dir.path, "mqtt://127.0.0.1:1", {}, { STATE_BACKEND: "redis" })).rejects.toThrow(
        /STATE_BACKEND: expected "sqlite" or "postgres"/,
      );
    } finally {
      await dir.remove();
    }
  });
});
