import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JsonObject } from "../../app/shared/json.js";
import type { HistoryEntry, ListedEntry, StateStore } from "../../app/state/store.js";
import { isUndecodable, StoreClosedError, StoreWriteError } from "../../app/state/store.js";
import { tempDir } from "../helpers/fixtures.js";

export interface StoreHarness {
  store: StateStore;
  /** A new store instance over the same data (after `store.close()`). */
  reopen(): StateStore;
  /** Removes what the store created outside `dir` (a PostgreSQL schema), after close. */
  cleanup?(): Promise<void>;
}

/** The store's clock: the contract moves it by hand (TTL, history age), never by waiting. */
export interface TestClock {
  now: () => number;
  advance(ms: number): void;
}

function testClock(): TestClock {
  let t = Date.parse("2024-05-01T10:00:00.000Z");
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
  };
}

function keysOf(entries: readonly ListedEntry[]): string[] {
  return entries.map((e) => e.key);
}

function decodedValue(entry: ListedEntry | undefined): JsonObject | null {
  return entry && !isUndecodable(entry) ? entry.value : null;
}

/** History of one key, oldest first, without ids and times. */
async function historyOf(store: StateStore, key: string): Promise<Array<Omit<HistoryEntry, "id" | "at" | "key">>> {
  const entries = await store.history({ key, limit: 1000 });
  return entries.reverse().map(({ id: _id, at: _at, key: _key, ...rest }) => rest);
}

/**
 * The StateStore contract: every implementation (memory, SQLite, PostgreSQL) runs exactly these tests through its own factory. The factory must build
 * its store on `now` (the store's clock for updated_at, history times and expiry).
 */
