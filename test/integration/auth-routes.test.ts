import { type IncomingHttpHeaders, request } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GRANTABLE_PERMISSIONS } from "../../app/auth/permissions.js";
import type { RouteRecord } from "../../app/http/auth.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { hsToken, SECRET_ENV, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET } from "../helpers/auth.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

const PARAM_VALUES: Record<string, string> = { id: "tv", key: "k1", file: "backup.db" };

function concretePath(url: string): string {
  return url.replace(/:(\w+)(\([^)]*\))?/g, (_m, name: string) => PARAM_VALUES[name] ?? "x").replace(/\*/g, "x");
}

interface Answer {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

describe("auth on every route (HS256, real HTTP)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance;
  let base: string;
  let logs: string[];
  let queryToken = "";

  /**
   * One request on its own connection (node:http, no agent): an SSE answer is cut after
   * its headers, and a hijacked HEAD /events that never ends cannot block the next call.
   */
  function call(method: string, path: string, token?: string, headers: Record<string, string> = {}): Promise<Answer> {
    const withBody = ["POST", "PUT", "PATCH"].includes(method);
    return new Promise((resolve, reject) => {
      const req = request(
        `${base}${path}`,
        {
          method,
          agent: false,
          headers: {
            ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
            ...(withBody ? { "content-type": "application/json" } : {}),
            ...headers,
          },
        },
        (res) => {
          const answer = (body: string) => resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
          if (method === "HEAD" || String(res.headers["content-type"] ?? "").startsWith("text/event-stream")) {
            answer("");
            res.destroy();
            return;
          }
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => answer(Buffer.concat(chunks).toString("utf8")));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(withBody ? "{}" : undefined);
    });
  }

  beforeAll(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    const config = await testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
          persistence: { db_path: join(dir.path, "state.db") },
          logging: { level: "debug" },
          rate_limit: { max: 0 },
          auth: {
            mode: "jwt",
            jwt: { hs256_secret_env: SECRET_ENV, issuer: TEST_ISSUER, audience: TEST_AUDIENCE, permissions_claim: "scope" },
          },
        },
      },
      { [SECRET_ENV]: TEST_SECRET },
    );
    const captured = captureLogger("debug");
    logs = captured.lines;
    app = await buildApp(config, { logger: captured.log, sleep: async () => undefined, events: { keepAliveMs: 60_000 } });
    // Added after buildApp, before ready: a route that forgot its permission.
    app.get("/test/undeclared", async () => ({ ok: true }));
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await app?.close();
    await broker?.close();
    await dir?.remove();
  });

  it("collects the whole route table with each route's permission", () => {
    const table = app.authRoutes.map((r) => `${r.method} ${r.url} ${r.permission}`);
    expect(table).toEqual(
      expect.arrayContaining([
        "GET /health/live public",
        "GET /health/ready public",
        "GET /devices devices:read",
        "POST /devices/:id/action devices:control",
        "PUT /state/:key state:write",
        "POST /scenario/switch scenarios:control",
        "GET /events devices:read",
        "POST /backups admin",
        "GET /test/undeclared admin",
      ]),
    );
    expect(app.authRoutes.length).toBeGreaterThan(25);
  });

  it("every route: 401 without/with bad tokens, 403 without its permission, passes with exactly its permission", async () => {
    const bad = {
      "bad signature": await hsToken({ claims: { scope: "admin" } }, "another-secret-of-sufficient-length-0123456789"),
      expired: await hsToken({ claims: { scope: "admin" }, expiresIn: -3600 }),
      "wrong audience": await hsToken({ claims: { scope: "admin" }, audience: "someone-else" }),
    };
    const checked: string[] = [];
    for (const route of app.authRoutes as RouteRecord[]) {
      const path = concretePath(route.url);
      const where = `${route.method} ${route.url}`;
      if (route.permission === "public") {
        const open = await call(route.method, path);
        expect([401, 403], where).not.toContain(open.status);
        checked.push(where);
        continue;
      }
      const none = await call(route.method, path);
      expect(none.status, `${where} without a token`).toBe(401);
      for (const [name, token] of Object.entries(bad)) {
        const res = await call(route.method, path, token);
        expect(res.status, `${where} with ${name} token`).toBe(401);
        expect(res.headers["www-authenticate"], where).toMatch(/^Bearer .*error="invalid_token"/);
        if (route.method !== "HEAD") expect(JSON.parse(res.body).error.code, where).toBe("unauthorized");
      }
      const others = GRANTABLE_PERMISSIONS.filter((p) => p !== route.permission && p !== "admin");
      const lacking = await call(route.method, path, await hsToken({ claims: { scope: others.join(" ") } }));
      expect(lacking.status, `${where} without ${route.permission}`).toBe(403);
      if (route.method !== "HEAD")
        expect(JSON.parse(lacking.body)).toEqual({ error: { code: "forbidden", message: `needs ${route.permission}` } });
      const exact = await call(route.method, path, await hsToken({ claims: { scope: route.permission } }));
      expect([401, 403], `${where} with exactly ${route.permission} (got ${exact.status})`).not.toContain(exact.status);
      checked.push(where);
    }
    expect(checked).toEqual(expect.arrayContaining(["GET /events", "POST /devices/:id/action", "DELETE /state/:key"]));
  });

  it("health probes answer without a token; unknown routes stay 404", async () => {
    expect((await call("GET", "/health/live")).status).toBe(200);
    expect([200, 503]).toContain((await call("GET", "/health/ready")).status);
    const unknown = await call("GET", "/no/such/route");
    expect(unknown.status).toBe(404);
    expect((await call("POST", "/devices/tv/nope")).status).toBe(404);
  });

  it("401 details: missing token has no error code, other failures name the reason, never echo the token", async () => {
    const missing = await call("GET", "/devices");
    expect(missing.headers["www-authenticate"]).toBe('Bearer realm="wb-bridge"');
    expect(JSON.parse(missing.body)).toEqual({ error: { code: "unauthorized", message: "missing bearer token" } });

    const cases: Array<[string, Promise<string> | string, RegExp]> = [
      ["expired", hsToken({ claims: { scope: "admin" }, expiresIn: -3600 }), /expired/],
      ["not yet valid", hsToken({ claims: { scope: "admin" }, notBeforeIn: 3600 }), /not yet valid/],
      ["wrong issuer", hsToken({ claims: { scope: "admin" }, issuer: "https://evil.test" }), /issuer/],
      ["wrong audience", hsToken({ claims: { scope: "admin" }, audience: "other" }), /audience/],
      ["no exp", hsToken({ claims: { scope: "admin" }, expiresIn: null }), /expiry/],
      ["garbage", "not.a.jwt", /malformed/],
      [
        "alg none",
        `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from('{"scope":"admin"}').toString("base64url")}.`,
        /algorithm/,
      ],
    ];
    for (const [name, pending, message] of cases) {
      const token = await pending;
      const res = await call("GET", "/devices", token);
      expect(res.status, name).toBe(401);
      expect(res.headers["www-authenticate"], name).toContain('error="invalid_token"');
      const body = JSON.parse(res.body) as { error: { code: string; message: string } };
      expect(body.error.code, name).toBe("unauthorized");
      expect(body.error.message, name).toMatch(message);
      expect(res.body, name).not.toContain(token);
    }
    const basic = await call("GET", "/devices", undefined, { authorization: "Basic dXNlcjpwYXNz" });
    expect(basic.status).toBe(401);
  });

  it("admin implies every permission; array claims are not read when the claim is scope", async () => {
    const admin = await hsToken({ claims: { scope: "admin" } });
    expect((await call("GET", "/devices", admin)).status).toBe(200);
    expect((await call("POST", "/devices/tv/action", admin, {})).status).not.toBe(403);
    const rolesOnly = await hsToken({ claims: { roles: ["admin"] } });
    expect((await call("GET", "/devices", rolesOnly)).status).toBe(403);
  });

  it("GET /events takes ?access_token= (EventSource); other routes do not", async () => {
    const token = await hsToken({ claims: { scope: "devices:read" } });
    queryToken = token;
    const sse = await call("GET", `/events?access_token=${encodeURIComponent(token)}`);
    expect(sse.status).toBe(200);
    expect((await call("GET", "/events?access_token=bogus")).status).toBe(401);
    expect((await call("GET", "/events")).status).toBe(401);
    expect((await call("GET", `/devices?access_token=${encodeURIComponent(token)}`)).status).toBe(401);
  });

  it("logs say why a token was refused, but never the secret or a query-string token", async () => {
    const logged = logs.join("\n");
    expect(queryToken).not.toBe("");
    expect(logged).toContain('"url":"/events","query_keys":["access_token"]');
    expect(logged).not.toContain(queryToken);
    expect(logged).toContain("token rejected");
    expect(logged).toContain("permission denied");
    expect(logged).not.toContain(TEST_SECRET);
  });
});
