import type { FastifyInstance } from "fastify";
import type { Bridge } from "../lifespan.js";
import "./permissions.js";

/** Authentication and RBAC on every route (issue 5): to be implemented. */
export async function registerAuth(_app: FastifyInstance, _bridge: Bridge): Promise<void> {}
