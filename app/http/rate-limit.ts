import type { FastifyInstance } from "fastify";
import type { SystemConfig } from "../config/system.js";

/** Per-client rate limits on write routes (issue 5): to be implemented. */
export async function registerRateLimit(_app: FastifyInstance, _config: SystemConfig["rate_limit"]): Promise<void> {}
