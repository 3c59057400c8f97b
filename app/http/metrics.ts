import type { FastifyPluginAsync } from "fastify";
import type { Bridge } from "../lifespan.js";

/** GET /metrics in Prometheus format (issue 5): to be implemented. */
export function metricsRoutes(_bridge: Bridge): FastifyPluginAsync {
  return async () => undefined;
}
