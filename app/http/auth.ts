import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { pino } from "pino";
import type { RemoteKeyOptions } from "../auth/keys.js";
import { isGranted } from "../auth/permissions.js";
import type { AuthContext } from "../auth/verifier.js";
import type { Bridge } from "../lifespan.js";
import type { ErrorBody } from "./errors.js";
import type { Permission } from "./permissions.js";
import "./permissions.js";

export type { AuthContext } from "../auth/verifier.js";

/** A registered route and the permission the auth layer enforces on it. */
export interface RouteRecord {
  method: string;
  url: string;
  /** As declared; undefined means the route is treated as `admin`. */
  declared: Permission | undefined;
  permission: Permission;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The verified caller; null for public routes and when `auth.mode` is `none`. */
    auth: AuthContext | null;
  }
  interface FastifyInstance {
    /** Every route added after registerAuth, with its enforced permission (for tests and docs). */
    authRoutes: readonly RouteRecord[];
  }
}

export interface AuthOptions {
  remote?: RemoteKeyOptions;
}

/** Routes an EventSource reaches: it cannot set headers, so `?access_token=` is accepted there. */
const QUERY_TOKEN_ROUTES = new Set(["GET /events"]);

const REALM = 'Bearer realm="wb-bridge"';

/** The route's permission; a route that declares none needs `admin` (deny by default). */
export function routePermission(declared: Permission | undefined): Permission {
  return declared ?? "admin";
}

function bearerToken(request: FastifyRequest): string | null | "malformed" {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header);
    return match?.[1] ?? "malformed";
  }
  if (QUERY_TOKEN_ROUTES.has(`${request.method} ${request.routeOptions.url ?? ""}`)) {
    const query = request.query as Record<string, unknown> | undefined;
    const token = query?.access_token;
    if (typeof token === "string" && token !== "") return token;
  }
  return null;
}

/** `?access_token=<jwt>` -> `?access_token=[redacted]`, for anything that logs a URL. */
export function redactAccessToken(url: string): string {
  return url.replace(/([?&]access_token=)[^&#]*/gi, "$1[redacted]");
}

type Serializer = (value: unknown) => unknown;

/**
 * Request loggers whose `req` serializer hides `?access_token=` in the logged URL
 * (Fastify logs `req.url` on every "incoming request"); the existing serializer is kept.
 */
function redactTokensInRequestLogs(app: FastifyInstance): void {
  app.setChildLoggerFactory((logger, bindings, opts) => {
    const inherited = (logger as unknown as Record<symbol, Record<string, Serializer> | undefined>)[pino.symbols.serializersSym];
    const base: Serializer | undefined = opts.serializers?.req ?? inherited?.req;
    const req: Serializer = (value) => {
      const out = base ? base(value) : value;
      if (out && typeof out === "object" && typeof (out as { url?: unknown }).url === "string") {
        return { ...out, url: redactAccessToken((out as { url: string }).url) };
      }
      return out;
    };
    return logger.child(bindings, { ...opts, serializers: { ...opts.serializers, req } });
  });
}

function unauthorized(reply: FastifyReply, message: string, invalidToken: boolean): FastifyReply {
  // RFC 6750 §3.1: no error code when the request carried no credentials at all.
  const challenge = invalidToken ? `${REALM}, error="invalid_token", error_description="${message}"` : REALM;
  const body: ErrorBody = { error: { code: "unauthorized", message } };
  return reply.status(401).header("www-authenticate", challenge).send(body);
}

/**
 * Authentication and RBAC on every route. Every route declares
 * `config.permission`; an `onRequest` hook (the first hook, before body parsing)
 * verifies the bearer token and checks the grant. With `auth.mode` `none` nothing is
 * checked (the loader only allows that on loopback unless `allow_insecure_remote`).
 */
export async function registerAuth(app: FastifyInstance, bridge: Bridge, options: AuthOptions = {}): Promise<void> {
  const { auth } = bridge.config.system;
  const routes: RouteRecord[] = [];
  app.decorate("authRoutes", routes);
  app.decorateRequest("auth", null);

  app.addHook("onRoute", (route) => {
    const declared = route.config?.permission;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) routes.push({ method, url: route.url, declared, permission: routePermission(declared) });
    if (declared === undefined) app.log.warn({ method: route.method, url: route.url }, "route declares no permission; admin required");
  });

  if (auth.mode === "none") return;

  // Loaded only when tokens are checked: jose is not needed by a bridge without auth.
  const { createTokenVerifier, InvalidTokenError, KeySourceUnavailableError } = await import("../auth/verifier.js");
  redactTokensInRequestLogs(app);
  const verifier = createTokenVerifier(auth.jwt, bridge.config.secrets.jwtSecret, options.remote);
  const log = app.log.child({ module: "auth" });

  app.addHook("onRequest", async (request, reply) => {
    // Unknown routes keep their 404; there is nothing to protect.
    if (request.is404) return;
    const needed = routePermission(request.routeOptions.config.permission);
    if (needed === "public") return;

    const token = bearerToken(request);
    if (token === null) return unauthorized(reply, "missing bearer token", false);
    if (token === "malformed") return unauthorized(reply, "malformed Authorization header", true);

    let context: AuthContext;
    try {
      context = await verifier.verify(token);
    } catch (err) {
      if (err instanceof InvalidTokenError) {
        request.log.info({ reason: err.message }, "token rejected");
        return unauthorized(reply, err.message, true);
      }
      if (err instanceof KeySourceUnavailableError) {
        log.error({ reason: err.message }, "cannot verify tokens: key source unavailable");
        const body: ErrorBody = { error: { code: "auth_unavailable", message: "token keys unavailable, try again" } };
        return reply.status(503).header("retry-after", "5").send(body);
      }
      throw err;
    }
    request.auth = context;
    if (!isGranted(context.permissions, needed)) {
      request.log.info({ subject: context.subject, needed }, "permission denied");
      const body: ErrorBody = { error: { code: "forbidden", message: `needs ${needed}` } };
      return reply.status(403).header("www-authenticate", `${REALM}, error="insufficient_scope", scope="${needed}"`).send(body);
    }
  });
}
