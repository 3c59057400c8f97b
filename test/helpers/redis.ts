import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { requireService } from "./services.js";

/**
 * The Redis server the tests use: TEST_REDIS_URL, or the machine's own on 127.0.0.1:6379.
 * Tests share it: each one works under a key prefix of its own and removes its keys.
 */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** A client for a test's own look into Redis; the caller quits it. */
export function testRedis(url = TEST_REDIS_URL): Redis {
  const client = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, connectTimeout: 2000, maxRetriesPerRequest: 0 });
  client.on("error", () => undefined);
  return client;
}

/** Null when the server answers PING; otherwise why not. */
export async function redisUnavailable(url = TEST_REDIS_URL): Promise<string | null> {
  const client = testRedis(url);
  try {
    await client.connect();
    const pong = await client.ping();
    return pong === "PONG" ? null : `Redis at ${url} answered PING with ${pong}`;
  } catch (err) {
    return `Redis at ${url} does not answer: ${(err as Error).message}`;
  } finally {
    client.disconnect();
  }
}

/** See requireService: fails under CI without the server, else skips with the reason. */
export function requireRedis(): Promise<boolean> {
  return requireService("Redis", () => redisUnavailable());
}

export function uniquePrefix(prefix = "t"): string {
  return `test:${prefix}:${randomBytes(6).toString("hex")}:`;
}

/** Removes every key under `prefix`. */
export async function dropPrefix(prefix: string, url = TEST_REDIS_URL): Promise<void> {
  const client = testRedis(url);
  try {
    await client.connect();
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}
