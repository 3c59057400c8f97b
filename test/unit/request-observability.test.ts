import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { createGenReqId, requestIdSource } from "../../app/observability/request-id.js";
import { deferRequestLoggers } from "../../app/observability/request-logger.js";
import { captureLogger } from "../helpers/fixtures.js";

describe("deferred request loggers", () => {
  let app: FastifyInstance;
  afterEach(() => app.close());

  /** An app at `level` whose child factory counts the children it really makes. */
  async function appAt(level: "warn" | "info") {
    const { log, lines } = captureLogger(level);
    app = Fastify({ loggerInstance: log as FastifyBaseLogger, genReqId: createGenReqId() });
    const made = { count: 0 };
    const inner = app.childLoggerFactory;
    app.setChildLoggerFactory(function (logger, bindings, options, raw) {
      made.count += 1;
      return inner.call(this, logger, bindings, options, raw);
    });
    app.setChildLoggerFactory(deferRequestLoggers(app.childLoggerFactory));
    app.get("/quiet", async (request) => ({ level: request.log.level }));
    app.get("/loud", async (request) => {
      request.log.info("not written at warn");
      request.log.error({ detail: 1 }, "written");
      request.log.child({ part: "sub" }).warn("from a child");
      return {};
    });
    app.get("/verbose", { logLevel: "debug" }, async (request) => {
      request.log.debug("route level");
      return {};
    });
    await app.ready();
    const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    return { made, parsed };
  }

  it("makes no child for a request that logs nothing at an enabled level", async () => {
    const { made, parsed } = await appAt("warn");
    const res = await app.inject({ url: "/quiet" });
    expect(res.json()).toEqual({ level: "warn" });
    expect(made.count).toBe(0);
    expect(parsed()).toEqual([]);
  });

  it("writes what passes the level with the request's id, through the same child", async () => {
    const { made, parsed } = await appAt("warn");
    const res = await app.inject({ url: "/loud", headers: { "x-request-id": "req-1" } });
    expect(res.statusCode).toBe(200);
    expect(made.count).toBe(1);
    expect(parsed()).toEqual([
      expect.objectContaining({ reqId: "req-1", detail: 1, msg: "written" }),
      expect.objectContaining({ reqId: "req-1", part: "sub", msg: "from a child" }),
    ]);
  });

  it("keeps Fastify's request lines at info, and a route's own log level", async () => {
    const { made, parsed } = await appAt("info");
    await app.inject({ url: "/quiet", headers: { "x-request-id": "req-2" } });
    await app.inject({ url: "/verbose", headers: { "x-request-id": "req-3" } });
    expect(made.count).toBe(2);
    const lines = parsed();
    expect(lines.filter((l) => l.reqId === "req-2").map((l) => l.msg)).toEqual(["incoming request", "request completed"]);
    expect(lines.some((l) => l.reqId === "req-3" && l.msg === "route level")).toBe(true);
  });
});

describe("generated request ids", () => {
  it("are distinct version-8 UUIDs, with a new random part per source", () => {
    const uuid8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const a = requestIdSource();
    const b = requestIdSource();
    const ids = [a(), a(), a(), b()];
    for (const id of ids) expect(id).toMatch(uuid8);
    expect(new Set(ids).size).toBe(4);
    expect(ids[0]?.slice(0, 24)).not.toBe(ids[3]?.slice(0, 24));
  });
});
