import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { StateStore } from "../../app/state/store.js";
import { isUndecodable, StoreClosedError } from "../../app/state/store.js";
import { tempDir } from "../helpers/fixtures.js";

export interface StoreHarness {
  store: StateStore;
  /** A new store instance over the same data (after `store.close()`). */
  reopen(): StateStore;
}

/**
 * The StateStore contract: every implementation (memory, SQLite, later Redis and
 * PostgreSQL) runs exactly these tests through its own factory.
 */
export function describeStoreContract(name: string, make: (dir: string) => StoreHarness): void {
  describe(`StateStore contract: ${name}`, () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let harness: StoreHarness;
    let store: StateStore;

    beforeEach(async () => {
      dir = await tempDir();
      harness = make(dir.path);
      store = harness.store;
      await store.initialize();
    });

    afterEach(async () => {
      await store.close();
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
  });
}
