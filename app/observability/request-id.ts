import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { FastifyInstance } from "fastify";

export const REQUEST_ID_HEADER = "x-request-id";

/** What an incoming id may look like; anything else (too long, spaces, control characters) is replaced. */
const ACCEPTED_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/**
 * A UUID (RFC 9562 version 8, "custom") made of 74 random bits drawn once per process and
 * a 48-bit counter: unique per request, and unique across restarts with overwhelming
 * probability. Request ids need no unpredictability, and `randomUUID()` builds its
 * string from 20 pieces, about 600 bytes of garbage on every request.
 */
export function requestIdSource(): () => string {
  const hex = randomBytes(10).toString("hex");
  const variant = "89ab"[Number.parseInt(hex.charAt(15), 16) & 3] as string;
  // xxxxxxxx-xxxx-8xxx-Vxxx-cccccccccccc: version 8, variant 10xx, then the counter.
  const prefix = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(12, 15)}-${variant}${hex.slice(16, 19)}-`;
  let counter = 0;
  return () => {
    counter = (counter + 1) % 0x1000000000000;
    return prefix + counter.toString(16).padStart(12, "0");
  };
}

/**
 * Fastify's `genReqId`, one per app (its counter is the app's own): the caller's
 * `x-request-id` when it is a sane token (so a proxy's id follows the request into our
 * logs), otherwise a new UUID. Never logs raw header text.
 */
export function createGenReqId(): (req: IncomingMessage) => string {
  const newRequestId = requestIdSource();
  return (req) => {
    const incoming = req.headers[REQUEST_ID_HEADER];
    const value = Array.isArray(incoming) ? incoming[0] : incoming;
    return value !== undefined && ACCEPTED_ID.test(value) ? value : newRequestId();
  };
}

/** Every response carries the request's id (the one in its log lines) as `x-request-id`. */
export function echoRequestId(app: FastifyInstance): void {
  // Callback style: it runs on every request, and an async hook would add a promise and a microtask.
  app.addHook("onRequest", (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    done();
  });
}
