/**
 * PostgreSQL backend figures beside a same-run baseline: committed writes through
 * PostgresStateStore (group commit, history row in the same transaction) against one
 * autocommitted upsert per round trip with plain `pg`, one writer and 32 concurrent ones.
 * Then reads: store.get straight from PostgreSQL against the same get through the Redis
 * read-through cache, warm (every key cached), 1 reader and 32.
 * Last, durable actions through the whole bridge (its bundle in its own process, the
 * embedded broker, closed-loop MQTT clients) with its state on PostgreSQL, 1 client and 64.
 * Run: npm run bench:postgres (needs the server of TEST_POSTGRES_URL; the cached rows
 * also TEST_REDIS_URL's, and are left out with the reason printed when it does not answer).
 */
import { performance } from "node:perf_hooks";
import pg from "pg";
import { createLogger } from "../../app/observability/logger.js";
import { PostgresStateStore } from "../../app/state/postgres-store.js";
import { CachedStateStore, type CacheEvent } from "../../app/state/redis-cache.js";
import { StateService } from "../../app/state/service.js";
import { dropSchema, postgresUnavailable, TEST_POSTGRES_URL, uniqueSchema, withClient } from "../helpers/postgres.js";
import { dropPrefix, redisUnavailable, TEST_REDIS_URL, uniquePrefix } from "../helpers/redis.js";
import { benchActionsOnPostgres } from "./postgres-actions.js";
import { fmt, summarize } from "./stats.js";

const OPS = Number(process.env.BENCH_PG_OPS ?? 3000);
const CONCURRENCY = 32;

async function timed(
  count: number,
  concurrency: number,
  op: (i: number) => Promise<void>,
): Promise<{ perSecond: number; p50: number; p99: number }> {
  const samples: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < count; i = next++) {
        const t0 = performance.now();
        await op(i);
        samples.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const s = summarize(samples);
  return { perSecond: count / seconds, p50: s.p50, p99: s.p99 };
}

function line(name: string, r: { perSecond: number; p50: number; p99: number }): void {
  console.log(`${name.padEnd(46)} ${fmt(r.perSecond, 0).padStart(8)} /s   p50 ${fmt(r.p50, 3)} ms   p99 ${fmt(r.p99, 3)} ms`);
}

async function main(): Promise<void> {
  const reason = await postgresUnavailable();
  if (reason) throw new Error(reason);
  const schema = uniqueSchema("bench");
  const store = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
  await store.initialize();
  const pool = new pg.Pool({ connectionString: TEST_POSTGRES_URL, max: CONCURRENCY });
  try {
    await withClient(TEST_POSTGRES_URL, (c) => c.query(`CREATE TABLE ${schema}.baseline (key TEXT PRIMARY KEY, value TEXT NOT NULL)`));
    const value = JSON.stringify({ driver: "simulated", version: 1, state: { power: true, volume: 42, input: "hdmi1" } });
    const upsert = (i: number) =>
      pool
        .query(`INSERT INTO ${schema}.baseline (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, [
          `device:d${i % 100}`,
          value,
        ])
        .then(() => undefined);
    const write = (i: number) =>
      store.set(`device:d${i % 100}`, { driver: "simulated", version: 1, state: { power: true, volume: i % 100, input: "hdmi1" } });
    console.log(`PostgreSQL ${new URL(TEST_POSTGRES_URL).host}, ${OPS} committed writes per row, 100 keys`);
    line("baseline: pg upsert, 1 client", await timed(OPS, 1, upsert));
    line("store: PostgresStateStore.set, 1 writer", await timed(OPS, 1, write));
    line(`baseline: pg upsert, ${CONCURRENCY} connections`, await timed(OPS, CONCURRENCY, upsert));
    line(`store: PostgresStateStore.set, ${CONCURRENCY} writers`, await timed(OPS, CONCURRENCY, write));
    const read = (i: number) => store.get(`device:d${i % 100}`).then(() => undefined);
    line("store: get (direct, no cache), 1 reader", await timed(OPS, 1, read));
    line(`store: get (direct, no cache), ${CONCURRENCY} readers`, await timed(OPS, CONCURRENCY, read));
    await notificationLatency(schema);
    await cachedReads(store);
  } finally {
    await pool.end();
    await store.close();
    await dropSchema(schema);
  }
  const actions = await benchActionsOnPostgres([1, 64], Number(process.env.BENCH_SECONDS ?? 5));
  for (const [clients, r] of actions) {
    line(`bridge: durable MQTT actions, ${clients} client(s)`, { perSecond: r.perSecond, p50: r.latency.p50, p99: r.latency.p99 });
  }
}

/**
 * From the start of a write on one bridge to a listener of another bridge's StateService
 * hearing of it (commit, NOTIFY, the read-back of the value): what the standby of a pair
 * and its SSE clients wait for. One write at a time, so each sample is one change.
 */
async function notificationLatency(schema: string): Promise<void> {
  const writer = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
  const follower = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
  await Promise.all([writer.initialize(), follower.initialize()]);
  const service = new StateService(follower, createLogger("silent"));
  service.watchOthers();
  await follower.whenListening();
  const samples: number[] = [];
  try {
    let heard: (() => void) | null = null;
    service.subscribe("device:", () => heard?.());
    for (let i = 0; i < Math.min(OPS, 1000); i++) {
      const t0 = performance.now();
      const arrived = new Promise<void>((resolve) => {
        heard = resolve;
      });
      await writer.set(`device:n${i % 10}`, { driver: "simulated", version: 1, state: { volume: i % 100 } });
      await arrived;
      samples.push(performance.now() - t0);
    }
  } finally {
    service.stop();
    await Promise.all([writer.close(), follower.close()]);
  }
  const s = summarize(samples);
  console.log(
    `${"change seen by another bridge's listener".padEnd(46)} ${String(samples.length).padStart(8)} changes  p50 ${fmt(s.p50, 3)} ms   p99 ${fmt(s.p99, 3)} ms`,
  );
}

/** The same reads through the Redis cache, every key cached beforehand (warm). */
async function cachedReads(inner: PostgresStateStore): Promise<void> {
  const reason = await redisUnavailable();
  if (reason) {
    console.log(`cached reads left out: ${reason}`);
    return;
  }
  const prefix = uniquePrefix("bench");
  const counts = new Map<CacheEvent, number>();
  const cached = new CachedStateStore(inner, {
    url: TEST_REDIS_URL,
    ttlS: 300,
    keyPrefix: prefix,
    log: createLogger("silent"),
    onEvent: (e) => counts.set(e, (counts.get(e) ?? 0) + 1),
  });
  // The inner store is already open; initialize() only connects the cache.
  await cached.initialize();
  try {
    if (cached.cacheState !== "up") throw new Error("the Redis cache did not come up");
    for (let k = 0; k < 100; k++) await cached.get(`device:d${k}`);
    counts.clear();
    const read = (i: number) => cached.get(`device:d${i % 100}`).then(() => undefined);
    line("cached: get (Redis, warm), 1 reader", await timed(OPS, 1, read));
    line(`cached: get (Redis, warm), ${CONCURRENCY} readers`, await timed(OPS, CONCURRENCY, read));
    console.log(`cached reads: ${counts.get("hit") ?? 0} hits, ${counts.get("miss") ?? 0} misses, ${counts.get("error") ?? 0} errors`);
  } finally {
    // Closes the inner store too; main's close after it is a no-op.
    await cached.close();
    await dropPrefix(prefix);
  }
}

await main();
