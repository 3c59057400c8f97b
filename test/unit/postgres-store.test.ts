import { describe, expect, it } from "vitest";
import { PostgresStateStore } from "../../app/state/postgres-store.js";
import type { ExternalChange } from "../../app/state/store.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";
import { describeStoreContract } from "./store-contract.js";

const ready = await requirePostgres();

if (ready) {
  describeStoreContract("postgres", (_dir, now) => {
    const schema = uniqueSchema("contract");
    const make = () => new PostgresStateStore({ url: TEST_POSTGRES_URL, schema, now });
    return { store: make(), reopen: make, cleanup: () => dropSchema(schema) };
  });
} else {
  it.skip("StateStore contract: postgres (PostgreSQL not reachable, see the printed reason)", () => undefined);
}

describe.runIf(ready)("PostgresStateStore across bridges (one schema, two stores)", () => {
  it("tells the other store which keys changed, after commit, and never echoes its own", async () => {
    const schema = uniqueSchema("watch");
    const a = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    const b = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    await a.initialize();
    await b.initialize();
    try {
      const seenByB: ExternalChange[] = [];
      const seenByA: ExternalChange[] = [];
      const arrived = new Promise<void>((resolve) => {
        b.watch((change) => {
          seenByB.push(change);
          if (seenByB.length === 2) resolve();
        });
      });
      a.watch((change) => seenByA.push(change));
      await Promise.all([a.whenListening(), b.whenListening()]);
      await a.write([
        { key: "device:tv", value: { v: 1 }, meta: { transition: "update", source: "http", actor: "anna" } },
        { key: "device:amp", value: null },
      ]);
      await arrived;
      expect(seenByB).toEqual([
        { key: "device:tv", transition: "update", deleted: false, source: "http", actor: "anna" },
        { key: "device:amp", transition: null, deleted: true, source: "internal", actor: null },
      ]);
      expect(await b.get("device:tv")).toEqual({ v: 1 });
      expect(seenByA).toEqual([]);
    } finally {
      await a.close();
      await b.close();
      await dropSchema(schema);
    }
  });

  it("holds a key against a read-modify-write of another store until released", async () => {
    const schema = uniqueSchema("lockkey");
    const a = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    const b = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    await a.initialize();
    await b.initialize();
    try {
      const order: string[] = [];
      const releaseA = await a.lockKey("counter:n");
      const bTakes = b.lockKey("counter:n").then((release) => {
        order.push("b locked");
        return release;
      });
      // b cannot have it while a holds it: a commits and releases first.
      await a.set("counter:n", { n: 1 });
      order.push("a wrote");
      await releaseA.release();
      const releaseB = await bTakes;
      await releaseB.release();
      expect(order).toEqual(["a wrote", "b locked"]);
    } finally {
      await a.close();
      await b.close();
      await dropSchema(schema);
    }
  });

  it("refuses a write whose key-lock fencing token is older than one the key has seen, alone, leaving the value and other writes alone", async () => {
    const schema = uniqueSchema("fence");
    const store = new PostgresStateStore({ url: TEST_POSTGRES_URL, schema });
    await store.initialize();
    try {
      await store.write([{ key: "test:k", value: { by: "holder-5" }, fenceToken: 5 }]);
      // The same holder may write again under its token.
      await store.write([{ key: "test:k", value: { by: "holder-5 again" }, fenceToken: 5 }]);
      // A holder whose lock expired (token 4) resumes after the newer holder wrote; writes
      // of others in the same moment must still commit.
      const [stale, other, fresh] = await Promise.allSettled([
        store.write([{ key: "test:k", value: { by: "holder-4" }, fenceToken: 4 }]),
        store.write([{ key: "test:other", value: { ok: true } }]),
        store.write([{ key: "test:k2", value: { by: "holder-1" }, fenceToken: 1 }]),
      ]);
      expect(stale.status).toBe("rejected");
      expect((stale as PromiseRejectedResult).reason).toMatchObject({ failure: "stale_lock" });
      expect(String((stale as PromiseRejectedResult).reason)).toContain("the lock on test:k was lost");
      expect(other.status).toBe("fulfilled");
      expect(fresh.status).toBe("fulfilled");
      expect(await store.get("test:k")).toEqual({ by: "holder-5 again" });
      expect(await store.get("test:other")).toEqual({ ok: true });
      const history = await store.history({ key: "test:k", limit: 10 });
      expect(history.map((h) => h.new)).toEqual([{ by: "holder-5 again" }, { by: "holder-5" }]);
    } finally {
      await store.close();
      await dropSchema(schema);
    }
  });
});
