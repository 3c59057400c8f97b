import pg from "pg";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { DbLock, Lease, LeaseStatus } from "./lock.js";
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
  const { client, taken } = await connectAndTry(options, what);
  if (!taken) {
    const holder = await pgLockHolder(client, options.schema).catch(() => null);
    await client.end().catch(() => undefined);
    throw new StoreOpenError(`state database ${what} is in use by ${describeHolder(holder)}; stop it first`);
  }
  return new HeldPgLock(client, options, what);
}

export interface PgLeaseOptions extends PgLockOptions {
  /**
   * Called with the new epoch the moment this bridge holds the lease, before anything
   * else hears of it: the store must carry it on every commit from then on.
   */
  onActive: (epoch: number) => void;
}

/**
 * The lease of an active/standby pair: the same session advisory lock, taken at once when
 * free, else waited for on a connection of its own (the server grants it the moment the
 * active bridge's connection ends). Each taker bumps `state_lease.epoch`, the fencing token
 * its commits carry, so a bridge that lost the lease cannot commit over a newer value.
 * The lease's table must exist: the store is initialized first.
 */
export async function openPgLease(options: PgLeaseOptions): Promise<Lease> {
  const what = describePg(options);
  const { client, taken } = await connectAndTry({ ...options, queryTimeoutMs: 0 }, what);
  const lease = new PgLease(options, what);
  if (taken) {
    await lease.activate(client).catch(async (err: unknown) => {
      await client.end().catch(() => undefined);
      throw new StoreOpenError(`cannot take the lease on ${what}: ${errorMessage(err)}`, { cause: err });
    });
  } else {
    await lease.standBy(client);
  }
  return lease;
}

async function connectAndTry(options: PgLockOptions, what: string): Promise<{ client: pg.Client; taken: boolean }> {
  const client = await connectPg(options).catch((err: unknown) => {
    throw new StoreOpenError(`cannot connect to ${what}: ${errorMessage(err)}`, { cause: err });
  });
  const taken = await tryHold(client, options.schema).catch(async (err: unknown) => {
    await client.end().catch(() => undefined);
    throw new StoreOpenError(`cannot take the lock on ${what}: ${errorMessage(err)}`, { cause: err });
  });
  return { client, taken };
}

class PgLease implements Lease {
  private held: HeldPgLock | null = null;
  private waiter: pg.Client | null = null;
  private retrying: NodeJS.Timeout | null = null;
  private released = false;
  private current: LeaseStatus = { role: "standby", epoch: null, activeHolder: null, since: new Date().toISOString() };
  private readonly active: Promise<number>;
  private resolveActive: (epoch: number) => void = () => undefined;

  constructor(
    private readonly options: PgLeaseOptions,
    readonly path: string,
  ) {
    this.active = new Promise((resolve) => {
      this.resolveActive = resolve;
    });
  }

  get status(): LeaseStatus {
    return this.current;
  }

  whenActive(): Promise<number> {
    return this.active;
  }

  /** `client` holds the advisory lock: bump the epoch, then watch the hold like any lock. */
  async activate(client: pg.Client): Promise<void> {
    const epoch = await bumpEpoch(client, this.options.schema);
    this.held = new HeldPgLock(client, { ...this.options, epoch }, this.path);
    this.current = { role: "active", epoch, activeHolder: null, since: new Date().toISOString() };
    this.options.onActive(epoch);
    this.resolveActive(epoch);
  }

  /** Waits on `client` (which tried and was refused) until the server grants the lock. */
  async standBy(client: pg.Client): Promise<void> {
    const holder = await pgLockHolder(client, this.options.schema).catch(() => null);
    this.current = { ...this.current, activeHolder: describeHolder(holder) };
    this.options.log?.info({ lock: this.path, active: this.current.activeHolder }, "standing by: another bridge is active");
    this.waiter = client;
    client.on("error", () => undefined);
    void this.wait(client);
  }

  private async wait(client: pg.Client): Promise<void> {
    try {
      await client.query(`SELECT pg_advisory_lock(${HOLD_ID(this.options.schema)})`);
      if (this.released) throw new Error("released");
      this.waiter = null;
      await this.activate(client);
      this.options.log?.info({ lock: this.path, epoch: this.current.epoch }, "lease taken: this bridge is now active");
    } catch (err) {
      if (this.waiter === client) this.waiter = null;
      await client.end().catch(() => undefined);
      if (this.released) return;
      this.options.log?.warn({ err: errorMessage(err), lock: this.path }, "lost the connection that waits for the lease; waiting again");
      this.retrying = setTimeout(() => void this.again(), this.options.retryMs ?? 500);
    }
  }

  private async again(): Promise<void> {
    this.retrying = null;
    if (this.released) return;
    try {
      const { client, taken } = await connectAndTry({ ...this.options, queryTimeoutMs: 0 }, this.path);
      if (this.released) {
        await client.end().catch(() => undefined);
        return;
      }
      if (taken) {
        await this.activate(client).catch(async (err: unknown) => {
          await client.end().catch(() => undefined);
          throw err;
        });
      } else {
        await this.standBy(client);
      }
    } catch {
      this.retrying = setTimeout(() => void this.again(), this.options.retryMs ?? 500);
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.retrying) clearTimeout(this.retrying);
    // Ending the waiting session cancels its wait; ending the holding one hands the lease on.
    await this.waiter?.end().catch(() => undefined);
    await this.held?.release();
  }
}

/** The next epoch, recorded with who took it; the lock is held, so no two takers race. */
async function bumpEpoch(client: pg.Client, schema: string): Promise<number> {
  const table = `${pg.escapeIdentifier(schema)}.state_lease`;
  const result = await client.query<{ epoch: string | number }>(
    `INSERT INTO ${table} (id, epoch, holder, since) VALUES (1, 1, current_setting('application_name'), $1)
     ON CONFLICT (id) DO UPDATE SET epoch = ${table}.epoch + 1, holder = EXCLUDED.holder, since = EXCLUDED.since
     RETURNING epoch`,
    [Date.now()],
  );
  return Number(result.rows[0]?.epoch);
}

async function leaseEpoch(client: pg.Client, schema: string): Promise<number | null> {
  const result = await client.query<{ epoch: string | number }>(
    `SELECT epoch FROM ${pg.escapeIdentifier(schema)}.state_lease WHERE id = 1`,
  );
  const epoch = result.rows[0]?.epoch;
  return epoch === undefined ? null : Number(epoch);
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
    /** `epoch`: the lease epoch this hold took (a pair's); a retaken hold must find it unchanged. */
    private readonly options: PgLockOptions & { epoch?: number },
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
        // A pair's standby may have held the lease meanwhile, and let it go again.
        const epoch = this.options.epoch === undefined ? undefined : await leaseEpoch(client, this.options.schema);
        if (epoch !== undefined && epoch !== this.options.epoch) {
          await client.end().catch(() => undefined);
          this.released = true;
          this.options.onLost?.(`the lease on ${this.path} moved to epoch ${epoch} while its connection was down`);
          return;
        }
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

/**
 * The server drops the hold when this session ends; a holder whose machine lost power
 * sends no FIN, so the server must probe: idle 5 s, then 3 probes 2 s apart (the OS
 * default would wait two hours before a standby could take over).
 */
const HOLDER_KEEPALIVE = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3;";

async function tryHold(client: pg.Client, schema: string): Promise<boolean> {
  await client.query(HOLDER_KEEPALIVE);
  const result = await client.query<{ taken: boolean }>(`SELECT pg_try_advisory_lock(${HOLD_ID(schema)}) AS taken`);
  return result.rows[0]?.taken === true;
}
