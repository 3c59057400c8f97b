import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Env } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { keyToken, TEST_AUDIENCE, type TestKey, TestOidcProvider, testKey } from "../helpers/auth.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

describe("auth against an OIDC provider (discovery + JWKS, RS256 and ES256)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let provider: TestOidcProvider;
  let rsa: TestKey;
  let ec: TestKey;
  const apps: FastifyInstance[] = [];

  async function start(jwt: Record<string, unknown>, env: Env = {}): Promise<FastifyInstance> {
    const config = await testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: { db_path: join(dir.path, "state.db") },
          logging: { level: "silent" },
          auth: { mode: "jwt", jwt: { audience: TEST_AUDIENCE, ...jwt } },
        },
      },
      env,
    );
    const app = await buildApp(config, { logger: captureLogger("info").log, sleep: async () => undefined });
    apps.push(app);
    await app.ready();
    return app;
  }

  const get = (app: FastifyInstance, token: string) =>
    app.inject({ method: "GET", url: "/devices", headers: { authorization: `Bearer ${token}` } });

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    rsa = await testKey("RS256", "rsa-1");
    ec = await testKey("ES256", "ec-1");
    provider = await TestOidcProvider.start([rsa, ec]);
  });

  afterEach(async () => {
    vi.useRealTimers();
    for (const app of apps.splice(0)) await app.close();
    await provider.close();
    await broker.close();
    await dir.remove();
  });

  it("accepts RS256 and ES256 tokens from the discovered JWKS; checks iss against the issuer", async () => {
    const app = await start({ oidc_issuer: provider.issuer });
    const claims = { scope: "devices:read" };
    expect((await get(app, await keyToken(rsa, { issuer: provider.issuer, claims }))).statusCode).toBe(200);
    expect((await get(app, await keyToken(ec, { issuer: provider.issuer, claims }))).statusCode).toBe(200);
    expect(provider.discoveryFetches).toBe(1);
    expect(provider.jwksFetches).toBe(1);
    const wrongIss = await get(app, await keyToken(rsa, { issuer: "https://other.test", claims }));
    expect(wrongIss.statusCode).toBe(401);
    expect(wrongIss.json().error.message).toMatch(/issuer/);
    const noScope = await get(app, await keyToken(rsa, { issuer: provider.issuer, claims: { scope: "state:read" } }));
    expect(noScope.statusCode).toBe(403);
  });

  it("refetches the JWKS for an unknown kid after rotation; rejects keys it never published", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date());
    const app = await start({ oidc_issuer: provider.issuer });
    const claims = { scope: "devices:read" };
    expect((await get(app, await keyToken(rsa, { issuer: provider.issuer, claims }))).statusCode).toBe(200);

    const rotated = await testKey("RS256", "rsa-2");
    provider.keys = [rotated, ec];
    // jose refetches on an unknown kid at most once per cooldown (30 s): step past it.
    vi.setSystemTime(Date.now() + 31_000);
    expect((await get(app, await keyToken(rotated, { issuer: provider.issuer, claims }))).statusCode).toBe(200);
    expect(provider.jwksFetches).toBe(2);

    const rogue = await testKey("RS256", "rogue");
    vi.setSystemTime(Date.now() + 31_000);
    const unknown = await get(app, await keyToken(rogue, { issuer: provider.issuer, claims }));
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json().error.message).toMatch(/no matching signing key/);
    // A foreign key that claims a published kid fails on the signature.
    const impostor = { ...rogue, kid: "rsa-2" };
    const forged = await get(app, await keyToken(impostor, { issuer: provider.issuer, claims }));
    expect(forged.statusCode).toBe(401);
    expect(forged.json().error.message).toMatch(/invalid signature/);
  });

  it("uses jwks_url directly without discovery, alongside an HS256 secret", async () => {
    const secret = "another-shared-secret-for-tests-0123456789";
    const app = await start({ jwks_url: provider.jwksUrl, hs256_secret_env: "JWT_SECRET" }, { JWT_SECRET: secret });
    expect((await get(app, await keyToken(ec, { issuer: null, claims: { permissions: "devices:read" } }))).statusCode).toBe(403);
    expect((await get(app, await keyToken(ec, { issuer: null, claims: { scope: "devices:read" } }))).statusCode).toBe(200);
    expect(provider.discoveryFetches).toBe(0);
  });

  it("answers 503 (not 401) while the provider cannot be reached", async () => {
    const issuer = provider.issuer;
    await provider.close();
    const app = await start({ oidc_issuer: issuer });
    const down = await get(app, await keyToken(rsa, { issuer, claims: { scope: "devices:read" } }));
    expect(down.statusCode).toBe(503);
    expect(down.json().error.code).toBe("auth_unavailable");
    expect(down.body).not.toContain("eyJ");
    provider = await TestOidcProvider.start([rsa, ec]); // for afterEach
  });
});
