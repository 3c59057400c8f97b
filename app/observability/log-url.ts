import type { FastifyRequest } from "fastify";
import { pino } from "pino";

/**
 * A request URL as logs may show it: the path and the names of the query parameters, never
 * their values (`?filter=password=…`, `?access_token=…` carry secrets and state values).
 */
export function urlForLog(url: string): { url: string; query_keys?: string[] } {
  const at = url.indexOf("?");
  if (at < 0) return { url };
  const keys = [...new Set([...new URLSearchParams(url.slice(at + 1)).keys()])];
  return keys.length > 0 ? { url: url.slice(0, at), query_keys: keys } : { url: url.slice(0, at) };
}

/** Fastify's `req` fields, with the URL cut down by `urlForLog`. */
export function serializeRequest(req: FastifyRequest): Record<string, unknown> {
  return {
    method: req.method,
    ...urlForLog(req.url),
    host: req.host,
    remoteAddress: req.ip,
    remotePort: req.socket?.remotePort,
  };
}

/** pino's error fields; an error that carries the request URL (Fastify's serialization errors) gets it cut down. */
export function serializeError(err: unknown): unknown {
  // Most log lines carry `err` as a message string already: it stays as it is.
  if (!(err instanceof Error)) return err;
  const out: Record<string, unknown> = { ...pino.stdSerializers.err(err) };
  if (typeof out.url === "string") Object.assign(out, urlForLog(out.url));
  return out;
}
