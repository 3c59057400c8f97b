import type { FastifyPluginAsync } from "fastify";
import "./permissions.js";
import type { Bridge } from "../lifespan.js";

/** The Prometheus text format version the registry writes (prom-client's default). */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * `GET /metrics` in the Prometheus text format, from the bridge's own registry. Admin
 * only unless `metrics.public`; not registered at all (404) when `metrics.enabled` is false.
 */
export function metricsRoutes(bridge: Bridge): FastifyPluginAsync {
  const settings = bridge.config.system.metrics;
  return async (app) => {
    if (!settings.enabled) return;
    app.get("/metrics", { config: { permission: settings.public ? "public" : "admin" } }, async (_request, reply) => {
      const body = await bridge.metrics.scrape();
      return reply.type(METRICS_CONTENT_TYPE).header("cache-control", "no-store").send(body);
    });
  };
}
