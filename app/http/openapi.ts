import swagger, { type SwaggerTransform } from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance, FastifySchema, RouteOptions } from "fastify";
import { createJsonSchemaTransform, createJsonSchemaTransformObject } from "fastify-type-provider-zod";
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
export function routeCollector(): { onRoute: (route: RouteOptions) => void; routes: () => RouteEntry[] } {
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
  };
}

/** What the operation needs: no token for public routes, a bearer token for the rest. */
export function securityFor(permission: Permission | undefined): Array<Record<string, string[]>> {
  return permission === "public" ? [] : [{ bearerAuth: [] }];
}

const zodTransform = createJsonSchemaTransform({});

/**
 * The zod schemas -> JSON Schema (fastify-type-provider-zod), then the operation's
 * security and `x-permission` from the route's `config.permission` and a tag from the
 * first path segment. Routes without any schema (SSE) still get an operation.
 */
const transform: SwaggerTransform = (document) => {
  const { schema, url } = zodTransform(document);
  const permission = document.route.config?.permission;
  const withHide = schema as (FastifySchema & { hide?: boolean }) | undefined;
  if (withHide?.hide) return { schema, url };
  const tag = url.split("/")[1] || "root";
  return {
    url,
    schema: {
      ...schema,
      tags: [tag],
      security: securityFor(permission),
      ...(permission === undefined ? {} : { "x-permission": permission }),
    } as FastifySchema,
  };
};

/**
 * OpenAPI 3.1 document from the zod route schemas (DESIGN §6: one source for validation
 * and documentation) with the UI at /docs and the JSON at /docs/json. Registered before
 * the routes: @fastify/swagger collects routes in an `onRoute` hook.
 */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  const collector = routeCollector();
  app.addHook("onRoute", collector.onRoute);
  app.decorate("routeTable", collector.routes);

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "wb-bridge",
        version,
        description: "Devices, scenarios and state of the bridge. Errors are `{ error: { code, message, details? } }`.",
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
        },
      },
    },
    transform,
    transformObject: createJsonSchemaTransformObject({}),
  });

  // In its own scope so the onRoute hook below touches only the UI's routes: the UI,
  // its static files and the document are public (swagger-ui has no route config option).
  await app.register(async (docs) => {
    docs.addHook("onRoute", (route) => {
      route.config = { ...route.config, permission: "public" };
    });
    await docs.register(swaggerUi, { routePrefix: DOCS_PREFIX });
  });
}
