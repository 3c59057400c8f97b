import { loadConfig } from "./config/loader.js";
import { createLogger } from "./observability/logger.js";
import { buildApp } from "./server.js";
import { ConfigError, errorMessage } from "./shared/errors.js";

/**
 * Entry point: config (files + environment) -> logger -> app -> listen.
 * SIGINT/SIGTERM close the app (in-flight actions commit, the store is flushed and
 * closed) and exit 0; a failed start exits 1 with the reason on stderr.
 */
async function main(): Promise<void> {
  let config;
  let app;
  try {
    config = await loadConfig();
    app = await buildApp(config, { logger: createLogger(config.system.logging.level) });
  } catch (err) {
    process.stderr.write(`wb-bridge: ${err instanceof ConfigError ? err.message : errorMessage(err)}\n`);
    process.exit(2);
  }
  const logger = app.log;

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: config.system.shutdown_timeout_ms }, "shutdown timed out");
      process.exit(1);
    }, config.system.shutdown_timeout_ms);
    timer.unref();
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: errorMessage(err) }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));

  try {
    const address = await app.listen({ host: config.system.http.host, port: config.system.http.port });
    logger.info({ address }, "wb-bridge listening");
  } catch (err) {
    logger.fatal({ err: errorMessage(err) }, "wb-bridge failed to start");
    process.stderr.write(`wb-bridge: failed to start: ${errorMessage(err)}\n`);
    await app.close().catch(() => undefined);
    process.exit(1);
  }
}

await main();
