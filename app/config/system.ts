import { z } from "zod";

const port = z.number().int().min(0).max(65535);

export const logLevelSchema = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export const mqttConfigSchema = z
  .object({
    /** Broker to connect to; ignored while the embedded broker is enabled. */
    url: z.string().regex(/^mqtts?:\/\/[^\s]+$/, "expected mqtt://host:port or mqtts://host:port").optional(),
    client_id: z.string().min(1).max(64).default("wb-bridge"),
    /** Names of environment variables holding the credentials; never the secrets themselves. */
    username_env: z.string().min(1).optional(),
    password_env: z.string().min(1).optional(),
    keepalive_s: z.number().int().min(5).max(3600).default(30),
    reconnect_min_ms: z.number().int().min(50).default(500),
    reconnect_max_ms: z.number().int().min(100).default(30_000),
    embedded: z
      .object({
        enabled: z.boolean().default(false),
        host: z.string().min(1).default("127.0.0.1"),
        port: port.default(18830),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const httpConfigSchema = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: port.default(8099),
  })
  .strict();

export const persistenceConfigSchema = z
  .object({
    db_path: z.string().min(1).default("data/state_store.db"),
    synchronous: z.enum(["off", "normal", "full", "extra"]).default("full"),
    busy_timeout_ms: z.number().int().min(0).max(600_000).default(5000),
    max_value_bytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
  })
  .strict();

export const systemConfigSchema = z
  .object({
    mqtt: mqttConfigSchema.prefault({}),
    http: httpConfigSchema.prefault({}),
    persistence: persistenceConfigSchema.prefault({}),
    logging: z.object({ level: logLevelSchema.default("info") }).strict().prefault({}),
    /** How long shutdown waits for in-flight actions and writes before giving up. */
    shutdown_timeout_ms: z.number().int().min(100).max(600_000).default(10_000),
  })
  .strict();

export type SystemConfig = z.infer<typeof systemConfigSchema>;
export type MqttConfig = z.infer<typeof mqttConfigSchema>;
export type LogLevel = z.infer<typeof logLevelSchema>;
