import type { FastifyError, FastifyInstance } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { AppError } from "../shared/errors.js";
import { StoreWriteError, type WriteFailure } from "../state/store.js";

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/**
 * What a client is told when storage refuses a write. Nothing was changed, so the client
 * may retry; `full` is 507 Insufficient Storage because it clears once space is freed,
 * without a restart. The database path and SQLite's own text stay in the log.
 */
export const STORAGE_FAILURES: Record<Exclude<WriteFailure, "other">, { status: number; code: string; message: string }> = {
  full: {
    status: 507,
    code: "storage_full",
    message: "the bridge's storage is full (disk full); the change was not saved. Free space on the device and retry.",
  },
  read_only: {
    status: 503,
    code: "storage_read_only",
    message: "the bridge's storage is read-only; the change was not saved",
  },
  io: {
    status: 503,
    code: "storage_io_error",
    message: "the bridge's storage failed to write (I/O error; the file system may have turned read-only); the change was not saved",
  },
  unavailable: {
    status: 503,
    code: "storage_unavailable",
    message: "the bridge's database server is not reachable; the change was not saved. Retry once it is back.",
  },
  stale_lock: {
    status: 409,
    code: "lock_lost",
    message:
      "the lock for this change was lost before it committed (another writer has changed the key since); the change was not saved. Read it again and retry.",
  },
};

/**
 * A validation issue's place in the request, readable by a person: `body` for the body
 * itself (an array sent where an object belongs), `body.params.level`, `body.items[0]`,
 * `body["odd key"]`. The zod provider hands over `/`-joined segments, so `/` alone is the root.
 */
export function validationPath(where: string, instancePath: string): string {
  let path = where;
  for (const segment of instancePath.split("/")) {
    if (segment === "") continue;
    if (/^\d+$/.test(segment)) path += `[${segment}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(segment)) path += `.${segment}`;
    else path += `[${JSON.stringify(segment)}]`;
  }
  return path;
}

/**
 * DESIGN §6: every error is `{ error: { code, message, details? } }` with its status.
 * Domain errors carry their own status; 5xx messages are not shown to clients.
 */
export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const where = err.validationContext ?? "request";
      const details = err.validation.map((v) => ({ path: validationPath(where, v.instancePath), message: v.message }));
      const body: ErrorBody = {
        error: {
          code: "invalid_request",
          message: details.map((d) => `${d.path}: ${d.message}`).join("; "),
          details,
        },
      };
      return reply.status(400).send(body);
    }
    if (err instanceof StoreWriteError && err.failure !== "other") {
      const { status, code, message } = STORAGE_FAILURES[err.failure];
      request.log.error({ err: err.message, failure: err.failure }, "request failed: storage refused the write");
      return reply.status(status).send({ error: { code, message } } satisfies ErrorBody);
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
