import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import { isJsonObject, type JsonObject } from "../shared/json.js";
import { redactUrl } from "../shared/urls.js";
import { plainCodec, type ValueCodec } from "./codec.js";
import { ACQUIRE_LUA, RELEASE_LUA, RedisKeyLocks, RedisLockUnreachable } from "./redis-lock.js";
import type {
  ExternalChange,
  HistoryEntry,
  HistoryQuery,
  HistoryRetention,
  ListedEntry,
  ListOptions,
  StateStore,
  StoredEntry,
  WriteOp,
} from "./store.js";
import { type KeyLock, StoreOpenError } from "./store.js";

/** What one cached read or Redis command came to (metrics). `bypass`: the cache was off, the inner store answered. */
export type CacheEvent = "hit" | "miss" | "bypass" | "error";
export type CacheState = "up" | "down";

export interface RedisCacheOptions {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://`; a secret, logged only through redactUrl. */
  url: string;
  /** How long a cached value lives in Redis at most. */
  ttlS: number;
  /** Put before every key; bridges on one data set share it, bridges on different data must not. */
  keyPrefix: string;
  log: Logger;
  /** The inner store's clock: a cached entry is hidden once its expiresAt has passed, as the store hides it. */
  now?: () => number;
  /** Cached text is encoded like stored text, so values encrypted at rest are encrypted in Redis too. */
  codec?: ValueCodec;
  onEvent?: (event: CacheEvent) => void;
  onStateChange?: (state: CacheState) => void;
  connectTimeoutMs?: number;
  commandTimeoutMs?: number;
  /** Longest wait between reconnect attempts. */
  reconnectMaxMs?: number;
  /** A key lock's time to live in Redis (a holder paused longer loses it); default 10 s. */
  lockTtlMs?: number;
  /** How long a taker waits for a held key lock; default 5 s. */
  lockWaitMs?: number;
  /** initialize() fails when Redis does not answer (the default runs on the store alone until it does). */
  requiredAtStart?: boolean;
}

interface LuaScript {
  lua: string;
  sha: string;
}

