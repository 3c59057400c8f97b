import swagger, { type SwaggerTransform } from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifySchema, LogController, type RouteOptions } from "fastify";
import { createJsonSchemaTransform, createJsonSchemaTransformObject } from "fastify-type-provider-zod";
import { securityFor } from "./openapi.js";

/**
 * The OpenAPI document and its UI, built on first request (see `registerOpenApi`): a
 * Fastify instance of their own that holds @fastify/swagger, @fastify/swagger-ui and a
 * copy of every API route (schema and config only, never served). Loaded on demand, the
 * swagger packages (yaml, @fastify/static, the transforms) cost a bridge nothing until
 * somebody opens the docs.
 */

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

const notServed = async (): Promise<never> => {
  throw new Error("the docs instance documents this route; the bridge serves it");
};

export async function buildDocsApp(options: {
  routes: readonly RouteOptions[];
  version: string;
  prefix: string;
  /** The bridge's logger (a child): the docs instance logs nothing per request. */
  log: FastifyBaseLogger;
}): Promise<FastifyInstance> {
  const docs = Fastify({
    loggerInstance: options.log,
    logController: new LogController({ disableRequestLogging: true }),
  });
  // The copied routes are never run, so their zod schemas need no compiled validators.
  docs.setValidatorCompiler(() => () => true);
  docs.setSerializerCompiler(() => (data) => JSON.stringify(data));
  try {
    await docs.register(swagger, {
      openapi: {
        openapi: "3.1.0",
        info: {
          title: "wb-bridge",
          version: options.version,
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
    await docs.register(swaggerUi, { routePrefix: options.prefix });
    for (const route of options.routes) {
      docs.route({ method: route.method, url: route.url, schema: route.schema, config: route.config, handler: notServed });
    }
    await docs.ready();
    return docs;
  } catch (err) {
    await docs.close();
    throw err;
  }
}
