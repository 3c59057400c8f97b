import type { FastifyInstance } from "fastify";

/** OpenAPI document from the zod route schemas and the UI at /docs (issue 5): to be implemented. */
export async function registerOpenApi(_app: FastifyInstance, _version: string): Promise<void> {}