function script(lua: string): LuaScript {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

const ACQUIRE = script(ACQUIRE_LUA);
const RELEASE = script(RELEASE_LUA);

/**
 * KEYS[1] = the sequence, then a gen/val pair per key; ARGV[1] = the generation's TTL (ms).
 * The new generation comes from one counter for the whole prefix rather than from INCR on
 * the key's own counter: a per-key counter that expires starts again at 1 and could meet a
 * reader still holding an old 1, while a sequence value is never handed out twice, so
 * generation keys may expire and memory stays bounded.
 */
const INVALIDATE = script(`
local g = redis.call('INCR', KEYS[1])
for i = 2, #KEYS, 2 do
  redis.call('SET', KEYS[i], g, 'PX', ARGV[1])
  redis.call('DEL', KEYS[i + 1])
end
return g`);

/**
 * KEYS = epoch, gen, val; ARGV = epoch and generation the reader saw before its database
 * read, the text to cache, its TTL (ms). A writer that committed since has moved one of
 * them, and the (older) value read is not cached.
 */
const FILL = script(`
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1`);

/** Generation keys outlive any value cached under them by far (see FILL_DEADLINE_MS). */
const GENERATION_TTL_MS = 3_600_000;
/**
 * A fill whose generation was read longer ago than this is dropped: only a reader stalled
 * for about GENERATION_TTL_MS could see an expired generation come back as "0".
 */
const FILL_DEADLINE_MS = 10_000;
/** While Redis is connected but a command failed, a read tries to bring the cache back at most this often. */
const RECOVER_INTERVAL_MS = 1000;

/**
 * A read-through cache in Redis in front of any StateStore. Writes, lists, history and the
 * rest go to the inner store; `get` and `getEntry` are served from Redis when the value
 * there was stored under the key's current generation and the current epoch.
 *
 * A writer commits to the inner store, then moves the key's generation and deletes its
 * value in Redis (one script) before the write resolves. A reader fetches epoch,
 * generation and value in one MGET; on a miss it reads the inner store and caches the
 * result only if epoch and generation are still those it saw before that read (FILL), so
 * a value read just before a write can never be cached after the write's invalidation.
 *
 * Redis is only a cache: any Redis error sends reads to the inner store and never fails a
 * write. A write whose invalidation could not be made leaves this instance "missed"; it
 * uses the cache again only after it has bumped the global epoch, which disowns every
 * value cached before. Every start bumps it too: a predecessor may have died between a
 * commit and its invalidation, or the data may have been changed while no bridge ran.
 */
export class CachedStateStore implements StateStore {
  private client: Redis | null = null;
  private state: CacheState = "down";
  private everUp = false;
  /** The cache may be read and filled (connected, and the epoch bumped since the last missed invalidation). */
  private usable = false;
  private closing = false;
  /** Grows with every missed invalidation; the epoch bump clears only what it saw. */
  private missed = 1;
  private bumpedFor = 0;
  /** Grows with every (re)connection: a fill never crosses into another connection (a restarted Redis). */
  private session = 0;
  private recovering: Promise<void> | null = null;
  private lastRecoverAttempt = Number.NEGATIVE_INFINITY;
  /** The connection's own error (ECONNREFUSED, ...): connect() only says the connection closed. */
  private lastError: string | null = null;
  private readonly writes = new Set<Promise<unknown>>();
  private readonly stateWaiters = new Set<{ state: CacheState; resolve: () => void }>();
  private readonly watchers = new Set<(change: ExternalChange) => void>();
  private readonly gapWatchers = new Set<() => void>();
  private unwatchInner: (() => void) | null = null;
  private watchChain: Promise<void> = Promise.resolve();
  private readonly now: () => number;
  private readonly codec: ValueCodec;
  private readonly ttlMs: number;
  private readonly epochKey: string;
  private readonly sequenceKey: string;
  /** For logs: the URL without its credentials. */
  readonly redis: string;

  constructor(
    readonly inner: StateStore,
    private readonly options: RedisCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.codec = options.codec ?? plainCodec;
    this.ttlMs = Math.max(1, Math.round(options.ttlS * 1000));
    this.epochKey = `${options.keyPrefix}epoch`;
    this.sequenceKey = `${options.keyPrefix}seq`;
    this.redis = redactUrl(options.url);
    const count = inner.count?.bind(inner);
    if (count) this.count = count;
    // Only a store that other processes share needs cross-process locks; those are taken
    // in Redis, with the store's own as the fallback while Redis does not answer.
    const lockKey = inner.lockKey?.bind(inner);
    if (lockKey) this.lockKey = (key) => this.lockInRedis(key, lockKey);
    this.locks = new RedisKeyLocks({
      keyPrefix: options.keyPrefix,
      ttlMs: options.lockTtlMs ?? 10_000,
      waitMs: options.lockWaitMs ?? 5000,
      scripts: { acquire: ACQUIRE, release: RELEASE },
      run: (client, s, keys, args) => this.runScript(client, s, keys, args),
    });
    if (inner.watch) this.watch = (listener, onGap) => this.addWatcher(listener, onGap);
  }

  /** Present when the inner store has it. */
  readonly count?: (prefix?: string) => Promise<number>;
  readonly lockKey?: (key: string) => Promise<KeyLock>;
  private readonly locks: RedisKeyLocks;
  private lockFallbackLogged = false;
  readonly watch?: StateStore["watch"];

  /** `up` while reads are served from Redis. */
  get cacheState(): CacheState {
    return this.state;
  }

  /** Resolves once the cache is in `state` (at once if it is). */
  whenState(state: CacheState): Promise<void> {
    if (this.state === state) return Promise.resolve();
    return new Promise((resolve) => this.stateWaiters.add({ state, resolve }));
  }

  async initialize(): Promise<void> {
    await this.inner.initialize();
    if (this.client) return;
    this.closing = false;
    // Every open counts as a missed invalidation: the epoch is bumped before the cache is used.
    this.missed += 1;
    // Another process's change (same PostgreSQL schema) invalidates here as well: it covers
    // that process losing Redis, or dying, between its commit and its own invalidation.
    if (this.inner.watch) {
      this.unwatchInner = this.inner.watch(
        (change) => this.onExternalChange(change),
        () => this.onGap(),
      );
    }
    const client = this.connectClient();
    this.client = client;
    this.lastError = null;
    try {
      await client.connect();
    } catch (err) {
      if (this.options.requiredAtStart) {
        const reason = this.lastError ?? errorMessage(err);
        await this.close();
        throw new StoreOpenError(
          `cannot connect to the Redis state cache at ${this.redis}: ${reason}; start Redis, or set persistence.cache.required_at_start to false to start without it`,
          { cause: err },
        );
      }
      // Told not to need it: the bridge runs on its store alone, and ioredis keeps
      // reconnecting in the background.
      this.options.log.warn(
        { redis: this.redis, err: this.lastError ?? errorMessage(err) },
        "Redis state cache not reachable at start; running without it until it answers",
      );
      return;
    }
    await this.recover();
  }

  async close(): Promise<void> {
    this.closing = true;
    this.unwatchInner?.();
    this.unwatchInner = null;
    try {
      await this.inner.close();
    } finally {
      // Writes the inner store has just flushed still invalidate before Redis goes.
      await Promise.allSettled([...this.writes]);
      await this.watchChain;
      const client = this.client;
      this.client = null;
      this.usable = false;
      if (client) {
        if (client.status === "ready") await client.quit().catch(() => client.disconnect());
        else client.disconnect();
      }
    }
  }

  async get(key: string): Promise<JsonObject | null> {
    return (await this.getEntry(key))?.value ?? null;
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    const client = this.client;
    if (!client || !this.usable) {
      this.maybeRecover();
      this.event("bypass");
      return this.inner.getEntry(key);
    }
    const session = this.session;
    const seenAt = performance.now();
    const genKey = this.genKey(key);
    const valKey = this.valKey(key);
    let reply: Array<string | null>;
    try {
      reply = await client.mget(this.epochKey, genKey, valKey);
    } catch (err) {
      this.failed("read", err);
      return this.inner.getEntry(key);
    }
    const epoch = reply[0] ?? "0";
    const gen = reply[1] ?? "0";
    const tag = `${epoch}:${gen}:`;
    const cached = reply[2];
    if (cached?.startsWith(tag)) {
      const entry = this.decode(key, cached.slice(tag.length));
      if (entry !== undefined) {
        this.event("hit");
        return entry !== null && entry.expiresAt !== null && entry.expiresAt <= this.now() ? null : entry;
      }
    }
    this.event("miss");
    const entry = await this.inner.getEntry(key);
    const ttl = entry?.expiresAt != null ? Math.min(this.ttlMs, Math.floor(entry.expiresAt - this.now())) : this.ttlMs;
    // A reconnection in between may be to a restarted Redis, where the epoch and generation seen mean nothing.
    if (ttl > 0 && this.usable && this.session === session && performance.now() - seenAt < FILL_DEADLINE_MS) {
      try {
        await this.runScript(client, FILL, [this.epochKey, genKey, valKey], [epoch, gen, tag + this.encode(entry), String(ttl)]);
      } catch (err) {
        // A failed fill loses nothing; connection loss shows up on the next read or write.
        this.event("error");
        this.options.log.debug({ key, err: errorMessage(err) }, "Redis state cache fill failed");
      }
    }
    return entry;
  }

  set(key: string, value: JsonObject): Promise<void> {
    return this.write([{ key, value }]);
  }

  delete(key: string): Promise<void> {
    return this.write([{ key, value: null }]);
  }

  write(ops: readonly WriteOp[]): Promise<void> {
    const done = this.writeThrough(ops);
    this.writes.add(done);
    const forget = () => this.writes.delete(done);
    done.then(forget, forget);
    return done;
  }

  private async writeThrough(ops: readonly WriteOp[]): Promise<void> {
    try {
      await this.inner.write(ops);
    } finally {
      // Also after a failure: a commit whose connection died may have reached the database.
      if (ops.length > 0) await this.invalidate(ops.map((op) => op.key));
    }
  }

  list(prefix: string, options?: ListOptions): Promise<ListedEntry[]> {
    return this.inner.list(prefix, options);
  }

  history(query: HistoryQuery): Promise<HistoryEntry[]> {
    return this.inner.history(query);
  }

  pruneHistory(retention: HistoryRetention, now: number): Promise<number> {
    return this.inner.pruneHistory(retention, now);
  }

  async sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>> {
    const swept = await this.inner.sweepExpired(now);
    // Cached entries hide themselves once expired; this only frees their memory early.
    if (swept.length > 0) await this.invalidate(swept.map((s) => s.key));
    return swept;
  }

  private addWatcher(listener: (change: ExternalChange) => void, onGap?: () => void): () => void {
    this.watchers.add(listener);
    if (onGap) this.gapWatchers.add(onGap);
    return () => {
      this.watchers.delete(listener);
      if (onGap) this.gapWatchers.delete(onGap);
    };
  }

  /**
   * Other processes' changes went unheard for a while: one that could not invalidate its
   * own key (it lost Redis) may have left it stale here. Disown everything, then tell the
   * watchers, in order with the changes.
   */
  private onGap(): void {
    this.missed += 1;
    this.usable = false;
    this.watchChain = this.watchChain.then(async () => {
      await this.recover();
      for (const onGap of this.gapWatchers) {
        try {
          onGap();
        } catch (err) {
          this.options.log.error({ err: errorMessage(err) }, "change gap watcher failed");
        }
      }
    });
  }

  /** Invalidates first, so a listener that reads the key back is not answered from the cache. In order. */
  private onExternalChange(change: ExternalChange): void {
    this.watchChain = this.watchChain.then(async () => {
      await this.invalidate([change.key]);
      for (const watcher of this.watchers) {
        try {
          watcher(change);
        } catch (err) {
          this.options.log.error({ key: change.key, err: errorMessage(err) }, "change watcher failed");
        }
      }
    });
  }

  private async invalidate(keys: readonly string[]): Promise<void> {
    const client = this.client;
    if (!client) return;
    if (client.status !== "ready") {
      this.missInvalidation();
      return;
    }
    const unique = [...new Set(keys)];
    try {
      await this.runScript(
        client,
        INVALIDATE,
        [this.sequenceKey, ...unique.flatMap((k) => [this.genKey(k), this.valKey(k)])],
        [String(GENERATION_TTL_MS + this.ttlMs)],
      );
    } catch (err) {
      this.missInvalidation();
      this.failed("invalidate", err);
    }
  }

  private missInvalidation(): void {
    this.missed += 1;
    this.setDown("an invalidation could not be made");
  }

  private failed(op: string, err: unknown): void {
    this.event("error");
    this.setDown(`${op}: ${errorMessage(err)}`);
  }

  private connectClient(): Redis {
    const reconnectMaxMs = this.options.reconnectMaxMs ?? 2000;
    const client = new Redis(this.options.url, {
      lazyConnect: true,
      // Fail at once while disconnected instead of queueing: the inner store answers meanwhile.
      enableOfflineQueue: false,
      // A command in flight when the connection drops fails instead of being sent again on
      // the next connection (FILL must never run in another connection than its MGET).
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 1,
      connectTimeout: this.options.connectTimeoutMs ?? 1000,
      commandTimeout: this.options.commandTimeoutMs ?? 500,
      retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times - 1, 10), reconnectMaxMs),
      maintNotifications: "disabled",
      connectionName: "wb-bridge-state-cache",
    });
    // Every failed attempt emits one; the state change is logged once, in setDown.
    client.on("error", (err: Error) => {
      this.lastError = errorMessage(err);
      this.setDown(this.lastError);
    });
    client.on("close", () => this.setDown("connection closed"));
    client.on("ready", () => {
      this.session += 1;
      void this.recover();
    });
    return client;
  }

  private maybeRecover(): void {
    const client = this.client;
    if (client?.status !== "ready" || this.recovering || this.closing) return;
    if (performance.now() - this.lastRecoverAttempt < RECOVER_INTERVAL_MS) return;
    void this.recover();
  }

  /** Bumps the epoch if an invalidation was missed since the last bump, then lets reads use the cache. */
  private recover(): Promise<void> {
    if (!this.recovering) {
      this.recovering = this.runRecovery().finally(() => {
        this.recovering = null;
      });
    }
    return this.recovering;
  }

  private async runRecovery(): Promise<void> {
    for (;;) {
      const client = this.client;
      if (client?.status !== "ready" || this.closing) return;
      this.lastRecoverAttempt = performance.now();
      const session = this.session;
      const missed = this.missed;
      if (missed !== this.bumpedFor) {
        try {
          await client.incr(this.epochKey);
        } catch (err) {
          this.failed("epoch", err);
          return;
        }
        this.bumpedFor = missed;
      }
      // A reconnection or another missed invalidation meanwhile: once more.
      if (this.session !== session || this.missed !== this.bumpedFor) continue;
      if (this.client !== client || client.status !== "ready") return;
      this.usable = true;
      this.setState("up");
      return;
    }
  }

  private setDown(reason: string): void {
    this.usable = false;
    if (this.closing) return;
    if (this.state === "up") this.options.log.warn({ redis: this.redis, reason }, "Redis state cache lost; reading from the store");
    this.setState("down");
  }

  private setState(state: CacheState): void {
    if (this.state === state) return;
    this.state = state;
    if (state === "up") {
      this.options.log.info({ redis: this.redis }, this.everUp ? "Redis state cache back" : "Redis state cache connected");
      this.everUp = true;
    }
    for (const waiter of [...this.stateWaiters]) {
      if (waiter.state === state) {
        this.stateWaiters.delete(waiter);
        waiter.resolve();
      }
    }
    this.options.onStateChange?.(state);
  }

  private event(event: CacheEvent): void {
    this.options.onEvent?.(event);
  }

  private async runScript(client: Redis, s: LuaScript, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    try {
      return await client.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      // A restarted (or flushed) Redis has forgotten the script.
      if (!errorMessage(err).startsWith("NOSCRIPT")) throw err;
      return client.eval(s.lua, keys.length, ...keys, ...args);
    }
  }

  /**
   * The Redis lock while the cache is up; the store's own otherwise (logged once per
   * outage). While one process falls back and another does not, the two do not exclude
   * each other: the README's partition caveat.
   */
  private async lockInRedis(key: string, fallback: (key: string) => Promise<KeyLock>): Promise<KeyLock> {
    const client = this.client;
    if (client?.status === "ready" && !this.closing) {
      try {
        const lock = await this.locks.lock(client, key);
        this.lockFallbackLogged = false;
        return lock;
      } catch (err) {
        if (!(err instanceof RedisLockUnreachable)) throw err;
        this.failed("lock", err);
      }
    }
    if (!this.lockFallbackLogged) {
      this.lockFallbackLogged = true;
      this.options.log.warn({ key }, "Redis does not answer: key locks fall back to the store's own");
    }
    return fallback(key);
  }

  private genKey(key: string): string {
    return `${this.options.keyPrefix}gen:${key}`;
  }

  private valKey(key: string): string {
    return `${this.options.keyPrefix}val:${key}`;
  }

  private encode(entry: StoredEntry | null): string {
    const plain = entry === null ? "null" : JSON.stringify([entry.value, entry.updatedAt, entry.version, entry.expiresAt]);
    return this.codec.encode(plain);
  }

  /** undefined when the text cannot be read back (another key, another format): a miss, never an error. */
  private decode(key: string, text: string): StoredEntry | null | undefined {
    let parsed: unknown;
    try {
      parsed = JSON.parse(this.codec.decode(text));
    } catch {
      return undefined;
    }
    if (parsed === null) return null;
    if (!Array.isArray(parsed) || parsed.length !== 4) return undefined;
    const [value, updatedAt, version, expiresAt] = parsed as unknown[];
    if (!isJsonObject(value) || typeof updatedAt !== "number" || typeof version !== "number") return undefined;
    if (expiresAt !== null && typeof expiresAt !== "number") return undefined;
    return { key, value: value as JsonObject, updatedAt, version, expiresAt };
  }
}
