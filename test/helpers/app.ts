import type { FastifyInstance } from "fastify";
import { expect } from "vitest";
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

/** Builds the bridge and expects its start to fail; returns the error and the log lines. */
export async function failedStart(config: AppConfig): Promise<{ err: unknown; logs: string[] }> {
  const { log, lines } = captureLogger("debug");
  const app = await buildApp(config, { logger: log });
  const err = await app.ready().then(
    () => null,
    (e: unknown) => e,
  );
  if (err === null) await app.close();
  expect(err, "the bridge started").not.toBeNull();
  expect(app.bridge.phase).toBe("failed");
  expect(app.bridge.isStoreOpen).toBe(false);
  return { err, logs: lines };
}
