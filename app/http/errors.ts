import type { FastifyError, FastifyInstance } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { AppError } from "../shared/errors.js";

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/**
 * DESIGN §6: every error is `{ error: { code, message, details? } }` with its status.
 * Domain errors carry their own status; 5xx messages are not shown to clients.
 */
export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const where = err.validationContext ?? "request";
      const details = err.validation.map((v) => ({ path: `${where}${v.instancePath.replace(/\//g, ".")}`, message: v.message }));
      const body: ErrorBody = {
        error: {
          code: "invalid_request",
          message: details.map((d) => `${d.path}: ${d.message}`).join("; "),
          details,
        },
      };
      return reply.status(400).send(body);
    }
    if (err instanceof AppError) {
      if (err.statusCode >= 500) request.log.error({ err }, "request failed");
      const body: ErrorBody = { error: { code: err.code, message: err.message } };
      if (err.details !== undefined && err.statusCode < 500) body.error.details = err.details;
      return reply.status(err.statusCode).send(body);
    }
    const status = typeof err.statusCode === "number" && err.statusCode >= 400 ? err.statusCode : 500;
    if (status >= 500) {
      request.log.error({ err }, "request failed");
      return reply.status(status).send({ error: { code: "internal_error", message: "internal error" } } satisfies ErrorBody);
    }
    // Fastify's own client errors: malformed JSON, body too large, wrong content type.
    const code = err.code ? err.code.replace(/^FST_ERR_/, "").toLowerCase() : "bad_request";
    return reply.status(status).send({ error: { code, message: err.message } } satisfies ErrorBody);
  });

  app.setNotFoundHandler((request, reply) => {
    const body: ErrorBody = { error: { code: "route_not_found", message: `no route ${request.method} ${request.url.split("?")[0]}` } };
    return reply.status(404).send(body);
  });
}
