import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { ServiceUnavailableError } from "../shared/errors.js";
import type { KeyLock } from "./store.js";

/** A Lua script with its SHA, run by EVALSHA first (see CachedStateStore.runScript). */
export interface LockScript {
  lua: string;
  sha: string;
}

export type ScriptRunner = (client: Redis, script: LockScript, keys: readonly string[], args: readonly string[]) => Promise<unknown>;

/**
 * KEYS[1] = the lock, KEYS[2] = the key's fencing counter; ARGV[1] = the holder's random
 * id, ARGV[2] = the lock's time to live (ms), ARGV[3] = the counter's (ms). Returns the
 * fencing token, or false when the lock is held. Tokens are the server's clock in µs, or
 * one more than the last when that is not larger, so they keep growing even after Redis
 * restarts empty (it keeps nothing on disk) or the counter expires; the database refuses a
 * write carrying a token older than one the key has seen.
 */
export const ACQUIRE_LUA = `
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = now
if token <= last then token = last + 1 end
local text = string.format('%d', token)
redis.call('SET', KEYS[2], text, 'PX', ARGV[3])
return text`;

/** KEYS[1] = the lock; ARGV[1] = the holder's id: only the holder removes it (an expired one may be someone else's by now). */
export const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export interface RedisLockOptions {
  keyPrefix: string;
  /** How long a lock lives unless released; a holder paused longer loses it (and its write is refused). */
  ttlMs: number;
  /** How long a taker waits for a held lock before the change is refused with 503. */
  waitMs: number;
  scripts: { acquire: LockScript; release: LockScript };
  run: ScriptRunner;
}

/** Redis could not be asked: the caller falls back to the store's own lock. */
export class RedisLockUnreachable extends Error {}

/**
 * Per-key locks in Redis (SET NX PX with a random holder id), each with a fencing token
 * the write made under it carries (WriteOp.fenceToken).
 */
export class RedisKeyLocks {
  constructor(private readonly options: RedisLockOptions) {}

  async lock(client: Redis, key: string): Promise<KeyLock> {
    const { keyPrefix, ttlMs, waitMs, scripts, run } = this.options;
    const lockKey = `${keyPrefix}lock:${key}`;
    const holder = randomBytes(12).toString("base64url");
    const deadline = Date.now() + waitMs;
    for (let attempt = 0; ; attempt++) {
      let token: unknown;
      try {
        token = await run(client, scripts.acquire, [lockKey, `${keyPrefix}fence:${key}`], [holder, String(ttlMs), String(24 * 3600_000)]);
      } catch (err) {
        throw new RedisLockUnreachable(err instanceof Error ? err.message : String(err), { cause: err });
      }
      if (typeof token === "string") {
        let released = false;
        return {
          fenceToken: Number(token),
          release: async () => {
            if (released) return;
            released = true;
            // A release that cannot reach Redis leaves the lock to expire: nothing else is lost.
            await run(client, scripts.release, [lockKey], [holder]).catch(() => undefined);
          },
        };
      }
      if (Date.now() >= deadline) {
        throw new ServiceUnavailableError(
          "lock_timeout",
          `${key} is being changed by another writer (its lock was held for more than ${waitMs} ms); retry`,
        );
      }
      // Short at first (most read-modify-writes take a few ms), then up to 50 ms, jittered.
      const pause = Math.min(50, 2 ** Math.min(attempt, 5)) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
