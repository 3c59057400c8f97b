import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import type { AppConfig } from "./config/loader.js";
import { registerAuth } from "./http/auth.js";
import { devicesRoutes } from "./http/devices.js";
import { registerErrorHandlers } from "./http/errors.js";
import { type EventsOptions, eventsRoutes } from "./http/events.js";
import { metricsRoutes } from "./http/metrics.js";
import { registerOpenApi } from "./http/openapi.js";
import { answerClientError, answerFrameworkError, limitJsonDepth } from "./http/protocol-errors.js";
import { registerRateLimit } from "./http/rate-limit.js";
import { scenariosRoutes } from "./http/scenarios.js";
import { stateRoutes } from "./http/state.js";
import { systemRoutes } from "./http/system.js";
import { Bridge, type BridgeOverrides } from "./lifespan.js";
import { createLogger, type Logger } from "./observability/logger.js";
import { createGenReqId, echoRequestId } from "./observability/request-id.js";
import { deferRequestLoggers } from "./observability/request-logger.js";
import { readVersion } from "./version.js";

declare module "fastify" {
  interface FastifyInstance {
    bridge: Bridge;
  }
}

/** Fastify asks for a default compiler only where none is set, and the app sets zod's at the root. */
function noDefaultCompiler(): never {
  throw new Error("a route without the zod compilers: they are set on the root instance before any route");
}

export interface BuildAppOverrides extends BridgeOverrides {
  logger?: Logger;
  events?: EventsOptions;
}

/**
 * The whole bridge as a Fastify instance that has not listened yet: tests drive it
 * with `inject()` or `listen({ port: 0 })`. `ready()` starts every part (onReady);
 * `close()` stops them in order (onClose), after in-flight requests finished.
 */
export async function buildApp(config: AppConfig, overrides: BuildAppOverrides = {}): Promise<FastifyInstance> {
  const logger = overrides.logger ?? createLogger(config.system.logging.level);
  const bridge = await Bridge.create(config, logger, readVersion(), overrides);

  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast only keeps the app's default generics.
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: 256 * 1024,
    // Replaced by the hook below, which answers in the API's own error shape.
    return503OnClosing: false,
    // Request ids: the caller's x-request-id when sane, else a UUID; echoed on every response.
    requestIdHeader: false,
    genReqId: createGenReqId(),
    // State keys in the path may be 200 characters of id plus a namespace.
    routerOptions: { maxParamLength: 512 },
    // What Node's parser or the router refuses answers in the API's error shape too.
    clientErrorHandler: answerClientError(logger),
    frameworkErrors: answerFrameworkError,
    // Every route validates and serializes with zod (set right below, before any route):
    // with factories of its own Fastify never loads its defaults (ajv, fast-json-stringify
    // and what they pull in, about 100 modules a controller would hold for nothing).
    schemaController: { compilersFactory: { buildValidator: noDefaultCompiler, buildSerializer: noDefaultCompiler } },
  });
  limitJsonDepth(app);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorate("bridge", bridge);
  echoRequestId(app);
  registerErrorHandlers(app);
  // From the start of close(): requests still arriving on open connections are turned
  // away unexecuted, with DESIGN §6's body; in-flight ones finish and commit.
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  // Callback style, not async: an async hook costs a promise and a microtask on every
  // request, for a check that is false until shutdown.
  app.addHook("onRequest", (_request, reply, done) => {
    if (!closing) return done();
    reply
      .status(503)
      .header("connection", "close")
      .send({ error: { code: "shutting_down", message: "the bridge is shutting down" } });
  });
  // Before the routes: the OpenAPI document and the limits see every route as it is added.
  await registerOpenApi(app, bridge.version);
  await registerRateLimit(app, config.system.rate_limit);
  await registerAuth(app, bridge);
  // After registerAuth, which may install its own factory (token redaction): this defers whichever is in place.
  app.setChildLoggerFactory(deferRequestLoggers(app.childLoggerFactory));

  app.addHook("onReady", async () => {
    await bridge.start();
  });
  app.addHook("onClose", async () => {
    await bridge.stop();
  });

  await app.register(systemRoutes(bridge));
  await app.register(devicesRoutes(bridge));
  await app.register(scenariosRoutes(bridge));
  await app.register(stateRoutes(bridge));
  await app.register(eventsRoutes(bridge, overrides.events));
  await app.register(metricsRoutes(bridge));
  return app;
}
