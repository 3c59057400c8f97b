import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { ConnectionError, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

type ContentTypeParser = Parameters<FastifyInstance["addContentTypeParser"]>[2];

import type { Logger } from "pino";
import { AppError, BadRequestError } from "../shared/errors.js";
import type { ErrorBody } from "./errors.js";

/**
 * Requests refused below the routes: by Node's HTTP parser, by the router, or as JSON
 * too deep for the value schemas. Fastify answers the first two with its own body
 * shape, and the third overflowed the stack (a 500); all get DESIGN §6's body here.
 */

/**
 * Deeper JSON than this is refused with 400. The recursive value schema (and merge and
 * stringify after it) overflow the stack a few thousand levels down; no real value nests
 * anywhere near this.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether `value` nests arrays/objects deeper than `max`; iterative, so any depth is safe to ask about. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 0 }];
  while (stack.length > 0) {
    const { value: current, depth } = stack.pop() as { value: unknown; depth: number };
    if (current === null || typeof current !== "object") continue;
    if (depth + 1 > max) return true;
    for (const inner of Object.values(current)) stack.push({ value: inner, depth: depth + 1 });
  }
  return false;
}

/** RFC 7396's media type; its body is JSON and only PATCH gives it meaning. */
export const MERGE_PATCH_TYPE = "application/merge-patch+json";

/**
 * Fastify's JSON parser (prototype-poisoning checks, body limits) plus the depth limit, for
 * `application/json` and, on PATCH, `application/merge-patch+json`.
 */
export function limitJsonDepth(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  const parseJson: ContentTypeParser = (request, body, done) => {
    void parse(request, typeof body === "string" ? body : body.toString("utf8"), (err, value) => {
      if (err) return done(err, undefined);
      if (nestedDeeperThan(value, MAX_JSON_DEPTH)) {
        return done(new BadRequestError("json_too_deep", `JSON body nests deeper than ${MAX_JSON_DEPTH} levels`), undefined);
      }
      done(null, value);
    });
  };
  app.addContentTypeParser("application/json", { parseAs: "string" }, parseJson);
  app.addContentTypeParser(MERGE_PATCH_TYPE, { parseAs: "string" }, (request, body, done) => {
    if (request.method !== "PATCH") {
      return done(
        new AppError(415, "unsupported_media_type", `${MERGE_PATCH_TYPE} is accepted on PATCH only; send application/json`),
        undefined,
      );
    }
    parseJson(request, body, done);
  });
}

/** Fastify's `frameworkErrors`: a URL the router cannot decode (400) or a path parameter over its length (414). */
export function answerFrameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const status = typeof error.statusCode === "number" && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 400;
  const code = (error.code ?? "bad_request").replace(/^FST_ERR_/, "").toLowerCase();
  void reply.status(status).send({ error: { code, message: error.message } } satisfies ErrorBody);
}

/**
 * Fastify's `clientErrorHandler`: what Node's HTTP parser refuses (bad request line,
 * headers or framing, headers too large) never becomes a request, so it is answered on
 * the socket, which is then closed. Only the parser's code is logged, never the bytes.
 */
export function answerClientError(log: Logger): (error: ConnectionError, socket: Socket) => void {
  return (error, socket) => {
    if (error.code === "ECONNRESET" || socket.destroyed) return;
    const [status, code, message] =
      error.code === "HPE_HEADER_OVERFLOW"
        ? [431, "headers_too_large", "request headers are too large"]
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, "request_timeout", "the request did not arrive in time"]
          : [400, "malformed_request", `malformed HTTP request (${error.code ?? "unknown"})`];
    log.debug({ code: error.code }, "malformed HTTP request refused");
    if (socket.writable) {
      const body = JSON.stringify({ error: { code, message } } satisfies ErrorBody);
      socket.write(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\nContent-Type: application/json; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy(error);
  };
}
