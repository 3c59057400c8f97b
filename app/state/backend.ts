import type { Logger } from "pino";
import type { z } from "zod";
import type { persistenceConfigSchema } from "../config/system.js";
import { BackupManager, type BackupResult, restoreNewestBackup } from "./backups.js";
import type { ValueCodec } from "./codec.js";
import { acquireDbLock, type DbLock, type Lease } from "./lock.js";
import type { CacheEvent } from "./redis-cache.js";
import { SQLiteStateStore } from "./sqlite-store.js";
import type { CommitInfo, StateStore } from "./store.js";

export type PersistenceConfig = z.infer<typeof persistenceConfigSchema>;

export interface BackendOptions {
  persistence: PersistenceConfig;
  /** Absolute paths of the SQLite file and its backups. */
  paths: { db: string; backups: string };
  /** The PostgreSQL URL (a secret) when the backend is `postgres`. */
  databaseUrl: string | null;
  /** The Redis URL (a secret) when `persistence.cache` is configured. */
  cacheRedisUrl?: string | null;
  codec: ValueCodec;
  history: boolean;
  log: Logger;
  onCommit: (info: CommitInfo) => void;
  /** Each cached read (hit, miss, bypass) and failed Redis command, when the cache is configured. */
  onCache?: (event: CacheEvent) => void;
  onBackup: (result: BackupResult) => void;
  /** Grows with every committed change; scheduled backups skip when it has not moved. */
  changeCount: () => number;
  /** The lock was lost to another bridge while running (PostgreSQL): the bridge must stop. */
  onLockLost: (reason: string) => void;
}

/**
 * One backend: the store, the lock that keeps a second bridge off its data, and the
 * backups that the backend supports. The only place that knows which engines exist.
 */
export interface StateBackend {
  readonly kind: "sqlite" | "postgres" | "custom";
  readonly store: StateStore;
  /** For logs and /health; never carries a password. */
  readonly description: string;
  /** Scheduled and on-demand backups (SQLite files); null where the server keeps its own. */
  readonly backups: BackupManager | null;
  /** Takes the exclusive hold on the data; null when the backend needs none. */
  lock(): Promise<DbLock | null>;
  /**
   * Present instead of an exclusive hold when the bridge is one of an active/standby pair:
   * opens the lease (after the store), which is held at once or waited for.
   */
  readonly openLease?: () => Promise<Lease>;
  /** After the store found its file damaged: the newest good backup put in its place, or null. */
  restoreAfterCorruption(): Promise<{ file: string; created_at: string } | null>;
}

/**
 * The modules of the optional engines, loaded only when the configuration names them:
 * pg and ioredis (with what they pull in) would otherwise cost every SQLite bridge
 * several MB of heap. Dynamic imports of these local modules become separate chunks of
 * the bundle (esbuild `--splitting`), so nothing of them is loaded at start.
 */
export interface StateEngines {
  postgres: typeof import("./postgres-backend.js") | null;
  cache: typeof import("./redis-cache.js") | null;
}

/** For a bridge whose store comes from the caller (tests of other layers). */
export const NO_ENGINES: StateEngines = { postgres: null, cache: null };

export async function loadStateEngines(persistence: PersistenceConfig): Promise<StateEngines> {
  const [postgres, cache] = await Promise.all([
    persistence.backend === "postgres" ? import("./postgres-backend.js") : null,
    persistence.cache ? import("./redis-cache.js") : null,
  ]);
  return { postgres, cache };
}

/** `engines` from `loadStateEngines(options.persistence)`. */
export function createStateBackend(options: BackendOptions, engines: StateEngines): StateBackend {
  let backend: StateBackend;
  if (options.persistence.backend === "postgres") {
    if (!engines.postgres) throw new Error("the postgres engine was not loaded (loadStateEngines)");
    backend = engines.postgres.postgresBackend(options);
  } else {
    backend = sqliteBackend(options);
  }
  return withCache(backend, options, engines);
}

/** The backend's store behind the Redis read-through cache, when one is configured. */
function withCache(backend: StateBackend, options: BackendOptions, engines: StateEngines): StateBackend {
  const cache = options.persistence.cache;
  if (!cache) return backend;
  if (!options.cacheRedisUrl) throw new Error("the state cache needs a Redis URL");
  if (!engines.cache) throw new Error("the Redis cache was not loaded (loadStateEngines)");
  const store = new engines.cache.CachedStateStore(backend.store, {
    url: options.cacheRedisUrl,
    ttlS: cache.ttl_s,
    keyPrefix: cache.key_prefix,
    requiredAtStart: cache.required_at_start,
    lockTtlMs: cache.lock_ttl_ms,
    lockWaitMs: cache.lock_wait_ms,
    codec: options.codec,
    log: options.log.child({ module: "cache" }),
    onEvent: options.onCache,
  });
  return { ...backend, store, description: `${backend.description}, cached in Redis ${store.redis}` };
}

/** A store built by the caller (tests of other layers): no lock, no backups. */
export function customBackend(store: StateStore): StateBackend {
  return {
    kind: "custom",
    store,
    description: "custom store",
    backups: null,
    lock: async () => null,
    restoreAfterCorruption: async () => null,
  };
}

function sqliteBackend(options: BackendOptions): StateBackend {
  const { persistence, paths, log } = options;
  const store = new SQLiteStateStore({
    path: paths.db,
    synchronous: persistence.synchronous,
    busyTimeoutMs: persistence.busy_timeout_ms,
    codec: options.codec,
    history: options.history,
    log: log.child({ module: "store" }),
    onCommit: options.onCommit,
  });
  const backups = new BackupManager({
    dbPath: paths.db,
    dir: paths.backups,
    keep: persistence.backups.keep,
    intervalS: persistence.backups.interval_s,
    busyTimeoutMs: persistence.busy_timeout_ms,
    log: log.child({ module: "backups" }),
    onResult: options.onBackup,
    changeCount: options.changeCount,
  });
  return {
    kind: "sqlite",
    store,
    description: paths.db,
    backups,
    lock: () => acquireDbLock(paths.db, "wb-bridge"),
    restoreAfterCorruption: () => restoreNewestBackup({ dbPath: paths.db, dir: paths.backups, log }),
  };
}
