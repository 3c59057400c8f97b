import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import type { StateChange } from "../../app/state/service.js";
import { type RunningApp, startApp } from "../helpers/app.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { readRows } from "../helpers/sqlite.js";

const ONE_MIB = 1024 * 1024;

interface HistoryItem {
  id: number;
  key: string;
  old: Record<string, unknown> | null;
  new: Record<string, unknown> | null;
  transition: string;
  source: string;
  actor: string | null;
  at: string;
}

function errorCode(res: LightMyRequestResponse): string {
  return (res.json() as { error: { code: string } }).error.code;
}

/** Follows next_cursor from `url` (which already has a query string) and returns every page. */
async function allPages<T>(app: FastifyInstance, url: string): Promise<T[][]> {
  const pages: T[][] = [];
  let cursor: string | null = null;
  do {
    const res = await app.inject({ url: cursor === null ? url : `${url}&cursor=${encodeURIComponent(cursor)}` });
    expect(res.statusCode).toBe(200);
    const body = res.json() as { items: T[]; next_cursor: string | null };
    pages.push(body.items);
    cursor = body.next_cursor;
  } while (cursor !== null && pages.length < 1000);
  return pages;
}

describe("generic state API (real SQLite file, aedes, Fastify inject)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let dbPath: string;
  const running: RunningApp[] = [];
  const clients: TestMqttClient[] = [];

  async function start(): Promise<RunningApp> {
    const r = await startApp(await testConfig(dir.path, broker.url));
    running.push(r);
    return r;
  }

  async function put(app: FastifyInstance, key: string, value: unknown, headers: Record<string, string> = {}) {
    return app.inject({ method: "PUT", url: `/state/${key}`, payload: value as object, headers });
  }

  async function history(app: FastifyInstance, key: string): Promise<HistoryItem[]> {
    const res = await app.inject({ url: `/state/${key}/history?limit=1000` });
    expect(res.statusCode).toBe(200);
    return (res.json() as { items: HistoryItem[] }).items;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    dbPath = join(dir.path, "state.db");
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const r of running.splice(0)) await r.app.close();
    vi.restoreAllMocks();
    await broker.close();
    await dir.remove();
  });

  describe("keys and namespaces", () => {
    it("refuses writes to device:*, scenario:* (owned) and recovery:* (internal) with 409, and writes nothing", async () => {
      const { app } = await start();
      for (const [method, key, code] of [
        ["PUT", "device:tv", "owned_namespace"],
        ["PATCH", "device:tv", "owned_namespace"],
        ["DELETE", "device:tv", "owned_namespace"],
        ["PUT", "scenario:last", "owned_namespace"],
        ["PATCH", "scenario:last", "owned_namespace"],
        ["DELETE", "scenario:last", "owned_namespace"],
        ["PUT", "recovery:rp-1", "internal_namespace"],
        ["PATCH", "recovery:rp-1", "internal_namespace"],
        ["DELETE", "recovery:rp-1", "internal_namespace"],
      ] as const) {
        const res = await app.inject({ method, url: `/state/${key}`, payload: method === "DELETE" ? undefined : { power: true } });
        expect(res.statusCode, `${method} ${key}`).toBe(409);
        expect(errorCode(res)).toBe(code);
        expect((res.json() as { error: { message: string } }).error.message).toContain(key.split(":")[0]);
      }
      expect(await readRows(dbPath, "SELECT key FROM state_store")).toEqual([]);
      expect(await readRows(dbPath, "SELECT key FROM state_history")).toEqual([]);
      // The owned namespaces change through their managers.
      const action = await app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "power_on" } });
      expect(action.statusCode).toBe(200);
      expect((await app.inject({ url: "/state/device:tv" })).json()).toMatchObject({ key: "device:tv", value: { state: { power: true } } });
    });

    it("refuses malformed keys with 400 and answers 404 for a missing one", async () => {
      const { app } = await start();
      for (const key of ["nocolon", "Upper:x", "1ns:x", "ns:", "ns:has%20space", `${"n".repeat(33)}:x`, "ns:caf%C3%A9"]) {
        for (const method of ["GET", "PUT", "PATCH", "DELETE"] as const) {
          const res = await app.inject({
            method,
            url: `/state/${key}`,
            payload: method === "PUT" || method === "PATCH" ? { a: 1 } : undefined,
          });
          expect(res.statusCode, `${method} ${key}`).toBe(400);
          expect(errorCode(res), `${method} ${key}`).toMatch(/^invalid_/);
        }
        expect((await app.inject({ url: `/state/${key}/history` })).statusCode).toBe(400);
      }
      expect(await readRows(dbPath, "SELECT key FROM state_store")).toEqual([]);

      const missing = await app.inject({ url: "/state/user:nobody" });
      expect(missing.statusCode).toBe(404);
      expect(missing.json()).toEqual({ error: { code: "state_not_found", message: expect.stringContaining("user:nobody") } });
      expect((await app.inject({ method: "DELETE", url: "/state/user:nobody" })).statusCode).toBe(404);
      expect((await app.inject({ url: "/state/user:nobody/history" })).json()).toEqual({ items: [], next_cursor: null });
      // Bodies must be JSON objects.
      expect((await app.inject({ method: "PUT", url: "/state/user:x", payload: [1, 2] })).statusCode).toBe(400);
      expect(
        (await app.inject({ method: "PUT", url: "/state/user:x", payload: "7", headers: { "content-type": "application/json" } }))
          .statusCode,
      ).toBe(400);
    });

    it("a validation error names the body itself as `body` and nested fields by their path", async () => {
      const { app } = await start();
      for (const method of ["PUT", "PATCH"] as const) {
        const res = await app.inject({ method, url: "/state/user:x", payload: [1, 2] });
        expect(res.statusCode, method).toBe(400);
        const { error } = res.json() as { error: { code: string; message: string; details: Array<{ path: string }> } };
        expect(error.code).toBe("invalid_request");
        expect(error.details.map((d) => d.path)).toEqual(["body"]);
        expect(error.message).toMatch(/^body: /);
      }
      const nested = await app.inject({
        method: "POST",
        url: "/devices/tv/action",
        payload: { action: "volume", params: { level: [30] } },
      });
      expect(nested.statusCode).toBe(400);
      const paths = (nested.json() as { error: { details: Array<{ path: string }> } }).error.details.map((d) => d.path);
      expect(paths.length).toBeGreaterThan(0);
      expect(paths.every((p) => p === "body.params.level")).toBe(true);
    });

    it("PATCH takes application/merge-patch+json (RFC 7396) like application/json; other methods refuse it with 415", async () => {
      const { app } = await start();
      expect((await put(app, "user:m", { a: 1, b: { c: 2, d: 3 } })).statusCode).toBe(201);
      for (const type of ["application/merge-patch+json", "application/merge-patch+json; charset=utf-8"]) {
        const res = await app.inject({
          method: "PATCH",
          url: "/state/user:m",
          headers: { "content-type": type },
          payload: JSON.stringify({ b: { d: null }, e: type.length }),
        });
        expect(res.statusCode, type).toBe(200);
        expect((res.json() as { value: unknown }).value).toEqual({ a: 1, b: { c: 2 }, e: type.length });
      }
      const tooDeep = await app.inject({
        method: "PATCH",
        url: "/state/user:m",
        headers: { "content-type": "application/merge-patch+json" },
        payload: `${"[".repeat(100)}${"]".repeat(100)}`,
      });
      expect(tooDeep.statusCode).toBe(400);
      expect(errorCode(tooDeep)).toBe("json_too_deep");
      const putMerge = await app.inject({
        method: "PUT",
        url: "/state/user:m",
        headers: { "content-type": "application/merge-patch+json" },
        payload: JSON.stringify({ z: 1 }),
      });
      expect(putMerge.statusCode).toBe(415);
      expect(errorCode(putMerge)).toBe("unsupported_media_type");
      expect((await app.inject({ url: "/state/user:m" })).json()).toMatchObject({ value: { a: 1, b: { c: 2 } } });
    });

    // KNOWN BUG, not fixed here (app/server.ts is outside this change): Fastify's default
    // maxParamLength (100) answers 414 FST_ERR_MAX_PARAM_LENGTH, in Fastify's own error
    // shape, for any key longer than 100 characters, although ids may have 200. Fix:
    // `maxParamLength` >= 260 (keyParams' max) in the Fastify options; then drop `.fails`.
    it("accepts a key with a 200-character id (the documented maximum) and refuses 201 with 400", async () => {
      const { app } = await start();
      const longest = `ns:${"i".repeat(200)}`;
      expect((await put(app, longest, { a: 1 })).statusCode).toBe(201);
      expect((await app.inject({ url: `/state/${longest}` })).json()).toMatchObject({ key: longest });
      const tooLong = await put(app, `ns:${"i".repeat(201)}`, { a: 1 });
      expect(tooLong.statusCode).toBe(400);
      expect(errorCode(tooLong)).toBe("invalid_state_key");
    });
  });

  describe("ETag and If-Match", () => {
    it("GET returns the ETag; a stale If-Match on PUT, PATCH or DELETE gets 412 and changes nothing", async () => {
      const { app } = await start();
      const created = await put(app, "user:anna", { age: 30 });
      expect(created.statusCode).toBe(201);
      const etag1 = created.headers.etag as string;
      expect(etag1).toMatch(/^".+"$/);
      const read = await app.inject({ url: "/state/user:anna" });
      expect(read.headers.etag).toBe(etag1);
      expect(read.json()).toMatchObject({ key: "user:anna", value: { age: 30 }, version: 1, expires_at: null });

      const updated = await put(app, "user:anna", { age: 31 }, { "if-match": etag1 });
      expect(updated.statusCode).toBe(200);
      const etag2 = updated.headers.etag as string;
      expect(etag2).not.toBe(etag1);
      expect((await app.inject({ url: "/state/user:anna" })).headers.etag).toBe(etag2);

      const before = await readRows(dbPath, "SELECT value, updated_at FROM state_store WHERE key = 'user:anna'");
      const historyBefore = await history(app, "user:anna");
      for (const [method, payload] of [
        ["PUT", { age: 99 }],
        ["PATCH", { age: 99 }],
        ["DELETE", undefined],
      ] as const) {
        const res = await app.inject({ method, url: "/state/user:anna", payload, headers: { "if-match": etag1 } });
        expect(res.statusCode, method).toBe(412);
        expect(errorCode(res)).toBe("etag_mismatch");
      }
      expect(await readRows(dbPath, "SELECT value, updated_at FROM state_store WHERE key = 'user:anna'")).toEqual(before);
      expect(await history(app, "user:anna")).toEqual(historyBefore);

      const patched = await app.inject({
        method: "PATCH",
        url: "/state/user:anna",
        payload: { city: "Riga" },
        headers: { "if-match": etag2 },
      });
      expect(patched.statusCode).toBe(200);
      expect(patched.json()).toMatchObject({ value: { age: 31, city: "Riga" } });
      const deleted = await app.inject({
        method: "DELETE",
        url: "/state/user:anna",
        headers: { "if-match": patched.headers.etag as string },
      });
      expect(deleted.statusCode).toBe(204);
    });

    it("If-Match: * on a missing key is 412 for PUT and PATCH and creates nothing; on an existing key it passes", async () => {
      const { app } = await start();
      for (const method of ["PUT", "PATCH"] as const) {
        const res = await app.inject({ method, url: "/state/user:ghost", payload: { a: 1 }, headers: { "if-match": "*" } });
        expect(res.statusCode, method).toBe(412);
        expect(errorCode(res)).toBe("etag_mismatch");
      }
      expect((await app.inject({ url: "/state/user:ghost" })).statusCode).toBe(404);
      expect(await readRows(dbPath, "SELECT key FROM state_history")).toEqual([]);
      await put(app, "user:ghost", { a: 1 });
      expect((await put(app, "user:ghost", { a: 2 }, { "if-match": "*" })).statusCode).toBe(200);
    });
  });

  describe("concurrency", () => {
    it("concurrent read-modify-write increments over HTTP with If-Match retries lose nothing", async () => {
      const { app } = await start();
      await put(app, "counter:visits", { n: 0 });
      let conflicts = 0;
      const client = async () => {
        for (let attempt = 0; attempt < 500; attempt++) {
          const read = await app.inject({ url: "/state/counter:visits" });
          const n = (read.json() as { value: { n: number } }).value.n;
          const res = await put(app, "counter:visits", { n: n + 1 }, { "if-match": read.headers.etag as string });
          if (res.statusCode === 200) return;
          expect(res.statusCode).toBe(412);
          conflicts += 1;
        }
        throw new Error("gave up");
      };
      await Promise.all(Array.from({ length: 20 }, client));
      expect((await app.inject({ url: "/state/counter:visits" })).json()).toMatchObject({ value: { n: 20 } });
      expect(conflicts).toBeGreaterThan(0);
      const updates = (await history(app, "counter:visits")).filter((h) => h.transition === "update");
      expect(updates.map((h) => h.new?.n).sort((a, b) => Number(a) - Number(b))).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    });

    it("100 concurrent PATCHes of one key keep every field", async () => {
      const { app } = await start();
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          app.inject({ method: "PATCH", url: "/state/cfg:counters", payload: { counters: { [`c${i}`]: 1 } } }),
        ),
      );
      expect(results.every((r) => r.statusCode === 200)).toBe(true);
      const value = (await app.inject({ url: "/state/cfg:counters" })).json().value as { counters: Record<string, number> };
      expect(Object.keys(value.counters).sort()).toEqual(Array.from({ length: 100 }, (_, i) => `c${i}`).sort());
      const [row] = await readRows(dbPath, "SELECT value FROM state_store WHERE key = 'cfg:counters'");
      expect(Object.keys((JSON.parse(String(row?.value)) as typeof value).counters)).toHaveLength(100);
    });
  });

  describe("limits", () => {
    it("accepts a value of exactly max_value_bytes (1 MiB of JSON) and refuses one byte more with 413", async () => {
      const { app } = await start();
      const exact = { d: "x".repeat(ONE_MIB - 8) };
      expect(Buffer.byteLength(JSON.stringify(exact))).toBe(ONE_MIB);
      const ok = await put(app, "blob:exact", exact);
      expect(ok.statusCode).toBe(201);
      expect((await app.inject({ url: "/state/blob:exact" })).json().value.d).toHaveLength(ONE_MIB - 8);

      const over = { d: "x".repeat(ONE_MIB - 7) };
      const refused = await put(app, "blob:over", over);
      expect(refused.statusCode).toBe(413);
      expect(errorCode(refused)).toBe("state_value_too_large");
      expect((await app.inject({ url: "/state/blob:over" })).statusCode).toBe(404);

      // A patch that would grow a value past the limit is refused and changes nothing.
      const grow = await app.inject({ method: "PATCH", url: "/state/blob:exact", payload: { e: 1 } });
      expect(grow.statusCode).toBe(413);
      expect(errorCode(grow)).toBe("state_value_too_large");
      expect(await readRows(dbPath, "SELECT key FROM state_store ORDER BY key")).toEqual([{ key: "blob:exact" }]);
      expect(await readRows(dbPath, "SELECT count(*) AS n FROM state_history")).toEqual([{ n: 1 }]);
    });
  });

  describe("TTL", () => {
    it("PUT ?ttl= expires the key: gone from reads at once, swept by maintain() with an expire entry, listeners told", async () => {
      // The bridge's clock (StateService and store read Date.now when built): moved by hand.
      const realNow = Date.now.bind(Date);
      let offset = 0;
      vi.spyOn(Date, "now").mockImplementation(() => realNow() + offset);
      const { app } = await start();
      const heard: StateChange[] = [];
      const expired = new Promise<StateChange>((resolve) =>
        app.bridge.state.subscribe("session:", (change) => {
          heard.push(change);
          if (change.transition === "expire") resolve(change);
        }),
      );

      const res = await app.inject({ method: "PUT", url: "/state/session:s1?ttl=60", payload: { user: "anna" } });
      expect(res.statusCode).toBe(201);
      const expiresAt = Date.parse((res.json() as { expires_at: string }).expires_at);
      expect(expiresAt - Date.now()).toBeGreaterThan(59_000);
      expect(expiresAt - Date.now()).toBeLessThanOrEqual(60_000);
      await put(app, "session:s2", { user: "bob" });
      await put(app, "session:s3?ttl=60", { user: "carl" });
      // ttl=0 clears the expiry.
      const cleared = await app.inject({ method: "PUT", url: "/state/session:s3?ttl=0", payload: { user: "carl" } });
      expect(cleared.json()).toMatchObject({ expires_at: null });

      offset += 30_000;
      expect(await app.bridge.state.maintain()).toMatchObject({ expired: 0 });
      expect((await app.inject({ url: "/state/session:s1" })).statusCode).toBe(200);

      offset += 31_000;
      expect((await app.inject({ url: "/state/session:s1" })).statusCode).toBe(404);
      const listed = (await app.inject({ url: "/state?prefix=session:" })).json() as { items: Array<{ key: string }> };
      expect(listed.items.map((e) => e.key)).toEqual(["session:s2", "session:s3"]);
      // Still in the file until swept.
      expect(await readRows(dbPath, "SELECT key FROM state_store WHERE key = 'session:s1'")).toHaveLength(1);

      expect(await app.bridge.state.maintain()).toMatchObject({ expired: 1 });
      expect(await expired).toEqual({
        key: "session:s1",
        old: { user: "anna" },
        new: null,
        transition: "expire",
        source: "ttl",
        actor: null,
      });
      expect(heard.filter((c) => c.transition === "expire")).toHaveLength(1);
      expect(await readRows(dbPath, "SELECT key FROM state_store WHERE key = 'session:s1'")).toHaveLength(0);
      const items = await history(app, "session:s1");
      expect(items.map((h) => [h.transition, h.source])).toEqual([
        ["expire", "ttl"],
        ["create", "http"],
      ]);
      expect(items[0]).toMatchObject({ old: { user: "anna" }, new: null });
      const expiredPage = (await app.inject({ url: "/history?transition=expire" })).json() as { items: HistoryItem[] };
      expect(expiredPage.items.map((h) => h.key)).toEqual(["session:s1"]);
    });
  });

  describe("search", () => {
    it("pages through a prefix in key order, each key present throughout exactly once, while other keys come and go", async () => {
      const { app } = await start();
      const pad = (i: number) => String(i).padStart(3, "0");
      const seeded = Array.from({ length: 40 }, (_, i) => `item:${pad(i * 10)}`);
      for (const key of seeded) await put(app, key, { n: Number(key.slice(5)) });
      await put(app, "itemx:a", { n: -1 });
      await put(app, "other:a", { n: -1 });

      const seen: string[] = [];
      const deleted = new Set<string>();
      let cursor: string | null = null;
      let round = 0;
      do {
        const url: string = `/state?prefix=item:&limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const res = await app.inject({ url });
        expect(res.statusCode).toBe(200);
        const body = res.json() as { items: Array<{ key: string }>; next_cursor: string | null };
        expect(body.items.length).toBeLessThanOrEqual(7);
        seen.push(...body.items.map((e) => e.key));
        cursor = body.next_cursor;
        round += 1;
        // Between pages: keys appear before and after the cursor, others vanish.
        await put(app, `item:${pad(round * 10 - 5)}`, { n: 0 });
        await put(app, `item:${pad(395 - round)}`, { n: 0 });
        await put(app, `other:${round}`, { n: 0 });
        const victim = seeded[seeded.length - round * 2];
        if (victim && !seen.includes(victim)) {
          await app.inject({ method: "DELETE", url: `/state/${victim}` });
          deleted.add(victim);
        }
      } while (cursor !== null && round < 100);

      expect(cursor).toBeNull();
      // Strictly ascending: no key twice, none out of order.
      expect(seen).toEqual([...seen].sort());
      expect(new Set(seen).size).toBe(seen.length);
      for (const key of seeded.filter((k) => !deleted.has(k))) expect(seen.filter((k) => k === key)).toHaveLength(1);
      expect(deleted.size).toBeGreaterThan(0);
      for (const key of deleted) expect(seen).not.toContain(key);
      expect(seen.every((k) => k.startsWith("item:"))).toBe(true);
    });

    it("filters by field value and hides the state layer's own keys", async () => {
      const { app } = await start();
      await put(app, "user:a", { data: { status: "active" }, n: 1 });
      await put(app, "user:b", { data: { status: "suspended" }, n: 2 });
      await put(app, "user:c", { data: { status: "active" }, n: 3 });
      await app.inject({ method: "POST", url: "/recovery-points", payload: { label: "p" } });
      const res = await app.inject({ url: "/state?prefix=user:&filter=data.status=active" });
      expect((res.json() as { items: Array<{ key: string }> }).items.map((e) => e.key)).toEqual(["user:a", "user:c"]);
      const both = await app.inject({ url: "/state?filter=data.status=active&filter=n=3" });
      expect((both.json() as { items: Array<{ key: string }> }).items.map((e) => e.key)).toEqual(["user:c"]);
      const all = (await app.inject({ url: "/state" })).json() as { items: Array<{ key: string }> };
      expect(all.items.map((e) => e.key)).toEqual(["user:a", "user:b", "user:c"]);
      expect((await app.inject({ url: "/state?filter=nopath" })).statusCode).toBe(400);
    });

    it("request logs show the path and query keys, never query values (filters, tokens)", async () => {
      const { app, logs } = await start();
      await put(app, "user:s", { password: "SECRET-IN-VALUE" });
      const res = await app.inject({ url: "/state?filter=password=SECRET-IN-FILTER&limit=5" });
      expect(res.statusCode).toBe(200);
      expect((await app.inject({ url: "/nowhere?access_token=TOKEN-IN-QUERY" })).statusCode).toBe(404);
      expect((await app.inject({ url: "/devices?access_token=TOKEN-IN-QUERY&access_token=again" })).statusCode).toBe(200);
      const requests = logs
        .map((l) => JSON.parse(l) as { req?: { url: string; query_keys?: string[] } })
        .flatMap((l) => (l.req ? [l.req] : []));
      expect(requests).toContainEqual(expect.objectContaining({ url: "/state", query_keys: ["filter", "limit"] }));
      expect(requests).toContainEqual(expect.objectContaining({ url: "/nowhere", query_keys: ["access_token"] }));
      expect(requests).toContainEqual(expect.objectContaining({ url: "/devices", query_keys: ["access_token"] }));
      const logged = logs.join("\n");
      for (const secret of ["SECRET-IN-FILTER", "SECRET-IN-VALUE", "TOKEN-IN-QUERY", "again"]) expect(logged).not.toContain(secret);
    });

    it("next_cursor is opaque (base64url of the last key); a raw key or a damaged cursor is 400 invalid_cursor", async () => {
      const { app } = await start();
      for (const id of ["a", "b", "c"]) await put(app, `user:${id}`, { n: 1 });
      const first = (await app.inject({ url: "/state?prefix=user:&limit=1" })).json() as {
        items: Array<{ key: string }>;
        next_cursor: string;
      };
      expect(first.items.map((e) => e.key)).toEqual(["user:a"]);
      expect(first.next_cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(Buffer.from(first.next_cursor, "base64url").toString("utf8")).toBe("user:a");
      const second = await app.inject({ url: `/state?prefix=user:&limit=1&cursor=${first.next_cursor}` });
      expect((second.json() as { items: Array<{ key: string }> }).items.map((e) => e.key)).toEqual(["user:b"]);

      const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64url");
      for (const cursor of [
        "user:a", // the raw key, as an earlier README described the cursor
        first.next_cursor.slice(0, -2), // truncated
        `${first.next_cursor}=`, // padding this bridge never emits
        `${first.next_cursor}!`,
        b64("not a key"),
        Buffer.from([0xff, 0xfe, 0x3a]).toString("base64url"), // not UTF-8
      ]) {
        const res = await app.inject({ url: `/state?prefix=user:&limit=1&cursor=${encodeURIComponent(cursor)}` });
        expect(res.statusCode, cursor).toBe(400);
        expect(res.json()).toEqual({ error: { code: "invalid_cursor", message: expect.stringContaining("next_cursor") } });
      }
    });
  });

  describe("transitions", () => {
    it("derives activate, suspend and resume from the status rules and refuses a disallowed change with 409", async () => {
      const { app } = await start();
      app.bridge.state.registerNamespace("account", {
        transitions: { field: "status", allowed: { pending: ["active"], active: ["suspended"], suspended: ["active"] } },
      });
      expect((await put(app, "account:a", { status: "pending", plan: "free" })).statusCode).toBe(201);
      for (const status of ["active", "suspended", "active"]) {
        const res = await app.inject({ method: "PATCH", url: "/state/account:a", payload: { status } });
        expect(res.statusCode, status).toBe(200);
      }
      expect((await app.inject({ method: "PATCH", url: "/state/account:a", payload: { plan: "pro" } })).statusCode).toBe(200);

      const before = await readRows(dbPath, "SELECT value, updated_at FROM state_store WHERE key = 'account:a'");
      const historyBefore = await history(app, "account:a");
      for (const [method, payload] of [
        ["PATCH", { status: "pending" }],
        ["PUT", { status: "closed", plan: "pro" }],
        ["PATCH", { status: null }],
      ] as const) {
        const res = await app.inject({ method, url: "/state/account:a", payload });
        expect(res.statusCode, JSON.stringify(payload)).toBe(409);
        expect(errorCode(res)).toBe("transition_not_allowed");
        expect((res.json() as { error: { message: string } }).error.message).toContain("status");
      }
      expect(await readRows(dbPath, "SELECT value, updated_at FROM state_store WHERE key = 'account:a'")).toEqual(before);
      expect(await history(app, "account:a")).toEqual(historyBefore);

      expect(historyBefore.reverse().map((h) => [h.transition, h.old?.status ?? null, h.new?.status ?? null])).toEqual([
        ["create", null, "pending"],
        ["activate", "pending", "active"],
        ["suspend", "active", "suspended"],
        ["resume", "suspended", "active"],
        ["update", "active", "active"],
      ]);
      const suspends = (await app.inject({ url: "/history?transition=suspend" })).json() as { items: HistoryItem[] };
      expect(suspends.items.map((h) => [h.key, h.source])).toEqual([["account:a", "http"]]);
      // Deleting is not a status change.
      expect((await app.inject({ method: "DELETE", url: "/state/account:a" })).statusCode).toBe(204);
    });
  });

  describe("history", () => {
    it("GET /state/:key/history pages newest first with next_cursor", async () => {
      const { app } = await start();
      for (let i = 0; i < 7; i++) await put(app, "user:h", { i });
      await put(app, "user:other", { i: 0 });
      await app.inject({ method: "DELETE", url: "/state/user:h" });

      const pages = await allPages<HistoryItem>(app, "/state/user:h/history?limit=3");
      expect(pages.map((p) => p.length)).toEqual([3, 3, 2]);
      const items = pages.flat();
      expect(items.map((h) => h.transition)).toEqual(["delete", ...Array<string>(6).fill("update"), "create"]);
      expect(items.map((h) => h.new?.i ?? null)).toEqual([null, 6, 5, 4, 3, 2, 1, 0]);
      const ids = items.map((h) => h.id);
      expect(ids).toEqual([...ids].sort((a, b) => b - a));
      expect(new Set(ids).size).toBe(8);
      expect(items.every((h) => h.key === "user:h" && h.source === "http" && !Number.isNaN(Date.parse(h.at)))).toBe(true);
      expect((await app.inject({ url: "/state/user:h/history?cursor=abc" })).statusCode).toBe(400);
    });

    it("GET /history?transition= filters across keys and pages newest first", async () => {
      const { app } = await start();
      for (let i = 0; i < 3; i++) {
        await put(app, "user:a", { i });
        await put(app, "user:b", { i });
      }
      await app.inject({ method: "DELETE", url: "/state/user:a" });
      const pages = await allPages<HistoryItem>(app, "/history?transition=update&limit=2");
      const items = pages.flat();
      expect(items.map((h) => [h.key, h.new?.i])).toEqual([
        ["user:b", 2],
        ["user:a", 2],
        ["user:b", 1],
        ["user:a", 1],
      ]);
      expect(items.every((h) => h.transition === "update")).toBe(true);
      const deletes = (await app.inject({ url: "/history?transition=delete" })).json() as {
        items: HistoryItem[];
        next_cursor: string | null;
      };
      expect(deletes).toMatchObject({ next_cursor: null, items: [{ key: "user:a", old: { i: 2 }, new: null }] });
      const byKey = (await app.inject({ url: "/history?key=user:b&limit=1" })).json() as {
        items: HistoryItem[];
        next_cursor: string | null;
      };
      expect(byKey.items.map((h) => h.new?.i)).toEqual([2]);
      expect(byKey.next_cursor).not.toBeNull();
      expect((await app.inject({ url: "/history?transition=bogus" })).statusCode).toBe(400);
    });

    it("history cursors are opaque like /state's: one the bridge did not issue (1e3, a raw id) is 400 invalid_cursor", async () => {
      const { app } = await start();
      for (let i = 0; i < 4; i++) await put(app, "user:c", { i });
      const first = (await app.inject({ url: "/history?key=user:c&limit=2" })).json() as { items: HistoryItem[]; next_cursor: string };
      expect(first.next_cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      const second = await app.inject({ url: `/history?key=user:c&limit=2&cursor=${first.next_cursor}` });
      expect(second.statusCode).toBe(200);
      expect((second.json() as { items: HistoryItem[] }).items.map((h) => h.new?.i)).toEqual([1, 0]);
      const lastId = String(first.items[1]?.id);
      for (const route of ["/history?key=user:c&", "/state/user:c/history?"]) {
        for (const cursor of [
          "1e3", // Number("1e3") is 1000: it used to be read as the id 1000
          lastId, // the raw id, as the cursor used to be
          "0x10",
          ` ${lastId}`,
          `${first.next_cursor}=`, // padding this bridge never emits
          first.next_cursor.slice(0, -1), // truncated
          Buffer.from("1e3").toString("base64url"), // well encoded, but not an id the bridge writes
          Buffer.from("007").toString("base64url"),
        ]) {
          const res = await app.inject({ url: `${route}limit=2&cursor=${encodeURIComponent(cursor)}` });
          expect(res.statusCode, `${route} ${cursor}`).toBe(400);
          expect(res.json()).toEqual({ error: { code: "invalid_cursor", message: expect.stringContaining("next_cursor") } });
        }
      }
      // An empty cursor starts at the first page, as on /state.
      expect((await app.inject({ url: "/history?key=user:c&limit=2&cursor=" })).json()).toEqual(first);
    });
  });

  describe("recovery points", () => {
    it("creates (key, prefix, all), lists, restores (recorded as restore, newer keys deleted), deletes and prunes", async () => {
      const { app } = await start();
      await put(app, "user:a", { v: 1 });
      await put(app, "user:b", { v: 1 });
      await put(app, "cfg:x", { v: 1 });

      const create = async (payload: object) => {
        const res = await app.inject({ method: "POST", url: "/recovery-points", payload });
        expect(res.statusCode).toBe(201);
        return res.json() as { id: string; label: string; scope: { type: string }; keys: number; created_at: string };
      };
      const byKey = await create({ label: "anna", key: "user:a" });
      const byPrefix = await create({ label: "users", prefix: "user:" });
      const all = await create({ label: "everything" });
      expect([byKey.scope, byPrefix.scope, all.scope]).toEqual([
        { type: "key", key: "user:a" },
        { type: "prefix", prefix: "user:" },
        { type: "all" },
      ]);
      expect([byKey.keys, byPrefix.keys, all.keys]).toEqual([1, 2, 3]);
      const listed = (await app.inject({ url: "/recovery-points" })).json() as Array<{ id: string }>;
      expect(listed.map((p) => p.id).sort()).toEqual([byKey.id, byPrefix.id, all.id].sort());
      expect((await app.inject({ method: "POST", url: "/recovery-points", payload: { label: "x", key: "bad key" } })).statusCode).toBe(400);

      // Things change after the points.
      await app.inject({ method: "PATCH", url: "/state/user:a", payload: { v: 2 } });
      await app.inject({ method: "DELETE", url: "/state/user:b" });
      await put(app, "user:c", { v: 1 });
      await put(app, "cfg:x", { v: 2 });
      await put(app, "cfg:y", { v: 1 });

      const restore = (id: string) => app.inject({ method: "POST", url: `/recovery-points/${id}/restore` });
      expect((await restore(byKey.id)).json()).toEqual({ restored: 1, deleted: 0 });
      expect((await app.inject({ url: "/state/user:a" })).json().value).toEqual({ v: 1 });
      expect((await app.inject({ url: "/state/user:c" })).statusCode).toBe(200);

      expect((await restore(byPrefix.id)).json()).toEqual({ restored: 2, deleted: 1 });
      expect((await app.inject({ url: "/state/user:b" })).json().value).toEqual({ v: 1 });
      expect((await app.inject({ url: "/state/user:c" })).statusCode).toBe(404);
      expect((await app.inject({ url: "/state/cfg:x" })).json().value).toEqual({ v: 2 });
      expect((await history(app, "user:b"))[0]).toMatchObject({ transition: "restore", source: "http", old: null, new: { v: 1 } });
      expect((await history(app, "user:c"))[0]).toMatchObject({ transition: "restore", old: { v: 1 }, new: null });

      expect((await restore(all.id)).json()).toMatchObject({ restored: 3, deleted: 1 });
      expect((await app.inject({ url: "/state/cfg:x" })).json().value).toEqual({ v: 1 });
      expect((await app.inject({ url: "/state/cfg:y" })).statusCode).toBe(404);
      expect(((await app.inject({ url: "/state" })).json() as { items: Array<{ key: string }> }).items.map((e) => e.key)).toEqual([
        "cfg:x",
        "user:a",
        "user:b",
      ]);
      // The points survived the restore of "everything": they are not state.
      expect(((await app.inject({ url: "/recovery-points" })).json() as unknown[]).length).toBe(3);

      expect((await app.inject({ method: "DELETE", url: `/recovery-points/${byKey.id}` })).statusCode).toBe(204);
      expect((await app.inject({ method: "DELETE", url: `/recovery-points/${byKey.id}` })).statusCode).toBe(404);
      expect((await restore(byKey.id)).statusCode).toBe(404);
      expect((await restore("no-such-point")).statusCode).toBe(404);
      expect(((await app.inject({ url: "/recovery-points" })).json() as unknown[]).length).toBe(2);

      const pruned = await app.inject({ method: "POST", url: "/recovery-points/prune", payload: { keep: 1 } });
      expect(pruned.json()).toEqual({ removed: 1 });
      expect(((await app.inject({ url: "/recovery-points" })).json() as Array<{ id: string }>).map((p) => p.id)).toEqual([all.id]);
      const aged = await app.inject({ method: "POST", url: "/recovery-points/prune", payload: { older_than_days: 0 } });
      expect(aged.json()).toEqual({ removed: 1 });
      expect((await app.inject({ url: "/recovery-points" })).json()).toEqual([]);
    });

    it("restoring a device:<id> point republishes the device's value on MQTT and shows it on /devices/:id/state", async () => {
      const observer = await TestMqttClient.connect(broker.url);
      clients.push(observer);
      await observer.subscribe("/devices/tv/controls/volume");
      const { app } = await start();
      const action = (level: number) =>
        app.inject({ method: "POST", url: "/devices/tv/action", payload: { action: "volume", params: { level } } });

      expect((await action(15)).statusCode).toBe(200);
      const point = (
        await app.inject({ method: "POST", url: "/recovery-points", payload: { label: "quiet", key: "device:tv" } })
      ).json() as { id: string };
      expect((await action(80)).statusCode).toBe(200);
      await observer.waitFor("/devices/tv/controls/volume", (m) => m.payload === "80");

      const mark = observer.received.length;
      const res = await app.inject({ method: "POST", url: `/recovery-points/${point.id}/restore` });
      expect(res.json()).toEqual({ restored: 1, deleted: 0 });
      const republished = await observer.waitFor(
        "/devices/tv/controls/volume",
        (m) => observer.received.indexOf(m) >= mark && m.payload === "15",
      );
      expect(republished.retain).toBe(false);
      expect((await app.inject({ url: "/devices/tv/state" })).json()).toMatchObject({ id: "tv", state: { volume: 15 } });
      const [last] = await history(app, "device:tv");
      expect(last).toMatchObject({ transition: "restore", source: "http" });
      expect((last?.new as { state: { volume: number } } | undefined)?.state.volume).toBe(15);
    });
  });

  describe("migrations", () => {
    it("migrates a v1 row to v3 on read through the API, with a migration history entry; a v4 row is left untouched", async () => {
      const { app, logs } = await start();
      app.bridge.state.registerNamespace("profile", {
        version: 3,
        migrations: {
          1: (v) => ({ full_name: String(v.name) }),
          2: (v) => ({ ...v, tags: ["v3"] }),
        },
      });
      await app.bridge.store.write([{ key: "profile:a", value: { name: "Anna" }, version: 1 }]);
      await app.bridge.store.write([{ key: "profile:z", value: { shape: "from the future" }, version: 4 }]);

      const read = await app.inject({ url: "/state/profile:a" });
      expect(read.statusCode).toBe(200);
      expect(read.json()).toMatchObject({ value: { full_name: "Anna", tags: ["v3"] }, version: 3 });
      expect(await readRows(dbPath, "SELECT value, version FROM state_store WHERE key = 'profile:a'")).toEqual([
        { value: JSON.stringify({ full_name: "Anna", tags: ["v3"] }), version: 3 },
      ]);
      expect((await history(app, "profile:a"))[0]).toMatchObject({
        source: "migration",
        old: { name: "Anna" },
        new: { full_name: "Anna", tags: ["v3"] },
      });

      const before = await readRows(dbPath, "SELECT value, version, updated_at FROM state_store WHERE key = 'profile:z'");
      expect((await app.inject({ url: "/state/profile:z" })).json()).toMatchObject({ version: 4, value: { shape: "from the future" } });
      const patch = await app.inject({ method: "PATCH", url: "/state/profile:z", payload: { more: 1 } });
      expect(patch.statusCode).toBe(409);
      expect(errorCode(patch)).toBe("state_version_unsupported");
      expect(await readRows(dbPath, "SELECT value, version, updated_at FROM state_store WHERE key = 'profile:z'")).toEqual(before);
      expect((await history(app, "profile:z")).map((h) => h.source)).toEqual(["internal"]);
      expect(logs.some((l) => l.includes('"level":40') && l.includes('"key":"profile:z"'))).toBe(true);
    });
  });
});
