import type { FastifyInstance } from "fastify";
import type { AppConfig } from "../../app/config/loader.js";
import { buildApp } from "../../app/server.js";
import { captureLogger } from "./fixtures.js";

export interface RunningApp {
  app: FastifyInstance;
  logs: string[];
}

/** Builds and starts the whole bridge (store, MQTT, devices, scenarios) for `inject()`. */
export async function startApp(config: AppConfig): Promise<RunningApp> {
  const { log, lines } = captureLogger("debug");
  const app = await buildApp(config, { logger: log, sleep: async () => undefined });
  await app.ready();
  return { app, logs: lines };
}
