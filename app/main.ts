import type { FastifyInstance } from "fastify";
import { type AppConfig, loadConfig } from "./config/loader.js";
import { DriverRegistry } from "./devices/driver.js";
import { builtinDrivers } from "./lifespan.js";
import { embeddedBrokerPort } from "./mqtt/broker.js";
import { createLogger } from "./observability/logger.js";
import { buildApp } from "./server.js";
import { ConfigError, errorMessage } from "./shared/errors.js";
import { assertCanListen, listenFailure } from "./shared/listen.js";
import { silenceDisabledDebug } from "./shared/quiet-debug.js";

/**
 * Entry point: config (files + environment) -> logger -> app -> listen.
 * SIGINT/SIGTERM close the app (in-flight actions commit, the store is flushed and
 * closed) and exit 0; a failed start exits 1 with the reason on stderr.
 */
async function main(): Promise<void> {
  let config: AppConfig;
  let app: FastifyInstance;
  // Before anything loads the MQTT modules (the broker and the client load them on start).
  silenceDisabledDebug();
  try {
    const drivers = new DriverRegistry(builtinDrivers);
    const startLog = createLogger("silent");
    config = await loadConfig({ checkDevices: (devices) => drivers.validate(devices, startLog) });
    app = await buildApp(config, { logger: createLogger(config.system.logging.level) });
  } catch (err) {
    process.stderr.write(`wb-bridge: ${err instanceof ConfigError ? err.message : errorMessage(err)}\n`);
    process.exit(2);
  }
  const { host, port } = config.system.http;
  const httpPort = { what: "HTTP", host, port, change: 'HTTP_PORT=<port> (or "http.port" in config/system.json)' };
  try {
    // Before the bridge starts: a taken port would otherwise fail the start only after the
    // store is open (and, for HTTP, the broker and the devices are up).
    await assertCanListen(httpPort);
    const { embedded } = config.system.mqtt;
    if (embedded.enabled) await assertCanListen(embeddedBrokerPort(embedded.host, embedded.port));
  } catch (err) {
    process.stderr.write(`wb-bridge: failed to start: ${errorMessage(err)}\n`);
    await app.close().catch(() => undefined);
    process.exit(1);
  }
  const logger = app.log;
  const timeoutMs = config.system.shutdown_timeout_ms;
  const closing = releaseConnectionsOnClose(app);

  let stopping = false;
  /** `exitCode` 1 when the bridge stops itself because it cannot go on (its storage failed). */
  const shutdown = (signal: string, exitCode: 0 | 1 = 0) => {
    if (stopping) {
      logger.warn({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    closing.start();
    logger.info({ signal, timeoutMs }, "shutting down");
    const timer = setTimeout(() => {
      logger.error({ timeoutMs }, "shutdown timed out: exiting before in-flight work finished");
      process.exit(1);
    }, timeoutMs);
    timer.unref();
    // Fastify's close(): new requests get 503, in-flight ones finish (their actions
    // commit), the server stops accepting; only then does onClose stop the bridge.
    app.close().then(
      () => {
        logger.info({ exitCode }, "wb-bridge exited");
        process.exit(exitCode);
      },
      (err: unknown) => {
        logger.error({ err: errorMessage(err) }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  app.bridge.onFatal((reason) => {
    process.stderr.write(`wb-bridge: stopping: ${reason}\n`);
    shutdown("storage failure", 1);
  });

  try {
    const address = await app.listen({ host, port });
    logger.info({ address }, "wb-bridge listening");
  } catch (err) {
    // The bridge's own start (store, broker, ...) fails here too, with its own message.
    const message = isListenError(err) ? listenFailure(httpPort, err) : errorMessage(err);
    logger.fatal({ err: message }, "wb-bridge failed to start");
    process.stderr.write(`wb-bridge: failed to start: ${message}\n`);
    await app.close().catch(() => undefined);
    process.exit(1);
  }
}

/** A bind failure of the HTTP server itself (a failed bridge start rejects listen() too). */
function isListenError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | undefined;
  return e?.syscall === "listen" && (e.code === "EADDRINUSE" || e.code === "EACCES");
}

/**
 * `server.close()` closes only the connections idle at that moment. A keep-alive
 * connection whose request is still running would otherwise stay open after its
 * response (Fastify's keepAliveTimeout is 72 s) and hold shutdown until the timeout.
 * Once shutdown has begun, every response says `Connection: close` (Node then ends the
 * socket after it), and any connection that went idle in between is closed as well.
 */
function releaseConnectionsOnClose(app: FastifyInstance): { start(): void } {
  let active = false;
  // Callback style, not async: these run on every response, and an async onSend hook
  // would defer each write to a microtask, for a flag that is false until shutdown.
  app.addHook("onSend", (_request, reply, payload, done) => {
    if (active && !reply.raw.headersSent) reply.header("connection", "close");
    done(null, payload);
  });
  app.addHook("onResponse", (_request, _reply, done) => {
    if (active) setImmediate(() => app.server.closeIdleConnections());
    done();
  });
  return {
    start: () => {
      active = true;
    },
  };
}

await main();
