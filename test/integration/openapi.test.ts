import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DOCS_PREFIX } from "../../app/http/openapi.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { SECRET_ENV, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET } from "../helpers/auth.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

interface Operation {
  security?: Array<Record<string, string[]>>;
  "x-permission"?: string;
  parameters?: Array<{ in: string; name: string }>;
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, unknown>;
}
interface Document {
  openapi: string;
  info: { title: string; version: string };
  components: { securitySchemes: Record<string, unknown> };
  paths: Record<string, Record<string, Operation>>;
}

/** Fastify's `/a/:id` as OpenAPI's `/a/{id}`. */
function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

describe("OpenAPI document and /docs", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let running: RunningApp | null = null;

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });

  afterEach(async () => {
    await running?.app.close();
    running = null;
    await broker.close();
    await dir.remove();
  });

  async function start(jwt = false): Promise<RunningApp> {
    const files = jwt
      ? {
          system: {
            mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
            persistence: { db_path: join(dir.path, "state.db") },
            logging: { level: "silent" },
            auth: { mode: "jwt", jwt: { hs256_secret_env: SECRET_ENV, issuer: TEST_ISSUER, audience: TEST_AUDIENCE } },
          },
        }
      : {};
    running = await startApp(await testConfig(dir.path, broker.url, files, jwt ? { [SECRET_ENV]: TEST_SECRET } : {}));
    return running;
  }

  it("documents every registered route with the security its permission implies", async () => {
    const { app } = await start();
    const res = await app.inject({ url: `${DOCS_PREFIX}/json` });
    expect(res.statusCode).toBe(200);
    const doc = res.json() as Document;
    expect(doc).toMatchObject({
      openapi: expect.stringMatching(/^3\./),
      info: { title: "wb-bridge", version: app.bridge.version },
      components: { securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
    });
    // Built on demand, once: a second request answers the same document.
    expect((await app.inject({ url: `${DOCS_PREFIX}/json` })).json()).toEqual(doc);

    const routes = app.routeTable().filter((r) => !r.url.startsWith(`${DOCS_PREFIX}/`) && r.url !== DOCS_PREFIX);
    // Sanity: the collector saw the app's routes (one of each kind the issue names).
    const seen = routes.map((r) => `${r.method} ${r.url}`);
    expect(seen).toEqual(expect.arrayContaining(["GET /events", "DELETE /state/:key", "POST /devices/:id/action", "GET /health/live"]));

    const problems: string[] = [];
    for (const route of routes) {
      const where = `${route.method} ${route.url}`;
      if (route.hidden) {
        problems.push(`${where}: hidden from the document`);
        continue;
      }
      if (route.permission === undefined) problems.push(`${where}: no config.permission`);
      const op = doc.paths[openApiPath(route.url)]?.[route.method.toLowerCase()];
      if (!op) {
        problems.push(`${where}: missing from the document`);
        continue;
      }
      const security = route.permission === "public" ? [] : [{ bearerAuth: [] }];
      if (JSON.stringify(op.security) !== JSON.stringify(security)) {
        problems.push(`${where}: security ${JSON.stringify(op.security)}, expected ${JSON.stringify(security)}`);
      }
      if (op["x-permission"] !== route.permission) {
        problems.push(`${where}: x-permission ${String(op["x-permission"])}, expected ${String(route.permission)}`);
      }
    }
    expect(problems).toEqual([]);

    // And nothing in the document that is not a route (the UI's own routes stay out).
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    expect(documented.sort()).toEqual(routes.map((r) => `${r.method} ${openApiPath(r.url)}`).sort());
  });

  it("takes parameters, bodies and responses from the zod schemas", async () => {
    const { app } = await start();
    const doc = (await app.inject({ url: `${DOCS_PREFIX}/json` })).json() as Document;
    const action = doc.paths["/devices/{id}/action"]?.post;
    expect(action?.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ in: "path", name: "id" })]));
    const body = action?.requestBody?.content["application/json"]?.schema as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(body.properties).sort()).toEqual(["action", "params"]);
    expect(body.required).toEqual(["action"]);
    expect(Object.keys(action?.responses ?? {})).toEqual(expect.arrayContaining(["200", "400", "404"]));
    // A query-string schema becomes query parameters; the SSE route without a schema is still there.
    const stateList = doc.paths["/state"]?.get;
    expect(stateList?.parameters?.map((p) => `${p.in}:${p.name}`)).toEqual(expect.arrayContaining(["query:prefix", "query:limit"]));
    expect(doc.paths["/events"]?.get?.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths["/health/ready"]?.get?.security).toEqual([]);
    expect(doc.paths["/state/{key}"]?.delete?.responses).toHaveProperty("204");
    // The device state answer, with the restored flag documented.
    const deviceState = doc.paths["/devices/{id}/state"]?.get?.responses["200"] as {
      content: Record<string, { schema: { properties: Record<string, { type?: string; description?: string }>; required: string[] } }>;
    };
    const stateSchema = deviceState.content["application/json"]?.schema;
    expect(Object.keys(stateSchema?.properties ?? {}).sort()).toEqual(["id", "reachable", "restored", "state", "updated_at"]);
    expect(stateSchema?.required).toContain("restored");
    expect(stateSchema?.properties.restored).toMatchObject({
      type: "boolean",
      description: expect.stringMatching(/database held at start/),
    });
  });

  it("serves the UI at /docs, public, with the document beside it", async () => {
    const { app } = await start();
    const ui = await app.inject({ url: `${DOCS_PREFIX}/` });
    expect(ui.statusCode).toBe(200);
    expect(ui.headers["content-type"]).toMatch(/text\/html/);
    expect(ui.body).toMatch(/swagger/i);
    const bare = await app.inject({ url: DOCS_PREFIX });
    expect(bare.statusCode).toBe(200);
    const init = await app.inject({ url: `${DOCS_PREFIX}/static/swagger-initializer.js` });
    expect(init.statusCode).toBe(200);

    const docsRoutes = app.routeTable().filter((r) => r.url === DOCS_PREFIX || r.url.startsWith(`${DOCS_PREFIX}/`));
    expect(docsRoutes.length).toBeGreaterThan(0);
    expect(docsRoutes.filter((r) => r.permission !== "public")).toEqual([]);
  });

  it("loads the swagger packages only when the docs are first asked for", async () => {
    const { app } = await start();
    // @fastify/swagger decorates the instance it is registered on: never the bridge's.
    expect(app.hasDecorator("swagger")).toBe(false);
    // Concurrent first requests share one build, and HEAD answers like GET.
    const [json, yaml, head] = await Promise.all([
      app.inject({ url: `${DOCS_PREFIX}/json` }),
      app.inject({ url: `${DOCS_PREFIX}/yaml` }),
      app.inject({ method: "HEAD", url: `${DOCS_PREFIX}/json` }),
    ]);
    expect(json.statusCode).toBe(200);
    expect(json.headers["content-type"]).toMatch(/application\/json/);
    expect(yaml.statusCode).toBe(200);
    expect(yaml.body).toMatch(/^openapi: 3\./m);
    expect(head.statusCode).toBe(200);
    expect(head.body).toBe("");
    // The bridge's own answer around the forwarded one: its request id, and 404s in its shape.
    expect(json.headers["x-request-id"]).toEqual(expect.any(String));
    const missing = await app.inject({ url: `${DOCS_PREFIX}/static/no-such-file.js` });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: { code: "route_not_found", message: expect.stringContaining("no-such-file.js") } });
  });

  it("keeps the UI and the document public when tokens are required", async () => {
    const { app } = await start(true);
    expect((await app.inject({ url: "/devices" })).statusCode).toBe(401);
    for (const url of [`${DOCS_PREFIX}/`, `${DOCS_PREFIX}/json`, `${DOCS_PREFIX}/yaml`, `${DOCS_PREFIX}/static/swagger-initializer.js`]) {
      expect((await app.inject({ url })).statusCode, url).toBe(200);
    }
  });
});