export function describeStoreContract(name: string, make: (dir: string, now: () => number) => StoreHarness): void {
  describe(`StateStore contract: ${name}`, () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let harness: StoreHarness;
    let store: StateStore;
    let clock: TestClock;

    beforeEach(async () => {
      dir = await tempDir();
      clock = testClock();
      harness = make(dir.path, clock.now);
      store = harness.store;
      await store.initialize();
    });

    afterEach(async () => {
      await store.close();
      await harness.cleanup?.();
      await dir.remove();
    });

    it("returns null for a missing key", async () => {
      expect(await store.get("device:missing")).toBeNull();
    });

    it("round-trips nested JSON", async () => {
      const value = { a: 1, b: "two", c: [1, { d: null, e: true }], f: { g: { h: -1.5, i: "ü€😀" } } };
      await store.set("device:x", value);
      expect(await store.get("device:x")).toEqual(value);
    });

    it("overwrites an existing key", async () => {
      await store.set("device:x", { v: 1 });
      await store.set("device:x", { v: 2, w: true });
      expect(await store.get("device:x")).toEqual({ v: 2, w: true });
    });

    it("deletes, and deleting a missing key is not an error", async () => {
      await store.set("device:x", { v: 1 });
      await store.delete("device:x");
      expect(await store.get("device:x")).toBeNull();
      await expect(store.delete("device:never")).resolves.toBeUndefined();
    });

    it("hands out copies: mutating a value read or written does not change what is stored", async () => {
      const written = { list: [1, 2] };
      await store.set("device:x", written);
      written.list.push(3);
      const read = (await store.get("device:x")) as { list: number[] };
      read.list.push(4);
      expect(await store.get("device:x")).toEqual({ list: [1, 2] });
    });

    it("lists by prefix, ordered by key, excluding neighbours", async () => {
      await store.set("device:b", { n: 2 });
      await store.set("device:a", { n: 1 });
      await store.set("devices:z", { n: 3 });
      await store.set("device;x", { n: 4 });
      await store.set("scenario:last", { n: 5 });
      const listed = await store.list("device:");
      expect(listed.map((e) => e.key)).toEqual(["device:a", "device:b"]);
      const first = listed[0];
      expect(first && !isUndecodable(first) ? first.value : null).toEqual({ n: 1 });
      expect((await store.list("")).length).toBe(5);
    });

    it("keeps every value across close and reopen", async () => {
      await store.set("device:a", { power: true });
      await store.set("scenario:last", { scenario_id: "movie" });
      await store.delete("device:gone");
      await store.close();
      store = harness.reopen();
      await store.initialize();
      expect(await store.get("device:a")).toEqual({ power: true });
      expect(await store.get("scenario:last")).toEqual({ scenario_id: "movie" });
    });

    it("resolves each of many concurrent writes, and all are stored", async () => {
      const writes = Array.from({ length: 300 }, (_, i) => store.set(`device:d${i % 50}`, { i }));
      await Promise.all(writes);
      for (let d = 0; d < 50; d++) {
        // The last write of each key wins: i = 250 + d.
        expect(await store.get(`device:d${d}`)).toEqual({ i: 250 + d });
      }
    });

    it("refuses writes after close with a clear error", async () => {
      await store.close();
      await expect(store.set("device:a", { v: 1 })).rejects.toBeInstanceOf(StoreClosedError);
      store = harness.reopen();
      await store.initialize();
    });

    describe("write()", () => {
      it("applies several ops in order: the last op on a key wins, a delete in between counts", async () => {
        await store.set("group:a", { v: 0 });
        await store.set("group:c", { v: 0 });
        await store.write([
          { key: "group:a", value: { v: 1 } },
          { key: "group:b", value: { v: 1 } },
          { key: "group:a", value: { v: 2 } },
          { key: "group:b", value: null },
          { key: "group:c", value: null },
          { key: "group:c", value: { v: 3 } },
          { key: "group:d", value: { v: 4 } },
          { key: "group:d", value: null },
        ]);
        expect(await store.get("group:a")).toEqual({ v: 2 });
        expect(await store.get("group:b")).toBeNull();
        expect(await store.get("group:c")).toEqual({ v: 3 });
        expect(await store.get("group:d")).toBeNull();
        expect(keysOf(await store.list("group:"))).toEqual(["group:a", "group:c"]);
      });

      it("keeps the JSON text a caller already made instead of serializing the value again", async () => {
        // A value JSON.stringify cannot serialize: only the given text can have been stored.
        const cyclic: JsonObject = { name: "loop" };
        cyclic.self = cyclic;
        await store.write([{ key: "group:j", value: cyclic, json: '{"name":"loop"}' }]);
        expect(await store.get("group:j")).toEqual({ name: "loop" });
        expect((await historyOf(store, "group:j")).map((h) => h.new)).toEqual([{ name: "loop" }]);
      });

      it("is all or nothing: one value that cannot be stored fails the whole write, with no history", async () => {
        await store.set("group:a", { v: 0 });
        const cyclic: JsonObject = { name: "loop" };
        cyclic.self = cyclic;
        const err = await store
          .write([
            { key: "group:a", value: { v: 1 } },
            { key: "group:b", value: { v: 1 } },
            { key: "group:c", value: cyclic },
          ])
          .then(
            () => null,
            (e: unknown) => e,
          );
        expect(err).toBeInstanceOf(StoreWriteError);
        expect((err as Error).message).toContain("group:c");
        expect(await store.get("group:a")).toEqual({ v: 0 });
        expect(await store.get("group:b")).toBeNull();
        expect(keysOf(await store.list("group:"))).toEqual(["group:a"]);
        expect(await historyOf(store, "group:b")).toEqual([]);
        expect(await historyOf(store, "group:a")).toHaveLength(1);
        // The store goes on working.
        await store.write([{ key: "group:b", value: { v: 2 } }]);
        expect(await store.get("group:b")).toEqual({ v: 2 });
      });

      it("is seen whole or not at all by a concurrent reader", async () => {
        const ops = Array.from({ length: 40 }, (_, i) => ({ key: `batch:${String(i).padStart(2, "0")}`, value: { i } }));
        let done = false;
        const writing = store.write(ops).then(() => {
          done = true;
        });
        const seen: number[] = [];
        while (!done) {
          seen.push((await store.list("batch:")).length);
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        await writing;
        seen.push((await store.list("batch:")).length);
        expect(seen.every((n) => n === 0 || n === 40)).toBe(true);
        expect(seen[seen.length - 1]).toBe(40);
      });

      it("keeps the order of separate concurrent writes to one key", async () => {
        await Promise.all([
          store.write([{ key: "order:k", value: { n: 1 } }]),
          store.write([{ key: "order:k", value: null }]),
          store.write([{ key: "order:k", value: { n: 3 } }]),
          store.write([{ key: "order:k", value: { n: 4 } }]),
        ]);
        expect(await store.get("order:k")).toEqual({ n: 4 });
        expect((await historyOf(store, "order:k")).map((h) => [h.transition, h.old, h.new])).toEqual([
          ["create", null, { n: 1 }],
          ["delete", { n: 1 }, null],
          ["create", null, { n: 3 }],
          ["update", { n: 3 }, { n: 4 }],
        ]);
      });
    });

    describe("history", () => {
      it("records create, update and delete with old and new values, source and actor", async () => {
        await store.write([{ key: "user:anna", value: { age: 30 }, meta: { transition: "create", source: "http", actor: "admin" } }]);
        await store.set("user:anna", { age: 31 });
        await store.delete("user:anna");
        expect(await historyOf(store, "user:anna")).toEqual([
          { old: null, new: { age: 30 }, transition: "create", source: "http", actor: "admin" },
          { old: { age: 30 }, new: { age: 31 }, transition: "update", source: "internal", actor: null },
          { old: { age: 31 }, new: null, transition: "delete", source: "internal", actor: null },
        ]);
      });

      it("derives each entry's transition and old value from the op before it in the same batch", async () => {
        await store.set("chain:k", { v: 0 });
        await store.write([
          { key: "chain:k", value: { v: 1 } },
          { key: "chain:k", value: { v: 2 } },
          { key: "chain:k", value: null },
          { key: "chain:k", value: { v: 3 } },
          { key: "chain:other", value: { v: 9 } },
        ]);
        expect((await historyOf(store, "chain:k")).map((h) => [h.transition, h.old, h.new])).toEqual([
          ["create", null, { v: 0 }],
          ["update", { v: 0 }, { v: 1 }],
          ["update", { v: 1 }, { v: 2 }],
          ["delete", { v: 2 }, null],
          ["create", null, { v: 3 }],
        ]);
        // Newest first across keys: the batch's entries come in op order.
        const all = await store.history({ limit: 3 });
        expect(all.map((h) => [h.key, h.transition])).toEqual([
          ["chain:other", "create"],
          ["chain:k", "create"],
          ["chain:k", "delete"],
        ]);
        expect(all[0]?.at).toBe(clock.now());
      });

      it("records no entry for deleting a key that does not exist", async () => {
        await store.delete("ghost:k");
        await store.write([{ key: "ghost:k", value: null, meta: { transition: "delete", source: "http" } }]);
        await store.write([
          { key: "ghost:j", value: { v: 1 } },
          { key: "ghost:j", value: null },
          { key: "ghost:j", value: null },
        ]);
        expect(await historyOf(store, "ghost:k")).toEqual([]);
        expect((await historyOf(store, "ghost:j")).map((h) => h.transition)).toEqual(["create", "delete"]);
      });

      it("pages newest first with beforeId and filters by transition", async () => {
        for (let i = 0; i < 5; i++) await store.set("page:k", { i });
        await store.delete("page:k");
        const first = await store.history({ key: "page:k", limit: 2 });
        expect(first.map((h) => h.new)).toEqual([null, { i: 4 }]);
        const second = await store.history({ key: "page:k", limit: 10, beforeId: first[1]?.id });
        expect(second.map((h) => h.new)).toEqual([{ i: 3 }, { i: 2 }, { i: 1 }, { i: 0 }]);
        expect((await store.history({ transition: "update", limit: 10 })).map((h) => h.new)).toEqual([
          { i: 4 },
          { i: 3 },
          { i: 2 },
          { i: 1 },
        ]);
      });

      it("prunes by count per key, keeping the newest", async () => {
        for (let i = 0; i < 6; i++) await store.set("prune:a", { i });
        for (let i = 0; i < 2; i++) await store.set("prune:b", { i });
        const removed = await store.pruneHistory({ maxPerKey: 3, maxAgeMs: 0 }, clock.now());
        expect(removed).toBe(3);
        expect((await historyOf(store, "prune:a")).map((h) => h.new)).toEqual([{ i: 3 }, { i: 4 }, { i: 5 }]);
        expect(await historyOf(store, "prune:b")).toHaveLength(2);
        expect(await store.get("prune:a")).toEqual({ i: 5 });
      });

      it("prunes by age", async () => {
        await store.set("age:a", { i: 0 });
        await store.set("age:b", { i: 0 });
        clock.advance(10_000);
        await store.set("age:a", { i: 1 });
        clock.advance(10_000);
        await store.set("age:a", { i: 2 });
        const removed = await store.pruneHistory({ maxPerKey: 0, maxAgeMs: 15_000 }, clock.now());
        expect(removed).toBe(2);
        expect((await historyOf(store, "age:a")).map((h) => h.new)).toEqual([{ i: 1 }, { i: 2 }]);
        expect(await historyOf(store, "age:b")).toEqual([]);
        // Values are never pruned, only their history.
        expect(await store.get("age:b")).toEqual({ i: 0 });
        expect(await store.pruneHistory({ maxPerKey: 0, maxAgeMs: 0 }, clock.now())).toBe(0);
      });

      it("counts the newest entry toward its key's limit", async () => {
        for (let i = 0; i < 4; i++) await store.set("cap:a", { i });
        expect(await store.pruneHistory({ maxPerKey: 2, maxAgeMs: 0 }, clock.now())).toBe(2);
        expect((await historyOf(store, "cap:a")).map((h) => h.new)).toEqual([{ i: 2 }, { i: 3 }]);
      });

      it("keeps the newest entry when everything is too old, so an id is never handed out twice", async () => {
        await store.set("old:a", { i: 0 });
        await store.set("old:b", { i: 0 });
        const [newest] = await store.history({ limit: 1 });
        clock.advance(60_000);
        expect(await store.pruneHistory({ maxPerKey: 0, maxAgeMs: 1000 }, clock.now())).toBe(1);
        expect((await store.history({ limit: 10 })).map((h) => h.id)).toEqual([newest?.id]);
        await store.set("old:c", { i: 1 });
        const [next] = await store.history({ limit: 1 });
        expect(next?.id).toBeGreaterThan(newest?.id ?? Infinity);
        // A reader paging with `beforeId` from the new entry still sees the old one.
        expect((await store.history({ limit: 10, beforeId: next?.id })).map((h) => h.id)).toEqual([newest?.id]);
      });
    });

    describe("entries and expiry", () => {
      it("returns version, updatedAt and expiresAt with the value", async () => {
        const t0 = clock.now();
        await store.write([{ key: "meta:k", value: { a: 1 }, version: 3, expiresAt: t0 + 60_000 }]);
        expect(await store.getEntry("meta:k")).toEqual({
          key: "meta:k",
          value: { a: 1 },
          updatedAt: t0,
          version: 3,
          expiresAt: t0 + 60_000,
        });
        clock.advance(5);
        await store.set("meta:k", { a: 2 });
        expect(await store.getEntry("meta:k")).toEqual({ key: "meta:k", value: { a: 2 }, updatedAt: t0 + 5, version: 1, expiresAt: null });
        expect(await store.getEntry("meta:missing")).toBeNull();
        const [listed] = await store.list("meta:");
        expect(listed).toEqual({ key: "meta:k", value: { a: 2 }, updatedAt: t0 + 5, version: 1, expiresAt: null });
      });

      it("hides an expired key from get, getEntry and list before it is swept", async () => {
        const t0 = clock.now();
        await store.write([
          { key: "ttl:a", value: { a: 1 }, expiresAt: t0 + 1000 },
          { key: "ttl:b", value: { b: 1 }, expiresAt: t0 + 2000 },
          { key: "ttl:c", value: { c: 1 } },
        ]);
        clock.advance(999);
        expect(await store.get("ttl:a")).toEqual({ a: 1 });
        clock.advance(1);
        expect(await store.get("ttl:a")).toBeNull();
        expect(await store.getEntry("ttl:a")).toBeNull();
        expect(keysOf(await store.list("ttl:"))).toEqual(["ttl:b", "ttl:c"]);
        // Not swept yet: no expire entry.
        expect(await store.history({ transition: "expire", limit: 10 })).toEqual([]);
      });

      it("sweeps expired keys with an expire history entry each and returns them with their last value", async () => {
        const t0 = clock.now();
        await store.write([
          { key: "ttl:a", value: { a: 1 }, expiresAt: t0 + 1000 },
          { key: "ttl:b", value: { b: 1 }, expiresAt: t0 + 1000 },
          { key: "ttl:c", value: { c: 1 }, expiresAt: t0 + 5000 },
          { key: "ttl:d", value: { d: 1 } },
        ]);
        expect(await store.sweepExpired(t0 + 999)).toEqual([]);
        clock.advance(1000);
        const swept = await store.sweepExpired(clock.now());
        expect([...swept].sort((x, y) => (x.key < y.key ? -1 : 1))).toEqual([
          { key: "ttl:a", old: { a: 1 } },
          { key: "ttl:b", old: { b: 1 } },
        ]);
        expect(await historyOf(store, "ttl:a")).toEqual([
          { old: null, new: { a: 1 }, transition: "create", source: "internal", actor: null },
          { old: { a: 1 }, new: null, transition: "expire", source: "ttl", actor: null },
        ]);
        const expired = await store.history({ transition: "expire", limit: 10 });
        expect(expired.map((h) => h.key).sort()).toEqual(["ttl:a", "ttl:b"]);
        expect(expired.every((h) => h.at === clock.now())).toBe(true);
        // Swept means gone for good, also after a reopen; the rest stays.
        expect(await store.sweepExpired(clock.now())).toEqual([]);
        await store.close();
        store = harness.reopen();
        await store.initialize();
        expect(keysOf(await store.list("ttl:"))).toEqual(["ttl:c", "ttl:d"]);
      });

      it("keeps a transition the writer names, the old value still read from the store", async () => {
        const t0 = clock.now();
        await store.set("named:k", { v: 1 });
        await store.write([{ key: "named:k", value: { v: 2 }, meta: { transition: "activate", source: "http" } }]);
        await store.write([{ key: "named:e", value: { v: 1 }, expiresAt: t0 + 10 }]);
        clock.advance(20);
        await store.write([{ key: "named:e", value: { v: 2 }, meta: { transition: "resume", source: "http" } }]);
        expect(await historyOf(store, "named:k")).toEqual([
          { old: null, new: { v: 1 }, transition: "create", source: "internal", actor: null },
          { old: { v: 1 }, new: { v: 2 }, transition: "activate", source: "http", actor: null },
        ]);
        // An expired value is nobody's `old`, whatever the transition is called.
        expect((await historyOf(store, "named:e")).map((h) => [h.transition, h.old])).toEqual([
          ["create", null],
          ["resume", null],
        ]);
      });

      it("writing an expired key again makes it live, and clears the expiry unless given", async () => {
        const t0 = clock.now();
        await store.write([{ key: "ttl:k", value: { v: 1 }, expiresAt: t0 + 10 }]);
        clock.advance(20);
        await store.set("ttl:k", { v: 2 });
        expect(await store.getEntry("ttl:k")).toMatchObject({ value: { v: 2 }, expiresAt: null });
        // The old expired value is not the new one's `old`: the key did not exist any more.
        expect((await historyOf(store, "ttl:k")).map((h) => [h.transition, h.old])).toEqual([
          ["create", null],
          ["create", null],
        ]);
        expect(await store.sweepExpired(clock.now())).toEqual([]);
      });
    });

    describe("list()", () => {
      it("pages with after and limit, in key order", async () => {
        const keys = Array.from({ length: 11 }, (_, i) => `page:${String(i).padStart(2, "0")}`);
        await store.write([...keys].reverse().map((key, i) => ({ key, value: { i } })));
        await store.set("pagex:zz", { other: true });
        const seen: string[] = [];
        let after: string | undefined;
        for (;;) {
          const page = await store.list("page:", { after, limit: 4 });
          seen.push(...keysOf(page));
          if (page.length < 4) break;
          after = page[page.length - 1]?.key;
        }
        expect(seen).toEqual(keys);
        expect(keysOf(await store.list("page:", { after: "page:03", limit: 2 }))).toEqual(["page:04", "page:05"]);
        expect(keysOf(await store.list("page:", { after: "page:035" }))).toEqual(keys.slice(4));
        expect(await store.list("page:", { limit: 0 })).toEqual([]);
        expect(decodedValue((await store.list("", { after: "page:09", limit: 1 }))[0])).toEqual({ i: 0 });
      });
    });
  });
}
