import type pg from "pg";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { DbLock } from "./lock.js";
import { LOCK_SPACE } from "./postgres-sql.js";
import { connectPg, describePg, type PostgresConnectionOptions } from "./postgres-store.js";
import { StoreOpenError } from "./store.js";
import { lit } from "./stored-text.js";

export interface PgLockOptions extends PostgresConnectionOptions {
  log?: Logger;
  /**
   * Called when the hold is gone for good: its connection dropped and, once the server
   * answered again, another bridge had taken it. Until then the lock retries quietly.
   */
  onLost?: (reason: string) => void;
  /** Pause between attempts to take the hold back after its connection dropped. */
  retryMs?: number;
}

/** Who holds the hold, from pg_stat_activity. */
export interface PgLockHolder {
  application: string;
  backendPid: number;
  clientAddr: string | null;
  since: string | null;
}

const HOLD_ID = (schema: string) => `${LOCK_SPACE.holder}, (hashtext(${lit(schema)}) & 2147483647)`;

/**
 * The bridge's exclusive hold on a PostgreSQL schema: a session advisory lock on its own
 * connection. The server drops it the moment that connection ends (the bridge killed,
 * its machine powered off once TCP keepalive notices), so, like the SQLite file lock, a
 * dead holder never blocks a start and two starts cannot both win.
 */
export async function acquirePgLock(options: PgLockOptions): Promise<DbLock> {
  const what = describePg(options);
  const client = await connectPg(options).catch((err: unknown) => {
    throw new StoreOpenError(`cannot connect to ${what}: ${errorMessage(err)}`, { cause: err });
  });
  const taken = await tryHold(client, options.schema).catch(async (err: unknown) => {
    await client.end().catch(() => undefined);
    throw new StoreOpenError(`cannot take the lock on ${what}: ${errorMessage(err)}`, { cause: err });
  });
  if (!taken) {
    const holder = await pgLockHolder(client, options.schema).catch(() => null);
    await client.end().catch(() => undefined);
    throw new StoreOpenError(`state database ${what} is in use by ${describeHolder(holder)}; stop it first`);
  }
  return new HeldPgLock(client, options, what);
}

/** The holder of a schema's hold, or null when nobody holds it. */
export async function pgLockHolder(client: pg.Client, schema: string): Promise<PgLockHolder | null> {
  const result = await client.query<{ application_name: string; pid: number; client_addr: string | null; backend_start: Date | null }>(
    `SELECT a.application_name, a.pid, a.client_addr::text AS client_addr, a.backend_start
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = ${LOCK_SPACE.holder} AND l.objid::bigint = (hashtext(${lit(schema)}) & 2147483647)`,
  );
  const row = result.rows[0];
  if (!row) return null;
  return {
    application: row.application_name,
    backendPid: row.pid,
    clientAddr: row.client_addr,
    since: row.backend_start?.toISOString() ?? null,
  };
}

export function describeHolder(holder: PgLockHolder | null): string {
  if (!holder) return "another bridge (it let go while this one looked)";
  const from = holder.clientAddr ? ` from ${holder.clientAddr}` : "";
  return `${holder.application || "an unnamed client"} (server backend pid ${holder.backendPid}${from})`;
}

class HeldPgLock implements DbLock {
  private released = false;
  private retrying: NodeJS.Timeout | null = null;

  constructor(
    private client: pg.Client,
    private readonly options: PgLockOptions,
    readonly path: string,
  ) {
    this.watch(client);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.retrying) clearTimeout(this.retrying);
    // Ending the session drops the advisory lock with it.
    await this.client.end().catch(() => undefined);
  }

  private watch(client: pg.Client): void {
    client.on("error", (err) => {
      if (this.released || client !== this.client) return;
      this.options.log?.warn(
        { err: errorMessage(err), lock: this.path },
        "lost the connection that holds the database lock; taking it back",
      );
      this.retake();
    });
  }

  private retake(): void {
    if (this.released) return;
    this.retrying = setTimeout(() => {
      this.retrying = null;
      void this.tryRetake();
    }, this.options.retryMs ?? 500);
  }

  private async tryRetake(): Promise<void> {
    let client: pg.Client;
    try {
      client = await connectPg(this.options);
    } catch {
      this.retake();
      return;
    }
    if (this.released) {
      await client.end().catch(() => undefined);
      return;
    }
    try {
      if (await tryHold(client, this.options.schema)) {
        this.client = client;
        this.watch(client);
        this.options.log?.info({ lock: this.path }, "database lock taken back");
        return;
      }
      const holder = await pgLockHolder(client, this.options.schema).catch(() => null);
      await client.end().catch(() => undefined);
      this.released = true;
      this.options.onLost?.(`the lock on ${this.path} was taken by ${describeHolder(holder)} while its connection was down`);
    } catch {
      await client.end().catch(() => undefined);
      this.retake();
    }
  }
}

async function tryHold(client: pg.Client, schema: string): Promise<boolean> {
  const result = await client.query<{ taken: boolean }>(`SELECT pg_try_advisory_lock(${HOLD_ID(schema)}) AS taken`);
  return result.rows[0]?.taken === true;
}
