import rateLimit, { type FastifyRateLimitStore, normalizeIP } from "@fastify/rate-limit";
import type { FastifyInstance, FastifyRequest, RouteOptions } from "fastify";
import type { SystemConfig } from "../config/system.js";
import { AppError } from "../shared/errors.js";

const WRITE_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);

function isWrite(route: RouteOptions): boolean {
  return [route.method].flat().some((m) => WRITE_METHODS.has(m));
}

/** Clients tracked at once; past this, finished windows go first, then the oldest. */
const MAX_CLIENTS = 10_000;

/**
 * Fixed-window counters shared by every write route: the plugin's default store keeps
 * one counter per route, which would give a client `max` writes per route instead of
 * `max` writes in all (what `rate_limit.max` means).
 */
export class SharedWindowStore implements FastifyRateLimitStore {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();

  incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void, timeWindow: number): void {
    const now = Date.now();
    let w = this.windows.get(key);
    if (!w || w.resetAt <= now) {
      this.windows.delete(key);
      w = { count: 0, resetAt: now + timeWindow };
      this.windows.set(key, w);
      this.evict(now);
    }
    w.count += 1;
    callback(null, { current: w.count, ttl: w.resetAt - now });
  }

  child(): FastifyRateLimitStore {
    return this;
  }

  private evict(now: number): void {
    if (this.windows.size <= MAX_CLIENTS) return;
    for (const [key, w] of this.windows) if (w.resetAt <= now) this.windows.delete(key);
    for (const key of this.windows.keys()) {
      if (this.windows.size <= MAX_CLIENTS) break;
      this.windows.delete(key);
    }
  }
}

/**
 * The authenticated subject when the auth layer set one (`request.auth.subject`, the
 * token's `sub`), else the client address. Read without relying on how auth types
 * `request.auth`, so either side can change without breaking the other.
 */
export function clientKey(request: FastifyRequest): string {
  const auth: unknown = (request as { auth?: unknown }).auth;
  if (auth && typeof auth === "object") {
    const subject = "subject" in auth ? auth.subject : "sub" in auth ? auth.sub : undefined;
    if (typeof subject === "string" && subject !== "") return `sub:${subject}`;
  }
  return `ip:${normalizeIP(request.ip)}`;
}

/**
 * Per-client limits on write routes (POST/PUT/PATCH/DELETE), one budget of `max` writes
 * per `window_ms` across all of them; reads are never limited.
 * An `onRoute` hook gives every write route added later its `config.rateLimit`, so new
 * write routes are covered without touching them; a route with `config.rateLimit: false`
 * is left out (one that sets its own options keeps them, on the same shared counters). The check runs in `preParsing`: after the auth layer's
 * `onRequest` hook (so the key can be the token's subject), before the body is read.
 * Over the limit: 429 `rate_limited` with `Retry-After` (seconds). `max: 0` disables it.
 */
export async function registerRateLimit(app: FastifyInstance, config: SystemConfig["rate_limit"]): Promise<void> {
  if (config.max === 0) return;
  const limit = { max: config.max, timeWindow: config.window_ms };

  // Before the plugin: its own onRoute hook reads `config.rateLimit`, hooks run in order.
  app.addHook("onRoute", (route) => {
    if (!isWrite(route) || route.config?.rateLimit !== undefined) return;
    route.config = { ...route.config, rateLimit: limit };
  });

  await app.register(rateLimit, {
    global: false,
    hook: "preParsing",
    store: SharedWindowStore,
    keyGenerator: clientKey,
    // A route that serves reads and writes alike is limited on its writes only.
    allowList: (request) => !WRITE_METHODS.has(request.method),
    errorResponseBuilder: (_request, context) =>
      new AppError(context.statusCode, "rate_limited", `too many write requests; retry in ${context.after}`, {
        limit: context.max,
        retry_after_s: Math.ceil(context.ttl / 1000),
      }),
  });
}
