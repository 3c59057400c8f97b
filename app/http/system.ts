import { stat } from "node:fs/promises";
import "./permissions.js";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Bridge } from "../lifespan.js";
import { errorMessage } from "../shared/errors.js";
import { redactUrl } from "../shared/urls.js";
import { STORAGE_FAILURES } from "./errors.js";

const healthSchema = z.object({
  status: z.enum(["ok", "standby", "starting", "degraded", "stopping", "failed"]),
  version: z.string(),
  uptime_s: z.number(),
  phase: z.string(),
  store: z.object({
    open: z.boolean(),
    /** `sqlite`, `postgres`, or `custom` (a store injected by tests). */
    backend: z.string(),
    /** The SQLite file, or the PostgreSQL server and schema (no password). */
    path: z.string(),
    /** Set while writes fail (the last commit failed); null once one succeeds again. */
    write_error: z.object({ code: z.string(), message: z.string(), since: z.string() }).nullable(),
  }),
  /** One of an active/standby pair: which it is, its fencing epoch, and who is active while it waits; null without a pair. */
  lease: z
    .object({
      role: z.enum(["active", "standby"]),
      epoch: z.number().int().nullable(),
      active_holder: z.string().nullable(),
      since: z.string(),
    })
    .nullable(),
  mqtt: z.object({ connected: z.boolean(), url: z.string(), connects: z.number(), embedded: z.boolean() }),
  devices: z.number(),
  scenario: z.string().nullable(),
  state: z.object({
    /** Live keys in the store; null when it is closed or cannot count. */
    keys: z.number().int().nullable(),
    /** The database file plus its WAL, in bytes; null without a database file (in-memory store). */
    db_size_bytes: z.number().int().nullable(),
    /** Share of single-key reads answered from the Redis cache since start; null without a cache or before its first read. */
    cache_hit_rate: z.number().min(0).max(1).nullable(),
    encrypted: z.boolean(),
    key_id: z.string().nullable(),
    last_backup: z.object({ at: z.string(), ok: z.boolean(), file: z.string().optional(), error: z.string().optional() }).nullable(),
    restored_from_backup: z
      .object({ backup: z.string(), backup_created_at: z.string(), quarantined_to: z.string(), at: z.string() })
      .nullable(),
  }),
});

const readySchema = z.object({ ready: z.boolean(), reasons: z.array(z.string()) });

/** Why the bridge is not ready; empty when it is (state restored, store open, broker connected). */
export function readiness(bridge: Bridge): string[] {
  const reasons: string[] = [];
  if (bridge.phase !== "ready") reasons.push(`bridge is ${bridge.phase}`);
  if (!bridge.isStoreOpen) reasons.push("state store is not open");
  if (!bridge.mqtt.connected) reasons.push("MQTT broker is not connected");
  const storage = storageError(bridge);
  if (storage) reasons.push(`state store cannot write (${storage.code})`);
  return reasons;
}

function storageError(bridge: Bridge): { code: string; message: string; since: string } | null {
  const failed = bridge.storageFailure;
  if (!failed) return null;
  const known = failed.failure === "other" ? null : STORAGE_FAILURES[failed.failure];
  return {
    code: known?.code ?? "storage_error",
    message: known?.message ?? "the bridge's storage refused the last write; see the log",
    since: failed.since,
  };
}

function leaseView(bridge: Bridge) {
  const lease = bridge.lease;
  if (!lease) return null;
  return { role: lease.role, epoch: lease.epoch, active_holder: lease.activeHolder, since: lease.since };
}

function lastBackup(bridge: Bridge) {
  const result = bridge.backups?.lastResult;
  if (!result) return null;
  return { at: result.at, ok: result.ok, file: result.file, error: result.error };
}

/** Bytes of `<db>` and `<db>-wal`; null when the database file does not exist. */
async function databaseSize(path: string): Promise<number | null> {
  const sizes = await Promise.all(
    [path, `${path}-wal`].map((p) =>
      stat(p).then(
        (info) => info.size,
        (err: NodeJS.ErrnoException) => {
          if (err.code === "ENOENT") return null;
          throw err;
        },
      ),
    ),
  );
  if (sizes[0] === null) return null;
  return sizes.reduce<number>((sum, size) => sum + (size ?? 0), 0);
}

async function keyCount(bridge: Bridge): Promise<number | null> {
  if (!bridge.isStoreOpen || !bridge.store.count) return null;
  return bridge.store.count();
}

function healthStatus(bridge: Bridge): z.infer<typeof healthSchema>["status"] {
  switch (bridge.phase) {
    case "ready":
      return readiness(bridge).length === 0 ? "ok" : "degraded";
    case "standby":
      return "standby";
    case "failed":
      return "failed";
    case "stopping":
    case "stopped":
      return "stopping";
    default:
      return "starting";
  }
}

export function systemRoutes(bridge: Bridge): FastifyPluginAsyncZod {
  return async (app) => {
    app.get("/health", { config: { permission: "devices:read" }, schema: { response: { 200: healthSchema } } }, async (request) => {
      const phase = bridge.phase;
      // Details that need I/O are reported as unknown (null) rather than failing the health check.
      const [keys, dbSize] = await Promise.all([
        keyCount(bridge).catch((err: unknown) => {
          request.log.warn({ err: errorMessage(err) }, "health: state count failed");
          return null;
        }),
        // Only the SQLite backend has a file; an injected store (tests) has none, whatever lies at the configured path.
        (bridge.backend.kind === "sqlite" ? databaseSize(bridge.config.paths.db) : Promise.resolve(null)).catch((err: unknown) => {
          request.log.warn({ err: errorMessage(err) }, "health: database size unavailable");
          return null;
        }),
      ]);
      return {
        status: healthStatus(bridge),
        version: bridge.version,
        uptime_s: Math.round((Date.now() - bridge.startedAt) / 1000),
        phase,
        store: {
          open: bridge.isStoreOpen,
          backend: bridge.backend.kind,
          path: bridge.backend.kind === "sqlite" ? bridge.config.system.persistence.db_path : bridge.backend.description,
          write_error: storageError(bridge),
        },
        lease: leaseView(bridge),
        mqtt: {
          connected: bridge.mqtt.connected,
          url: redactUrl(bridge.mqtt.url),
          connects: bridge.mqtt.connectCount,
          embedded: bridge.embeddedBroker !== null,
        },
        devices: bridge.devices.list().length,
        scenario: bridge.scenarios.state()?.scenario_id ?? null,
        state: {
          keys,
          db_size_bytes: dbSize,
          cache_hit_rate: bridge.metrics.cacheHitRate(),
          encrypted: bridge.codec.encrypted,
          key_id: bridge.codec.keyId,
          last_backup: lastBackup(bridge),
          restored_from_backup: bridge.restoredFromBackup,
        },
      };
    });

    app.get(
      "/health/live",
      { config: { permission: "public" }, schema: { response: { 200: z.object({ live: z.literal(true) }) } } },
      async () => ({
        live: true as const,
      }),
    );

    app.get(
      "/health/ready",
      { config: { permission: "public" }, schema: { response: { 200: readySchema, 503: readySchema } } },
      async (_request, reply) => {
        const reasons = readiness(bridge);
        return reply.status(reasons.length === 0 ? 200 : 503).send({ ready: reasons.length === 0, reasons });
      },
    );
  };
}
