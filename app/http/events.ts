import type { ServerResponse } from "node:http";
import type { FastifyPluginAsync } from "fastify";
import "./permissions.js";
import type { Bridge, BridgeEvents } from "../lifespan.js";

/** The bus events streamed to clients, by their SSE `event:` name. */
export const STREAMED_EVENTS = [
  "device.state",
  "device.reachability",
  "action.failed",
  "scenario.switched",
  "scenario.shutdown",
] as const satisfies ReadonlyArray<keyof BridgeEvents>;

export interface EventsOptions {
  keepAliveMs?: number;
  /** A client whose unsent output exceeds this is dropped rather than buffered without bound. */
  maxBufferedBytes?: number;
}

/** Top-level keys in the API's snake_case (`deviceId` -> `device_id`). */
function toWire(payload: unknown): unknown {
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) return payload;
  return Object.fromEntries(Object.entries(payload).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]));
}

/**
 * `GET /events`: Server-Sent Events of state changes, scenario switches and failures,
 * each with an `id:` line; a comment line keeps idle connections open. Streams end
 * before the server closes, so shutdown never waits on a listening client.
 */
export function eventsRoutes(bridge: Bridge, options: EventsOptions = {}): FastifyPluginAsync {
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;

  return async (app) => {
    const clients = new Set<ServerResponse>();
    let nextId = 1;
    bridge.metrics.setSources({ sseClients: () => clients.size });

    const drop = (res: ServerResponse, reason: string) => {
      if (!clients.delete(res)) return;
      app.log.warn({ reason, clients: clients.size }, "SSE client dropped");
      res.destroy();
    };
    const write = (res: ServerResponse, chunk: string) => {
      if (res.writableLength > maxBuffered) {
        drop(res, "client too slow");
        return;
      }
      res.write(chunk);
    };

    const removers = STREAMED_EVENTS.map((name) =>
      bridge.bus.on(name, (payload) => {
        if (clients.size === 0) return;
        const chunk = `id: ${nextId++}\nevent: ${name}\ndata: ${JSON.stringify(toWire(payload))}\n\n`;
        for (const res of clients) write(res, chunk);
      }),
    );
    const keepAlive = setInterval(() => {
      for (const res of clients) write(res, ": keep-alive\n\n");
    }, keepAliveMs);
    keepAlive.unref();

    app.addHook("preClose", async () => {
      clearInterval(keepAlive);
      for (const remove of removers) remove();
      for (const res of clients) res.end();
      clients.clear();
    });

    app.get("/events", { exposeHeadRoute: false, config: { permission: "devices:read" } }, async (request, reply) => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        connection: "keep-alive",
        "x-accel-buffering": "no",
      });
      res.write("retry: 2000\n\n");
      clients.add(res);
      request.log.info({ clients: clients.size }, "SSE client connected");
      res.on("close", () => clients.delete(res));
    });
  };
}
