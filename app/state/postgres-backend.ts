import type { BackendOptions, StateBackend } from "./backend.js";
import { acquirePgLock, openPgLease } from "./postgres-lock.js";
import { describePg, type PostgresConnectionOptions, PostgresStateStore } from "./postgres-store.js";

/** The PostgreSQL backend; its own module so that pg is loaded only when configured (see `loadStateEngines`). */
export function postgresBackend(options: BackendOptions): StateBackend {
  const { persistence, log } = options;
  if (options.databaseUrl === null) throw new Error("the postgres backend needs a database URL");
  const connection: PostgresConnectionOptions = {
    url: options.databaseUrl,
    schema: persistence.postgres.schema,
    connectTimeoutMs: persistence.postgres.connect_timeout_ms,
  };
  const store = new PostgresStateStore({
    ...connection,
    readPoolSize: persistence.postgres.read_pool_size,
    codec: options.codec,
    history: options.history,
    log: log.child({ module: "store" }),
    onCommit: options.onCommit,
    onFenced: options.onLockLost,
  });
  const lockOptions = { ...connection, log: log.child({ module: "lock" }), onLost: options.onLockLost };
  return {
    kind: "postgres",
    store,
    description: describePg(connection),
    // The server's own backups (pg_dump, base backups, replicas) cover it.
    backups: null,
    lock: () => acquirePgLock(lockOptions),
    ...(persistence.postgres.pair ? { openLease: () => openPgLease({ ...lockOptions, onActive: (epoch) => store.setFence(epoch) }) } : {}),
    restoreAfterCorruption: async () => null,
  };
}
