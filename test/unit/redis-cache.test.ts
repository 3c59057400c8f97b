import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JsonObject } from "../../app/shared/json.js";
import { MemoryStateStore } from "../../app/state/memory-store.js";
import { PostgresStateStore } from "../../app/state/postgres-store.js";
import { CachedStateStore, type CacheEvent, type RedisCacheOptions } from "../../app/state/redis-cache.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import type { ExternalChange, StateStore, StoredEntry } from "../../app/state/store.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";
import { dropPrefix, requireRedis, TEST_REDIS_URL, testRedis, uniquePrefix } from "../helpers/redis.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";
import { describeStoreContract } from "./store-contract.js";

const ready = await requireRedis();
const silent = pino({ level: "silent" });

function cached(inner: StateStore, prefix: string, options: Partial<RedisCacheOptions> = {}): CachedStateStore {
  return new CachedStateStore(inner, { url: TEST_REDIS_URL, ttlS: 300, keyPrefix: prefix, log: silent, ...options });
}

if (ready) {
  describeStoreContract("memory + Redis cache", (_dir, now) => {
    const prefix = uniquePrefix("contract");
    const inner = new MemoryStateStore(now);
    const make = () => cached(inner, prefix, { now });
    return { store: make(), reopen: make, cleanup: () => dropPrefix(prefix) };
  });
  describeStoreContract("sqlite + Redis cache", (dir, now) => {
    const prefix = uniquePrefix("contract");
    const path = join(dir, "state.db");
    const make = () => cached(new SQLiteStateStore({ path, now }), prefix, { now });
    return { store: make(), reopen: make, cleanup: () => dropPrefix(prefix) };
  });
} else {
  it.skip("StateStore contract with the Redis cache (Redis not reachable, see the printed reason)", () => undefined);
}

interface Gate {
  /** Resolves once the paused read has its value from the store. */
  reached: Promise<void>;
  release(): void;
}

/** A memory store whose next getEntry can be held after it has read its value (the "read old from DB" step). */
class PausableStore extends MemoryStateStore {
  private gate: { reached: () => void; released: Promise<void> } | null = null;

  pauseNextRead(): Gate {
    let reached!: () => void;
    let release!: () => void;
    const reachedP = new Promise<void>((resolve) => {
      reached = resolve;
    });
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.gate = { reached, released };
    return { reached: reachedP, release };
  }

  override async getEntry(key: string): Promise<StoredEntry | null> {
    const entry = await super.getEntry(key);
    const gate = this.gate;
    if (gate) {
      this.gate = null;
      gate.reached();
      await gate.released;
    }
    return entry;
  }
}

