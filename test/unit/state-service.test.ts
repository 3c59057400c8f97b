import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { ConflictError, PayloadTooLargeError, PreconditionFailedError } from "../../app/shared/errors.js";
import type { JsonObject } from "../../app/shared/json.js";
import { RecoveryPoints } from "../../app/state/recovery.js";
import { type StateChange, type StateListener, StateService } from "../../app/state/service.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { captureLogger, tempDir } from "../helpers/fixtures.js";
import { readRows } from "../helpers/sqlite.js";

const anyObject = z.record(z.string(), z.unknown()) as unknown as z.ZodType<JsonObject>;

/** Records listener calls and lets a test await the n-th one instead of sleeping. */
class Recorder {
  readonly changes: StateChange[] = [];
  private waiters: Array<{ n: number; resolve: () => void }> = [];

  readonly listener: StateListener = (change) => {
    this.changes.push(change);
    this.waiters = this.waiters.filter((w) => {
      if (this.changes.length < w.n) return true;
      w.resolve();
      return false;
    });
  };

  /** Resolves once at least `n` changes were received. */
  async count(n: number): Promise<StateChange[]> {
    if (this.changes.length < n) await new Promise<void>((resolve) => this.waiters.push({ n, resolve }));
    return this.changes;
  }
}

/** One turn of the event loop: listeners are called from setImmediate after the commit. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("StateService over a real SQLite store", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let path: string;
  let t: number;
  const now = () => t;
  let store: SQLiteStateStore;
  let service: StateService;
  let logs: string[];

  beforeEach(async () => {
    dir = await tempDir();
    path = join(dir.path, "state.db");
    t = Date.parse("2024-05-01T10:00:00.000Z");
    store = new SQLiteStateStore({ path, now });
    await store.initialize();
    const captured = captureLogger("debug");
    logs = captured.lines;
    service = new StateService(store, captured.log, { now, maxValueBytes: 4096 });
  });

  afterEach(async () => {
    service.stop();
    await store.close();
    await dir.remove();
  });

  describe("concurrency", () => {
    it("100 concurrent patches of one key lose no field", async () => {
      const patches = Array.from({ length: 100 }, (_, i) => service.update("cfg:k", { counters: { [`c${i}`]: 1 } }, { source: "test" }));
      await Promise.all(patches);
      const value = (await store.get("cfg:k")) as { counters: Record<string, number> };
      expect(Object.keys(value.counters)).toHaveLength(100);
      for (let i = 0; i < 100; i++) expect(value.counters[`c${i}`]).toBe(1);
      // Each patch saw the one before it: the history is a chain, one field more each time.
      const history = (await store.history({ key: "cfg:k", limit: 1000 })).reverse();
      expect(history).toHaveLength(100);
      expect(history.map((h) => h.transition)).toEqual(["create", ...Array<string>(99).fill("update")]);
      history.forEach((h, i) => {
        expect(Object.keys((h.new as { counters: object }).counters)).toHaveLength(i + 1);
        if (i > 0) expect(h.old).toEqual(history[i - 1]?.new);
      });
    });

    it("concurrent read-modify-write increments with If-Match retries lose nothing", async () => {
      await service.set("counter:k", { n: 0 }, { source: "test" });
      let conflicts = 0;
      const increment = async () => {
        for (;;) {
          const current = await service.getEntry("counter:k");
          if (!current) throw new Error("counter vanished");
          try {
            await service.set("counter:k", { n: (current.value.n as number) + 1 }, { source: "test", ifMatch: current.etag });
            return;
          } catch (err) {
            if (!(err instanceof PreconditionFailedError)) throw err;
            conflicts += 1;
          }
        }
      };
      await Promise.all(Array.from({ length: 30 }, increment));
      expect(await store.get("counter:k")).toEqual({ n: 30 });
      // The workers really raced: some read a value another had already replaced.
      expect(conflicts).toBeGreaterThan(0);
      expect(await store.history({ key: "counter:k", transition: "update", limit: 100 })).toHaveLength(30);
    });

    it("a stale If-Match fails set, update and remove with 412 and changes nothing", async () => {
      const first = await service.set("cfg:e", { v: 1 }, { source: "test" });
      await service.set("cfg:e", { v: 2 }, { source: "test" });
      const stale = { source: "test", ifMatch: first.etag };
      for (const attempt of [
        () => service.set("cfg:e", { v: 3 }, stale),
        () => service.update("cfg:e", { w: 1 }, stale),
        () => service.remove("cfg:e", stale),
      ]) {
        const err = await attempt().then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(PreconditionFailedError);
        expect((err as PreconditionFailedError).statusCode).toBe(412);
      }
      expect(await store.get("cfg:e")).toEqual({ v: 2 });
      expect(await store.history({ key: "cfg:e", limit: 10 })).toHaveLength(2);
      await expect(service.set("cfg:new", { v: 1 }, { source: "test", ifMatch: "*" })).rejects.toBeInstanceOf(PreconditionFailedError);
      expect(await store.get("cfg:new")).toBeNull();
    });
  });

  describe("listeners", () => {
    it("are told {key, old, new, transition, source, actor} after each commit", async () => {
      const rec = new Recorder();
      service.subscribe("user:anna", rec.listener);
      await service.set("user:anna", { age: 30 }, { source: "http", actor: "admin" });
      await service.update("user:anna", { age: 31 }, { source: "mqtt" });
      await service.remove("user:anna", { source: "cli" });
      expect(await rec.count(3)).toEqual([
        { key: "user:anna", old: null, new: { age: 30 }, transition: "create", source: "http", actor: "admin" },
        { key: "user:anna", old: { age: 30 }, new: { age: 31 }, transition: "update", source: "mqtt", actor: null },
        { key: "user:anna", old: { age: 31 }, new: null, transition: "delete", source: "cli", actor: null },
      ]);
    });

    it("write() after a patch, a restore, a delete or an expiry of the same key sees that change as the old value", async () => {
      const rec = new Recorder();
      service.subscribe("dev:a", rec.listener);
      await service.write("dev:a", { v: 1 }, anyObject, { source: "device" });
      await service.update("dev:a", { v: 2 }, { source: "http" });
      await service.write("dev:a", { v: 3 }, anyObject, { source: "device" });
      await service.restoreEntries([{ key: "dev:a", value: { v: 4 } }], { source: "cli" });
      await service.write("dev:a", { v: 5 }, anyObject, { source: "device" });
      await service.remove("dev:a", { source: "cli" });
      await service.write("dev:a", { v: 6 }, anyObject, { source: "device", ttlMs: 1000 });
      t += 2000;
      await service.maintain();
      await service.write("dev:a", { v: 7 }, anyObject, { source: "device" });
      const changes = await rec.count(9);
      expect(changes.map((c) => [c.old, c.new])).toEqual([
        [null, { v: 1 }],
        [{ v: 1 }, { v: 2 }],
        [{ v: 2 }, { v: 3 }],
        [{ v: 3 }, { v: 4 }],
        [{ v: 4 }, { v: 5 }],
        [{ v: 5 }, null],
        [null, { v: 6 }],
        [{ v: 6 }, null],
        [null, { v: 7 }],
      ]);
      // The store agrees: the last write created the key again, with no expiry carried over.
      expect(await service.getEntry("dev:a")).toMatchObject({ value: { v: 7 }, expires_at: null });
    });

    it("are called after the write resolved, never before its commit", async () => {
      let calledDuringWrite = false;
      let writeDone = false;
      let committedWhenCalled: JsonObject | null = null;
      const rec = new Recorder();
      service.subscribe("user:", (change) => {
        calledDuringWrite = !writeDone;
        rec.listener(change);
      });
      service.subscribe("user:", async (change) => {
        const rows = await readRows(path, "SELECT value FROM state_store WHERE key = ?", [change.key]);
        committedWhenCalled = rows[0] ? (JSON.parse(String(rows[0].value)) as JsonObject) : null;
        rec.listener(change);
      });
      await service.set("user:bob", { v: 1 }, { source: "test" });
      writeDone = true;
      expect(rec.changes).toHaveLength(0);
      await rec.count(2);
      expect(calledDuringWrite).toBe(false);
      expect(committedWhenCalled).toEqual({ v: 1 });
    });

    it("a listener that throws or rejects fails neither the write nor the other listeners", async () => {
      const rec = new Recorder();
      service.subscribe("user:", () => {
        throw new Error("listener bug");
      });
      service.subscribe("user:", async () => {
        throw new Error("async listener bug");
      });
      service.subscribe("user:", rec.listener);
      await expect(service.set("user:anna", { secret: "SECRET-VALUE" }, { source: "test" })).resolves.toMatchObject({ key: "user:anna" });
      await expect(service.update("user:anna", { more: 1 }, { source: "test" })).resolves.toMatchObject({
        value: { secret: "SECRET-VALUE", more: 1 },
      });
      await rec.count(2);
      await turn();
      const failures = logs.filter((l) => l.includes("state listener failed"));
      expect(failures.length).toBe(4);
      expect(failures.every((l) => l.includes('"key":"user:anna"'))).toBe(true);
      expect(logs.join("\n")).not.toContain("SECRET-VALUE");
      expect(await store.get("user:anna")).toEqual({ secret: "SECRET-VALUE", more: 1 });
    });

    it("a listener that never resolves, or blocks for a while, does not delay writes", async () => {
      let hung = 0;
      service.subscribe("user:", () => {
        hung += 1;
        return new Promise<void>(() => undefined);
      });
      let blocked = 0;
      service.subscribe("user:anna", () => {
        blocked += 1;
        const until = performance.now() + 20;
        while (performance.now() < until) {
          // A slow synchronous listener.
        }
      });
      const rec = new Recorder();
      service.subscribe("user:anna", rec.listener);
      for (let i = 0; i < 20; i++) {
        await service.update("user:anna", { i }, { source: "test" });
        // Acknowledged before any listener ran: none sits between the commit and the caller.
        expect(rec.changes).toHaveLength(i);
        await rec.count(i + 1);
      }
      expect(hung).toBe(20);
      expect(blocked).toBe(20);
      expect(await store.get("user:anna")).toEqual({ i: 19 });
    });

    it("unsubscribe stops the calls of that listener only", async () => {
      const gone = new Recorder();
      const kept = new Recorder();
      const unsubscribe = service.subscribe("user:", gone.listener);
      service.subscribe("user:", kept.listener);
      await service.set("user:a", { v: 1 }, { source: "test" });
      await gone.count(1);
      unsubscribe();
      await service.set("user:a", { v: 2 }, { source: "test" });
      await service.set("user:b", { v: 1 }, { source: "test" });
      await kept.count(3);
      await turn();
      expect(gone.changes.map((c) => c.new)).toEqual([{ v: 1 }]);
      expect(kept.changes.map((c) => c.new)).toEqual([{ v: 1 }, { v: 2 }, { v: 1 }]);
    });

    it("matches a prefix when the pattern ends with ':' or '*', else the exact key", async () => {
      const patterns = ["user:", "us*", "*", "user:anna", "user", "user:ann", "users:"];
      const recorders = new Map(patterns.map((p) => [p, new Recorder()]));
      for (const [p, rec] of recorders) service.subscribe(p, rec.listener);
      const all = recorders.get("*") as Recorder;
      await service.set("user:anna", { v: 1 }, { source: "test" });
      await service.set("user:bob", { v: 1 }, { source: "test" });
      await service.set("users:x", { v: 1 }, { source: "test" });
      await service.set("other:y", { v: 1 }, { source: "test" });
      await all.count(4);
      await turn();
      const keys = (p: string) => (recorders.get(p) as Recorder).changes.map((c) => c.key);
      expect(keys("user:")).toEqual(["user:anna", "user:bob"]);
      expect(keys("us*")).toEqual(["user:anna", "user:bob", "users:x"]);
      expect(keys("*")).toEqual(["user:anna", "user:bob", "users:x", "other:y"]);
      expect(keys("user:anna")).toEqual(["user:anna"]);
      expect(keys("user")).toEqual([]);
      expect(keys("user:ann")).toEqual([]);
      expect(keys("users:")).toEqual(["users:x"]);
    });
  });

  describe("maintenance timer", () => {
    it("runs one round at a time: a round that outlasts the interval is not joined by a second", async () => {
      vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
      const timed = new StateService(store, captureLogger("debug").log, {
        now,
        history: { maxPerKey: 10, maxAgeMs: 0 },
        maintenanceIntervalMs: 1000,
      });
      try {
        // Retention held open, as a long backlog would hold it.
        let release = () => {};
        const held = new Promise<void>((resolve) => {
          release = resolve;
        });
        let entered = () => {};
        const first = new Promise<void>((resolve) => {
          entered = resolve;
        });
        let rounds = 0;
        store.pruneHistory = async () => {
          rounds += 1;
          entered();
          await held;
          return 0;
        };
        timed.start();
        await vi.advanceTimersByTimeAsync(1000);
        await first;
        await vi.advanceTimersByTimeAsync(5000);
        expect(rounds).toBe(1);
        release();
        await vi.waitFor(() => expect(rounds).toBe(2), { interval: 1000, timeout: 20_000 });
      } finally {
        timed.stop();
        vi.useRealTimers();
      }
    });
  });

  describe("TTL", () => {
    it("an expired key is gone from reads at once; maintain() sweeps it with an expire entry and tells listeners", async () => {
      const rec = new Recorder();
      service.subscribe("session:", rec.listener);
      const created = await service.set("session:s1", { user: "anna" }, { source: "http", ttlMs: 60_000 });
      expect(created.expires_at).toBe(new Date(t + 60_000).toISOString());
      await service.set("session:s2", { user: "bob" }, { source: "http" });
      // A patch keeps the expiry.
      await service.update("session:s1", { seen: 1 }, { source: "http" });
      expect((await service.getEntry("session:s1"))?.expires_at).toBe(new Date(t + 60_000).toISOString());
      await rec.count(3);

      t += 59_999;
      expect(await service.maintain()).toEqual({ expired: 0, pruned: 0 });
      expect(await service.getEntry("session:s1")).not.toBeNull();
      t += 1;
      expect(await service.getEntry("session:s1")).toBeNull();
      expect((await service.search({ prefix: "session:" })).items.map((e) => e.key)).toEqual(["session:s2"]);
      expect((await readRows(path, "SELECT key FROM state_store WHERE key = 'session:s1'")).length).toBe(1);

      expect((await service.maintain()).expired).toBe(1);
      const changes = await rec.count(4);
      expect(changes[3]).toEqual({
        key: "session:s1",
        old: { user: "anna", seen: 1 },
        new: null,
        transition: "expire",
        source: "ttl",
        actor: null,
      });
      expect((await readRows(path, "SELECT key FROM state_store WHERE key = 'session:s1'")).length).toBe(0);
      const [expired] = (await service.history({ key: "session:s1" })).items;
      expect(expired).toMatchObject({ transition: "expire", source: "ttl", old: { user: "anna", seen: 1 }, new: null, at: t });
      expect((await service.maintain()).expired).toBe(0);
    });

    it("ttlMs null clears an expiry", async () => {
      await service.set("session:s", { v: 1 }, { source: "test", ttlMs: 1000 });
      await service.update("session:s", { v: 2 }, { source: "test", ttlMs: null });
      t += 5000;
      expect((await service.maintain()).expired).toBe(0);
      expect((await service.getEntry("session:s"))?.value).toEqual({ v: 2 });
    });
  });

  describe("migrations", () => {
    const profileSchema = z.object({ full_name: z.string(), tags: z.array(z.string()) }).strict() as unknown as z.ZodType<JsonObject>;
    const register = () =>
      service.registerNamespace("profile", {
        version: 3,
        migrations: {
          1: (v) => ({ full_name: String(v.name), tags: [] }),
          2: (v) => ({ ...v, tags: [...(v.tags as string[]), "migrated"] }),
        },
      });

    it("migrates a v1 value to v3 when read and writes it back with a migration history entry", async () => {
      register();
      await store.write([{ key: "profile:a", value: { name: "Anna" }, version: 1 }]);
      await store.write([{ key: "profile:b", value: { name: "Bob" }, version: 1 }]);

      const read = await service.read("profile:a", profileSchema);
      expect(read).toMatchObject({ status: "ok", value: { full_name: "Anna", tags: ["migrated"] } });
      const rows = await readRows(path, "SELECT value, version FROM state_store WHERE key = 'profile:a'");
      expect(rows).toEqual([{ value: JSON.stringify({ full_name: "Anna", tags: ["migrated"] }), version: 3 }]);
      const [migration] = await store.history({ key: "profile:a", limit: 1 });
      expect(migration).toMatchObject({
        source: "migration",
        old: { name: "Anna" },
        new: { full_name: "Anna", tags: ["migrated"] },
      });
      // Once is enough: the next read finds version 3.
      await service.read("profile:a", profileSchema);
      expect(await store.history({ key: "profile:a", limit: 10 })).toHaveLength(2);
      expect(logs.some((l) => l.includes("state value migrated") && l.includes('"key":"profile:a"'))).toBe(true);

      // The generic read path migrates too.
      expect(await service.getEntry("profile:b")).toMatchObject({ version: 3, value: { full_name: "Bob", tags: ["migrated"] } });
      expect(await readRows(path, "SELECT version FROM state_store WHERE key = 'profile:b'")).toEqual([{ version: 3 }]);
    });

    it("a value from a newer version is refused with a warning and left untouched", async () => {
      register();
      await store.write([{ key: "profile:new", value: { display: "From v4", extra: [1, 2] }, version: 4 }]);
      const before = await readRows(path, "SELECT value, version, updated_at FROM state_store WHERE key = 'profile:new'");

      const read = await service.read("profile:new", profileSchema);
      expect(read.status).toBe("invalid");
      expect(logs.some((l) => l.includes('"level":40') && l.includes('"key":"profile:new"') && l.includes("newer version"))).toBe(true);
      expect(await service.migrateAll()).toEqual({ migrated: 0, refused: ["profile:new"] });
      // A patch cannot be merged into a value whose shape this bridge does not know.
      const err = await service.update("profile:new", { display: "patched" }, { source: "http" }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConflictError);

      expect(await readRows(path, "SELECT value, version, updated_at FROM state_store WHERE key = 'profile:new'")).toEqual(before);
      expect(await store.history({ key: "profile:new", limit: 10 })).toHaveLength(1);
    });

    it("readAll migrates old entries (written back once), passes current ones untouched, reports newer and invalid ones", async () => {
      register();
      await store.write([
        { key: "profile:a", value: { name: "Anna" }, version: 1 },
        { key: "profile:b", value: { full_name: "Bob", tags: [] }, version: 3 },
        { key: "profile:c", value: { display: "From v4" }, version: 4 },
        { key: "profile:d", value: { full_name: 7, tags: [] }, version: 3 },
      ]);

      const all = await service.readAll("profile:", profileSchema);
      expect(Object.fromEntries(all)).toEqual({
        "profile:a": { status: "ok", value: { full_name: "Anna", tags: ["migrated"] }, updatedAt: t },
        "profile:b": { status: "ok", value: { full_name: "Bob", tags: [] }, updatedAt: t },
        "profile:c": { status: "invalid", reason: "newer schema version", newer: true },
        "profile:d": { status: "invalid", reason: expect.stringContaining("full_name") },
      });
      expect(await readRows(path, "SELECT key, version FROM state_store ORDER BY key")).toEqual([
        { key: "profile:a", version: 3 },
        { key: "profile:b", version: 3 },
        { key: "profile:c", version: 4 },
        { key: "profile:d", version: 3 },
      ]);
      expect(await store.history({ key: "profile:a", limit: 10 })).toHaveLength(2);
      for (const key of ["profile:b", "profile:c", "profile:d"]) expect(await store.history({ key, limit: 10 })).toHaveLength(1);
    });

    it("migrates old values that a recovery point puts back", async () => {
      await store.write([{ key: "profile:a", value: { name: "Anna" }, version: 1 }]);
      const points = new RecoveryPoints(service, now);
      const point = await points.create({ label: "before upgrade", key: "profile:a" }, { source: "test" });
      // The bridge is upgraded: the namespace now is at version 3, the value is read and changed.
      register();
      await service.update("profile:a", { full_name: "Anna B." }, { source: "test" });
      expect(await store.getEntry("profile:a")).toMatchObject({ version: 3, value: { full_name: "Anna B.", tags: ["migrated"] } });

      const rec = new Recorder();
      service.subscribe("profile:", rec.listener);
      await points.restore(point.id, { source: "test" });
      // Listeners and the stored row get the current shape, never the v1 one.
      const [restored] = await rec.count(1);
      expect(restored).toMatchObject({ transition: "restore", new: { full_name: "Anna", tags: ["migrated"] } });
      expect(await readRows(path, "SELECT value, version FROM state_store WHERE key = 'profile:a'")).toEqual([
        { value: JSON.stringify({ full_name: "Anna", tags: ["migrated"] }), version: 3 },
      ]);
      const [entry] = await store.history({ key: "profile:a", limit: 1 });
      expect(entry).toMatchObject({ transition: "restore", new: { full_name: "Anna", tags: ["migrated"] } });
    });
  });

  describe("limits", () => {
    it("counts the JSON bytes of the value: exactly the limit passes, one byte more is refused", async () => {
      // {"d":"…"} is 8 bytes around the string; "é" is 2 bytes of UTF-8.
      const exact = { d: "é".repeat((4096 - 8) / 2) };
      expect(Buffer.byteLength(JSON.stringify(exact))).toBe(4096);
      await expect(service.set("blob:ok", exact, { source: "test" })).resolves.toMatchObject({ key: "blob:ok" });
      const over = { d: `${"é".repeat((4096 - 8) / 2 - 1)}abc` };
      expect(Buffer.byteLength(JSON.stringify(over))).toBe(4097);
      const err = await service.set("blob:big", over, { source: "test" }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(PayloadTooLargeError);
      expect((err as PayloadTooLargeError).code).toBe("state_value_too_large");
      // A patch that makes a value too large is refused as well.
      await expect(service.update("blob:ok", { e: "x" }, { source: "test" })).rejects.toBeInstanceOf(PayloadTooLargeError);
      expect(await store.get("blob:big")).toBeNull();
      expect(await store.get("blob:ok")).toEqual(exact);
    });
  });
});
