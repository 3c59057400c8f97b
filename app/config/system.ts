import { z } from "zod";

const port = z.number().int().min(0).max(65535);

export const logLevelSchema = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

export const mqttConfigSchema = z
  .object({
    /** Broker to connect to; ignored while the embedded broker is enabled. */
    url: z
      .string()
      .regex(/^mqtts?:\/\/[^\s]+$/, "expected mqtt://host:port or mqtts://host:port")
      .optional(),
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

export const backupConfigSchema = z
  .object({
    /** Where backups go; default `backups/` beside the database. */
    dir: z.string().min(1).optional(),
    /** Seconds between automatic backups; 0 disables them. */
    interval_s: z
      .number()
      .int()
      .min(0)
      .max(7 * 24 * 3600)
      .default(300),
    /** How many backups are kept; older ones are deleted after a new one is verified. */
    keep: z.number().int().min(1).max(1000).default(10),
  })
  .strict();

export const encryptionConfigSchema = z
  .object({
    /** Name of the environment variable holding the key list (first encrypts, all decrypt). */
    key_env: z.string().min(1).default("STATE_ENCRYPTION_KEY"),
    /** A file holding the key list, one per line; used when the variable is unset. */
    key_file: z.string().min(1).optional(),
  })
  .strict();

export const historyConfigSchema = z
  .object({
    /** Record an entry per change in the same transaction as the value (the audit trail). */
    enabled: z.boolean().default(true),
    /** Newest entries kept per key (0 keeps none). */
    max_per_key: z.number().int().min(0).max(1_000_000).default(200),
    /** Entries older than this are pruned (0 keeps them regardless of age). */
    max_age_days: z.number().min(0).max(36_500).default(90),
  })
  .strict();

export const postgresConfigSchema = z
  .object({
    /** Name of the environment variable holding the server URL (postgres://user:pass@host:port/db). */
    url_env: z.string().min(1).default("STATE_DATABASE_URL"),
    /** The bridge's tables live in this schema (created if missing). */
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, "expected a plain lower-case identifier")
      .default("wb_bridge"),
    /** Connections for reads, beside the one that commits. */
    read_pool_size: z.number().int().min(1).max(64).default(4),
    connect_timeout_ms: z.number().int().min(100).max(120_000).default(5000),
    /**
     * One of an active/standby pair: a bridge that finds the schema held by another does
     * not refuse to start but stands by (serves reads, drives nothing) and takes over when
     * the active one goes. Off: the second bridge is refused, as with SQLite.
     */
    pair: z.boolean().default(false),
  })
  .strict();

export const cacheConfigSchema = z
  .object({
    /** Name of the environment variable holding the Redis URL (redis://[user:password@]host:port[/db], or rediss://). */
    redis_url_env: z.string().min(1).default("STATE_REDIS_URL"),
    /** Longest a value stays cached; writes invalidate it at once, this only bounds Redis memory. */
    ttl_s: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600)
      .default(300),
    /** Put before every Redis key: the same for bridges on one data set, different for different data. */
    key_prefix: z.string().min(1).max(64).default("wb:"),
    /**
     * Redis must answer at start: a bridge that cannot reach it stops with exit 1, as for
     * the database. false: start without the cache and take it up once Redis answers.
     */
    required_at_start: z.boolean().default(true),
    /**
     * Read-modify-writes of a store shared by several bridges (partial updates) lock the key
     * in Redis for at most this long; a holder paused longer loses the lock, and its write
     * is refused by its fencing token.
     */
    lock_ttl_ms: z.number().int().min(100).max(600_000).default(10_000),
    /** How long a change waits for a key another bridge holds before it is refused (503 lock_timeout). */
    lock_wait_ms: z.number().int().min(0).max(600_000).default(5000),
  })
  .strict();

export const persistenceConfigSchema = z
  .object({
    /** `sqlite` (the embedded default: a file under data/) or `postgres` (a server, see `postgres`). */
    backend: z.enum(["sqlite", "postgres"]).default("sqlite"),
    postgres: postgresConfigSchema.prefault({}),
    db_path: z.string().min(1).default("data/state_store.db"),
    synchronous: z.enum(["off", "normal", "full", "extra"]).default("full"),
    busy_timeout_ms: z.number().int().min(0).max(600_000).default(5000),
    /**
     * How long every commit may keep failing with a read-only or I/O error (at least three
     * in a row) before the bridge stops, exit 1, for its supervisor to restart it (0 never).
     * A full disk never stops it: writes resume once space is freed.
     */
    io_failure_exit_ms: z.number().int().min(0).max(86_400_000).default(30_000),
    max_value_bytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    backups: backupConfigSchema.prefault({}),
    encryption: encryptionConfigSchema.prefault({}),
    history: historyConfigSchema.prefault({}),
    /** A Redis read-through cache in front of the store; absent: none. */
    cache: cacheConfigSchema.optional(),
  })
  .strict();

export const authConfigSchema = z
  .object({
    /** `none`: no authentication (only allowed on loopback unless allow_insecure_remote). */
    mode: z.enum(["none", "jwt"]).default("none"),
    allow_insecure_remote: z.boolean().default(false),
    jwt: z
      .object({
        /** Name of the environment variable holding the HS256 shared secret. */
        hs256_secret_env: z.string().min(1).optional(),
        /** OIDC issuer URL: discovery -> JWKS (RS256/ES256). */
        oidc_issuer: z.string().url().optional(),
        /** A JWKS URL used directly (instead of discovery). */
        jwks_url: z.string().url().optional(),
        /** Expected `iss`; defaults to oidc_issuer. */
        issuer: z.string().min(1).optional(),
        /** Expected `aud`. */
        audience: z.string().min(1).optional(),
        /** Claim holding the permissions: a space-separated string or an array. */
        permissions_claim: z.string().min(1).default("scope"),
        clock_tolerance_s: z.number().int().min(0).max(600).default(30),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export const metricsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Serve /metrics without authentication (for a scraper on a trusted network). */
    public: z.boolean().default(false),
  })
  .strict();

export const rateLimitConfigSchema = z
  .object({
    /** Write requests per client per window; 0 disables. */
    max: z.number().int().min(0).default(120),
    window_ms: z.number().int().min(100).default(60_000),
  })
  .strict();

export const systemConfigSchema = z
  .object({
    mqtt: mqttConfigSchema.prefault({}),
    http: httpConfigSchema.prefault({}),
    persistence: persistenceConfigSchema.prefault({}),
    logging: z
      .object({ level: logLevelSchema.default("info") })
      .strict()
      .prefault({}),
    auth: authConfigSchema.prefault({}),
    metrics: metricsConfigSchema.prefault({}),
    rate_limit: rateLimitConfigSchema.prefault({}),
    /** How long shutdown waits for in-flight actions and writes before giving up. */
    shutdown_timeout_ms: z.number().int().min(100).max(600_000).default(10_000),
  })
  .strict();

export type SystemConfig = z.infer<typeof systemConfigSchema>;
export type MqttConfig = z.infer<typeof mqttConfigSchema>;
export type LogLevel = z.infer<typeof logLevelSchema>;
export type CacheConfig = z.infer<typeof cacheConfigSchema>;
export type AuthConfig = z.infer<typeof authConfigSchema>;
