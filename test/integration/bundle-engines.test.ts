import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hsToken, SECRET_ENV, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET } from "../helpers/auth.js";
import { type BridgeChild, BUNDLE_ENTRY, BUNDLE_ENV, buildBundle, startBridge } from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";
import { dropPrefix, requireRedis, TEST_REDIS_URL, uniquePrefix } from "../helpers/redis.js";

const ready = (await requirePostgres()) && (await requireRedis());

/**
 * pg, ioredis, jose and aedes are loaded only when the configuration needs them, from
 * chunks of the bundle beside dist/wb-bridge.js. This starts the bundle itself (not the
 * source) with all four configured, so a chunk that is missing or fails to load shows here.
 */
describe.runIf(ready)("the bundle with PostgreSQL, the Redis cache, JWT auth and the embedded broker", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let bridge: BridgeChild | null = null;
  const schema = uniqueSchema("bundle");
  const prefix = uniquePrefix("bundle");

  beforeAll(async () => {
    buildBundle();
    dir = await tempDir();
    const configDir = await writeConfigDir(dir.path, {
      system: {
        mqtt: { client_id: `bundle-${schema}`, embedded: { enabled: true, host: "127.0.0.1", port: 0 } },
        persistence: { backend: "postgres", postgres: { schema }, cache: { key_prefix: prefix } },
        auth: {
          mode: "jwt",
          jwt: { hs256_secret_env: SECRET_ENV, issuer: TEST_ISSUER, audience: TEST_AUDIENCE, permissions_claim: "scope" },
        },
        rate_limit: { max: 0 },
      },
      devices: [simulatedDevice("tv")],
    });
    bridge = await startBridge(
      {
        ...BUNDLE_ENV,
        CONFIG_DIR: configDir,
        STATE_DATABASE_URL: TEST_POSTGRES_URL,
        STATE_REDIS_URL: TEST_REDIS_URL,
        [SECRET_ENV]: TEST_SECRET,
      },
      30_000,
      BUNDLE_ENTRY,
    );
  });

  afterAll(async () => {
    if (bridge && bridge.proc.exitCode === null) {
      bridge.proc.kill("SIGTERM");
      expect((await bridge.exited).code).toBe(0);
    }
    await dropSchema(schema);
    await dropPrefix(prefix);
    await dir?.remove();
  });

  it("keeps state in PostgreSQL behind the cache and checks tokens", async () => {
    const url = (bridge as BridgeChild).url;
    const token = await hsToken({ claims: { scope: "admin" } });
    const auth = { authorization: `Bearer ${token}` };

    const health = await fetch(`${url}/health`, { headers: auth });
    expect(((await health.json()) as { store: unknown }).store).toMatchObject({ open: true, backend: "postgres" });

    expect((await fetch(`${url}/devices/tv/state`)).status).toBe(401);
    const action = await fetch(`${url}/devices/tv/action`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ action: "volume", params: { level: 42 } }),
    });
    expect(action.status).toBe(200);
    const state = await fetch(`${url}/devices/tv/state`, { headers: auth });
    expect(((await state.json()) as { state: unknown }).state).toMatchObject({ volume: 42 });
    // Read through the cache: the Redis engine is in use, not only loaded.
    const put = await fetch(`${url}/state/note:a`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ text: "one" }),
    });
    expect(put.status).toBe(201);
    for (let i = 0; i < 2; i++)
      expect(((await (await fetch(`${url}/state/note:a`, { headers: auth })).json()) as { value: unknown }).value).toEqual({ text: "one" });
    const metrics = await (await fetch(`${url}/metrics`, { headers: auth })).text();
    expect(metrics).toMatch(/wb_bridge_state_cache_total\{result="(hit|miss)"\} [1-9]/);
  });
});
