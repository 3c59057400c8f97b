// Types only: `schema.hide`. The packages themselves load with the docs (docs-app.ts).
import type {} from "@fastify/swagger";
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from "fastify";
import { NotFoundError } from "../shared/errors.js";
import type { Permission } from "./permissions.js";
import "./permissions.js";

/** Where the UI lives; the document is at `${DOCS_PREFIX}/json` (and `/yaml`). */
export const DOCS_PREFIX = "/docs";

/** One registered route as the document should show it. */
export interface RouteEntry {
  method: string;
  url: string;
  /** `undefined` when the route declares none (the auth layer then refuses it). */
  permission: Permission | undefined;
  /** `schema.hide`: left out of the document on purpose (the docs UI's own routes). */
  hidden: boolean;
}

declare module "fastify" {
  interface FastifyInstance {
    /** Every route added after `registerOpenApi`, HEAD duplicates left out. */
    routeTable(): RouteEntry[];
  }
}

/**
 * Records routes as they are added. The entries are read when asked, not when added,
 * so what later `onRoute` hooks set (the docs routes' permission) is seen.
 */
export function routeCollector(): {
  onRoute: (route: RouteOptions) => void;
  routes: () => RouteEntry[];
  options: () => readonly RouteOptions[];
} {
  const seen: RouteOptions[] = [];
  return {
    onRoute: (route) => {
      if (route.method === "HEAD") return;
      seen.push(route);
    },
    routes: () =>
      seen.flatMap((route) =>
        [route.method].flat().map((method) => ({
          method,
          url: route.url,
          permission: route.config?.permission,
          hidden: (route.schema as { hide?: boolean } | undefined)?.hide === true,
        })),
      ),
    options: () => seen,
  };
}

/** What the operation needs: no token for public routes, a bearer token for the rest. */
export function securityFor(permission: Permission | undefined): Array<Record<string, string[]>> {
  return permission === "public" ? [] : [{ bearerAuth: [] }];
}

/** Response headers of the docs instance that belong to its own connection, not the bridge's. */
const HOP_HEADERS = new Set(["connection", "content-length", "date", "keep-alive", "transfer-encoding"]);

/**
 * OpenAPI 3.1 document from the zod route schemas (DESIGN §6: one source for validation
 * and documentation) with the UI at /docs and the JSON at /docs/json. Registered before
 * the routes, whose options an `onRoute` hook keeps. The document and the UI are built on
 * the first request to /docs, by a Fastify instance of their own (`docs-app.ts`, loaded
 * then): a bridge whose docs nobody opens never loads the swagger packages (about 3 MB
 * of a controller's memory). Every route exists by then, so the document is complete.
 */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  const collector = routeCollector();
  app.addHook("onRoute", collector.onRoute);
  app.decorate("routeTable", collector.routes);

  let docs: Promise<FastifyInstance> | null = null;
  const docsApp = (): Promise<FastifyInstance> => {
    docs ??= import("./docs-app.js")
      .then(({ buildDocsApp }) =>
        buildDocsApp({
          routes: collector.options().filter((route) => !isDocsUrl(route.url)),
          version,
          prefix: DOCS_PREFIX,
          log: app.log.child({ module: "docs" }),
        }),
      )
      .catch((err: unknown) => {
        // Not kept: the next request tries again.
        docs = null;
        throw err;
      });
    return docs;
  };
  app.addHook("onClose", async () => {
    const built = await docs?.catch(() => null);
    await built?.close();
  });

  const forward = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const answer = await (await docsApp()).inject({ method: request.method as "GET" | "HEAD", url: request.url, headers: request.headers });
    // Its 404s in the API's error shape, like every other unknown path.
    if (answer.statusCode === 404)
      throw new NotFoundError("route_not_found", `no docs page ${request.method} ${request.url.split("?")[0]}`);
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && !HOP_HEADERS.has(name)) reply.header(name, value);
    }
    return reply.code(answer.statusCode).send(answer.rawPayload);
  };
  // The UI, its static files and the document are public, whatever auth requires.
  const options = { schema: { hide: true }, config: { permission: "public" as const } };
  app.get(DOCS_PREFIX, options, forward);
  app.get(`${DOCS_PREFIX}/*`, options, forward);
}

function isDocsUrl(url: string): boolean {
  return url === DOCS_PREFIX || url.startsWith(`${DOCS_PREFIX}/`);
}