describe.runIf(ready)("CachedStateStore (real Redis)", () => {
  let prefix: string;
  const open: StateStore[] = [];
  const proxies: TcpProxy[] = [];

  /** A cached store that records its cache events, initialized and closed after the test. */
  async function start(
    inner: StateStore,
    options: Partial<RedisCacheOptions> = {},
  ): Promise<{ store: CachedStateStore; events: CacheEvent[] }> {
    const events: CacheEvent[] = [];
    const store = cached(inner, prefix, { onEvent: (e) => events.push(e), ...options });
    await store.initialize();
    open.push(store);
    return { store, events };
  }

  async function rawValue(key: string): Promise<string | null> {
    const client = testRedis();
    try {
      await client.connect();
      return await client.get(`${prefix}val:${key}`);
    } finally {
      client.disconnect();
    }
  }

  beforeEach(() => {
    prefix = uniquePrefix("cache");
  });

  afterEach(async () => {
    for (const s of open.splice(0)) await s.close();
    for (const p of proxies.splice(0)) await p.close();
    await dropPrefix(prefix);
  });

  it("serves a repeated read from Redis, and a write on one instance is read on another at once", async () => {
    const inner = new MemoryStateStore();
    const a = await start(inner);
    const b = await start(inner);
    expect(a.store.cacheState).toBe("up");
    await a.store.set("device:tv", { power: false });
    expect(await b.store.get("device:tv")).toEqual({ power: false });
    expect(await b.store.get("device:tv")).toEqual({ power: false });
    expect(b.events).toEqual(["miss", "hit"]);

    await a.store.set("device:tv", { power: true });
    expect(await b.store.get("device:tv")).toEqual({ power: true });
    await a.store.write([
      { key: "device:tv", value: null },
      { key: "device:amp", value: { volume: 3 } },
    ]);
    expect(await b.store.get("device:tv")).toBeNull();
    expect(await b.store.getEntry("device:amp")).toMatchObject({ value: { volume: 3 } });
    // A missing key is cached too, and invalidated like any other.
    expect(await b.store.get("device:tv")).toBeNull();
    await a.store.set("device:tv", { power: false });
    expect(await b.store.get("device:tv")).toEqual({ power: false });
    expect(b.events).toEqual(["miss", "hit", "miss", "miss", "miss", "hit", "miss"]);
  });

  it("never caches a value read before a write that was acknowledged while the read was in flight", async () => {
    const inner = new PausableStore();
    const a = await start(inner);
    const b = await start(inner);
    await a.store.set("device:tv", { v: 1 });
    const gate = inner.pauseNextRead();
    // b misses, reads v1 from the store, and is held before it can cache it.
    const reading = b.store.get("device:tv");
    await gate.reached;
    await a.store.set("device:tv", { v: 2 });
    gate.release();
    // The read began before the write resolved: the older value is a fair answer to it...
    expect(await reading).toEqual({ v: 1 });
    // ...but it was not cached (its generation had moved), so no later read on any instance sees it.
    expect(await rawValue("device:tv")).toBeNull();
    expect(await b.store.get("device:tv")).toEqual({ v: 2 });
    expect(await a.store.get("device:tv")).toEqual({ v: 2 });
    expect(await b.store.get("device:tv")).toEqual({ v: 2 });
    expect(b.events).toEqual(["miss", "miss", "hit"]);
  });

  it("under concurrent writes and reads on two instances, no read returns a value older than one acknowledged before it began", async () => {
    const inner = new MemoryStateStore();
    const a = await start(inner);
    const b = await start(inner);
    const keys = ["k:0", "k:1", "k:2"];
    const acked = new Map(keys.map((k) => [k, 0]));
    const violations: string[] = [];
    let written = 0;
    // Each worker mixes writes and reads, so reads interleave with other workers' writes and follow its own.
    const worker = async (store: CachedStateStore, offset: number) => {
      for (let i = 0; i < 240; i++) {
        const key = keys[(i * 7 + offset) % keys.length] as string;
        if (i % 3 === offset % 3) {
          const n = ++written;
          await store.set(key, { n });
          // Writes to one key from two workers may resolve out of order: only the largest acknowledged counts.
          acked.set(key, Math.max(acked.get(key) ?? 0, n));
        } else {
          const floor = acked.get(key) ?? 0;
          const value = await store.get(key);
          const n = typeof value?.n === "number" ? value.n : 0;
          if (n < floor) violations.push(`${key}: read ${n} after ${floor} was acknowledged`);
        }
      }
    };
    await Promise.all([worker(a.store, 0), worker(b.store, 1), worker(a.store, 2), worker(b.store, 4)]);
    expect(violations).toEqual([]);
    // The cache was used, not bypassed.
    expect(b.events.filter((e) => e === "hit").length).toBeGreaterThan(0);
    expect([...a.events, ...b.events].filter((e) => e === "bypass" || e === "error")).toEqual([]);
  });

  it("disowns what was cached before it opened: a change made to the data while no bridge ran is seen", async () => {
    const inner = new MemoryStateStore();
    const first = await start(inner);
    await first.store.set("device:tv", { v: 1 });
    expect(await first.store.get("device:tv")).toEqual({ v: 1 });
    expect(await first.store.get("device:tv")).toEqual({ v: 1 });
    expect(first.events).toEqual(["miss", "hit"]);
    await first.store.close();
    // The CLI (or a bridge that died between its commit and its invalidation) changed it behind the cache.
    await inner.initialize();
    await inner.set("device:tv", { v: 2 });
    expect(await rawValue("device:tv")).not.toBeNull();
    const next = await start(inner);
    expect(await next.store.get("device:tv")).toEqual({ v: 2 });
    expect(next.events).toEqual(["miss"]);
  });

  it("hides a cached entry once its expiry has passed, on the store's clock", async () => {
    let t = Date.parse("2024-05-01T10:00:00.000Z");
    const now = () => t;
    const { store, events } = await start(new MemoryStateStore(now), { now });
    await store.write([{ key: "ttl:k", value: { a: 1 }, expiresAt: t + 1000 }]);
    expect(await store.get("ttl:k")).toEqual({ a: 1 });
    expect(await store.get("ttl:k")).toEqual({ a: 1 });
    t += 1000;
    expect(await store.get("ttl:k")).toBeNull();
    expect(events).toEqual(["miss", "hit", "hit"]);
  });

  it("keeps working from the store while Redis is cut, and serves nothing stale once it is back", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    proxies.push(proxy);
    const inner = new MemoryStateStore();
    const url = `redis://127.0.0.1:${proxy.port}`;
    const a = await start(inner, { url, reconnectMaxMs: 100 });
    // b reaches Redis directly: another bridge that never lost it.
    const b = await start(inner);
    await a.store.set("device:tv", { v: 1 });
    expect(await a.store.get("device:tv")).toEqual({ v: 1 });
    expect(await b.store.get("device:tv")).toEqual({ v: 1 });
    expect(await a.store.get("device:tv")).toEqual({ v: 1 });
    expect(a.events).toEqual(["miss", "hit"]);
    const cachedBefore = await rawValue("device:tv");
    expect(cachedBefore).not.toBeNull();

    proxy.cut();
    await a.store.whenState("down");
    await a.store.set("device:tv", { v: 2 });
    await a.store.set("device:amp", { v: 1 });
    expect(await a.store.get("device:tv")).toEqual({ v: 2 });
    expect(await a.store.getEntry("device:amp")).toMatchObject({ value: { v: 1 } });
    // a's invalidation could not be made: v1 is still in Redis under the old epoch...
    expect(await rawValue("device:tv")).toBe(cachedBefore);
    // ...and b, which reaches Redis, serves it until a is back: the caveat the README names.
    expect(await b.store.get("device:tv")).toEqual({ v: 1 });

    proxy.restore();
    await a.store.whenState("up");
    // a bumped the epoch before using the cache again: nothing cached before counts any more, on any instance.
    expect(await a.store.get("device:tv")).toEqual({ v: 2 });
    expect(await b.store.get("device:tv")).toEqual({ v: 2 });
    expect(await a.store.get("device:tv")).toEqual({ v: 2 });
    // Invalidations tried while the connection was going count as errors; reads were never failed.
    expect(a.events.slice(2).filter((e) => e !== "error")).toEqual(["bypass", "bypass", "miss", "hit"]);
  });

  it("starts with Redis unreachable, runs on the store, and takes the cache up when Redis answers", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    proxies.push(proxy);
    proxy.cut();
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
    const url = `redis://:CACHE-SECRET@127.0.0.1:${proxy.port}`;
    const { store, events } = await start(new MemoryStateStore(), { url, reconnectMaxMs: 100, log });
    expect(store.cacheState).toBe("down");
    await store.set("device:tv", { v: 1 });
    expect(await store.get("device:tv")).toEqual({ v: 1 });
    expect(events).toEqual(["bypass"]);

    proxy.restore();
    await store.whenState("up");
    expect(await store.get("device:tv")).toEqual({ v: 1 });
    expect(await store.get("device:tv")).toEqual({ v: 1 });
    expect(events).toEqual(["bypass", "miss", "hit"]);
    const messages = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(messages).toEqual([
      "Redis state cache not reachable at start; running without it until it answers",
      "Redis state cache connected",
    ]);
    expect(lines.join("\n")).not.toContain("CACHE-SECRET");
    expect(lines.join("\n")).toContain(`redis://:***@127.0.0.1:${proxy.port}`);
  });

  it("logs losing Redis and getting it back once each, not per command", async () => {
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    proxies.push(proxy);
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
    const { store } = await start(new MemoryStateStore(), { url: `redis://127.0.0.1:${proxy.port}`, reconnectMaxMs: 100, log });
    proxy.cut();
    await store.whenState("down");
    for (let i = 0; i < 20; i++) {
      await store.set(`device:d${i}`, { i });
      expect(await store.get(`device:d${i}`)).toEqual({ i });
    }
    proxy.restore();
    await store.whenState("up");
    const messages = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(messages).toEqual(["Redis state cache connected", "Redis state cache lost; reading from the store", "Redis state cache back"]);
  });
});

const withPostgres = ready && (await requirePostgres());

if (withPostgres) {
  describeStoreContract("postgres + Redis cache", (_dir, now) => {
    const prefix = uniquePrefix("contract");
    const schema = uniqueSchema("cachecontract");
    const make = () => cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema, now }), prefix, { now });
    return {
      store: make(),
      reopen: make,
      cleanup: async () => {
        await dropSchema(schema);
        await dropPrefix(prefix);
      },
    };
  });
}

describe.runIf(withPostgres)("CachedStateStore over PostgreSQL", () => {
  it("invalidates on another process's committed change before telling its own watchers", async () => {
    const schema = uniqueSchema("cache");
    const prefix = uniquePrefix("pgwatch");
    const other = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    const events: CacheEvent[] = [];
    const store = cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema }), prefix, { onEvent: (e) => events.push(e) });
    await other.initialize();
    await store.initialize();
    try {
      let waiting: ((value: JsonObject | null) => void) | null = null;
      const told: ExternalChange[] = [];
      store.watch?.((change) => {
        told.push(change);
        // A watcher reads the key back, as the state layer does: it must get the new value.
        void store.get(change.key).then((value) => waiting?.(value));
      });
      const nextChange = () =>
        new Promise<JsonObject | null>((resolve) => {
          waiting = resolve;
        });
      await (store.inner as PostgresStateStore).whenListening();
      let change = nextChange();
      await other.set("device:tv", { v: 1 });
      expect(await change).toEqual({ v: 1 });
      expect(await store.get("device:tv")).toEqual({ v: 1 });
      change = nextChange();
      // `other` has no cache: only the change notification can tell this one.
      await other.set("device:tv", { v: 2 });
      expect(await change).toEqual({ v: 2 });
      expect(await store.get("device:tv")).toEqual({ v: 2 });
      expect(events).toEqual(["miss", "hit", "miss", "hit"]);
      expect(told.map((c) => c.key)).toEqual(["device:tv", "device:tv"]);
    } finally {
      await store.close();
      await other.close();
      await dropSchema(schema);
      await dropPrefix(prefix);
    }
  });

  it("locks a key in Redis across processes; a holder paused past the lock's time has its write refused by its fencing token", async () => {
    const schema = uniqueSchema("cachelock");
    const prefix = uniquePrefix("pglock");
    const a = cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema }), prefix, { lockTtlMs: 300, lockWaitMs: 5000 });
    const b = cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema }), prefix, { lockTtlMs: 300, lockWaitMs: 5000 });
    await a.initialize();
    await b.initialize();
    const redis = testRedis();
    await redis.connect();
    try {
      const lockA = await a.lockKey!("note:shared");
      expect(lockA.fenceToken).toBeTypeOf("number");
      // The lock is Redis's, not PostgreSQL's.
      expect(await redis.exists(`${prefix}lock:note:shared`)).toBe(1);
      // a "pauses": b waits until a's lock runs out, then holds it with a newer token.
      const lockB = await b.lockKey!("note:shared");
      expect(lockB.fenceToken!).toBeGreaterThan(lockA.fenceToken!);
      await b.write([{ key: "note:shared", value: { by: "b" }, fenceToken: lockB.fenceToken }]);
      await lockB.release();
      expect(await redis.exists(`${prefix}lock:note:shared`)).toBe(0);
      // a wakes up and writes under the lock it lost: refused, b's value stays.
      await expect(a.write([{ key: "note:shared", value: { by: "a" }, fenceToken: lockA.fenceToken }])).rejects.toMatchObject({
        failure: "stale_lock",
      });
      // Its late release does not free a lock someone else holds now.
      const lockC = await b.lockKey!("note:shared");
      await lockA.release();
      expect(await redis.exists(`${prefix}lock:note:shared`)).toBe(1);
      await lockC.release();
      expect(await a.get("note:shared")).toEqual({ by: "b" });
      expect(await b.get("note:shared")).toEqual({ by: "b" });
    } finally {
      redis.disconnect();
      await a.close();
      await b.close();
      await dropSchema(schema);
      await dropPrefix(prefix);
    }
  });

  it("a lock held longer than the wait refuses the change with 503 lock_timeout; Redis cut: locks fall back to PostgreSQL's", async () => {
    const schema = uniqueSchema("cachelock");
    const prefix = uniquePrefix("pglock");
    const proxy = await TcpProxy.start("127.0.0.1", Number(new URL(TEST_REDIS_URL).port || 6379));
    const url = `redis://127.0.0.1:${proxy.port}`;
    const a = cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema }), prefix, { url, lockTtlMs: 10_000, lockWaitMs: 200 });
    const b = cached(new PostgresStateStore({ url: TEST_POSTGRES_URL, schema }), prefix, { url, lockTtlMs: 10_000, lockWaitMs: 200 });
    await a.initialize();
    await b.initialize();
    try {
      const held = await a.lockKey!("note:busy");
      await expect(b.lockKey!("note:busy")).rejects.toMatchObject({ statusCode: 503, code: "lock_timeout" });
      await held.release();

      proxy.cut();
      await Promise.all([a.whenState("down"), b.whenState("down")]);
      const fallback = await a.lockKey!("note:busy");
      expect(fallback.fenceToken).toBeUndefined();
      // PostgreSQL's lock excludes the other process just the same.
      const order: string[] = [];
      const bTakes = b.lockKey!("note:busy").then((lock) => {
        order.push("b locked");
        return lock;
      });
      await a.set("note:busy", { n: 1 });
      order.push("a wrote");
      await fallback.release();
      await (await bTakes).release();
      expect(order).toEqual(["a wrote", "b locked"]);
    } finally {
      proxy.restore();
      await a.close();
      await b.close();
      await proxy.close();
      await dropSchema(schema);
      await dropPrefix(prefix);
    }
  });
});
