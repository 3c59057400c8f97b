import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../app/config/loader.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { ConfigError } from "../../app/shared/errors.js";
import { fernetDecrypt, fernetEncrypt, generateFernetKey } from "../../app/state/fernet.js";
import { StoreCorruptError, StoreOpenError, StoreWriteError } from "../../app/state/store.js";
import { failedStart, type RunningApp, startApp } from "../helpers/app.js";
import { damage, sha256 } from "../helpers/db-files.js";
import { tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { readRows } from "../helpers/sqlite.js";

const MARKER = "PLAINTEXT-MARKER-7f3a9c";

describe("state durability (real SQLite file, aedes, Fastify inject)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let dbPath: string;
  const running: RunningApp[] = [];

  async function start(env: Env = {}): Promise<RunningApp> {
    const r = await startApp(await testConfig(dir.path, broker.url, {}, env));
    running.push(r);
    return r;
  }

  async function stop(r: RunningApp): Promise<void> {
    await r.app.close();
    running.splice(running.indexOf(r), 1);
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
    dbPath = join(dir.path, "state.db");
  });

  afterEach(async () => {
    for (const r of running.splice(0)) await r.app.close();
    await broker.close();
    await dir.remove();
  });

  describe("history commits with its write", () => {
    it("after each acknowledged write an independent connection sees the value and its history row together", async () => {
      const { app } = await start();
      const puts = Array.from({ length: 40 }, async (_, i) => {
        const res = await app.inject({ method: "PUT", url: `/state/item:${i}`, payload: { i } });
        expect(res.statusCode).toBe(201);
        const rows = await readRows(
          dbPath,
          `SELECT s.value AS value, h.new AS new, h.transition AS transition, h.source AS source
           FROM state_store s JOIN state_history h ON h.key = s.key WHERE s.key = ?`,
          [`item:${i}`],
        );
        expect(rows).toEqual([{ value: JSON.stringify({ i }), new: JSON.stringify({ i }), transition: "create", source: "http" }]);
      });
      const patches = Array.from({ length: 20 }, async (_, i) => {
        const res = await app.inject({ method: "PATCH", url: "/state/item:shared", payload: { [`f${i}`]: i } });
        expect(res.statusCode).toBe(200);
        const [row] = await readRows(dbPath, "SELECT value FROM state_store WHERE key = 'item:shared'");
        expect(JSON.parse(String(row?.value))).toHaveProperty(`f${i}`, i);
        // The history entry of this very patch is there: the one whose old lacks the field and whose new has it.
        const history = await readRows(dbPath, "SELECT old, new FROM state_history WHERE key = 'item:shared' ORDER BY id");
        const parse = (text: unknown) => (text === null ? {} : (JSON.parse(String(text)) as Record<string, number>));
        const own = history.filter((h) => !(`f${i}` in parse(h.old)) && parse(h.new)[`f${i}`] === i);
        expect(own).toHaveLength(1);
      });
      await Promise.all([...puts, ...patches]);
      expect(await readRows(dbPath, "SELECT count(*) AS n FROM state_history")).toEqual([{ n: 60 }]);
    });

    it("a commit that fails (history insert aborted by a trigger) leaves neither the value nor the history", async () => {
      const { app } = await start();
      expect((await app.inject({ method: "PUT", url: "/state/audit:kept", payload: { v: 1 } })).statusCode).toBe(201);
      await readRows(
        dbPath,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON state_history WHEN NEW.key LIKE 'audit:%' BEGIN SELECT RAISE(ABORT, 'history refused'); END",
      );

      const created = await app.inject({ method: "PUT", url: "/state/audit:new", payload: { v: 1 } });
      expect(created.statusCode).toBe(500);
      const updated = await app.inject({ method: "PUT", url: "/state/audit:kept", payload: { v: 2 } });
      expect(updated.statusCode).toBe(500);
      expect((await app.inject({ method: "DELETE", url: "/state/audit:kept" })).statusCode).toBe(500);

      expect(await readRows(dbPath, "SELECT key, value FROM state_store WHERE key LIKE 'audit:%'")).toEqual([
        { key: "audit:kept", value: JSON.stringify({ v: 1 }) },
      ]);
      expect(await readRows(dbPath, "SELECT key, transition FROM state_history WHERE key LIKE 'audit:%'")).toEqual([
        { key: "audit:kept", transition: "create" },
      ]);
      expect((await app.inject({ url: "/state/audit:new" })).statusCode).toBe(404);

      // A batch is one transaction: the op whose history is refused takes the others with it.
      const err = await app.bridge.store
        .write([
          { key: "batch:ok", value: { v: 1 } },
          { key: "audit:x", value: { v: 1 } },
        ])
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(StoreWriteError);
      expect((err as Error).message).toContain("history refused");
      expect(await readRows(dbPath, "SELECT key FROM state_store WHERE key IN ('batch:ok', 'audit:x')")).toEqual([]);
      expect(await readRows(dbPath, "SELECT key FROM state_history WHERE key IN ('batch:ok', 'audit:x')")).toEqual([]);

      // The store keeps working for everything else.
      expect((await app.inject({ method: "PUT", url: "/state/other:k", payload: { v: 1 } })).statusCode).toBe(201);
      expect(await readRows(dbPath, "SELECT transition FROM state_history WHERE key = 'other:k'")).toEqual([{ transition: "create" }]);
    });
  });

  describe("a damaged database at start", () => {
    it("is moved aside and the newest backup restored, reported by GET /backups and an error-level log line", async () => {
      const first = await start();
      expect((await first.app.inject({ url: "/backups" })).json()).toMatchObject({ restored_at_start: null });
      await first.app.inject({ method: "PUT", url: "/state/user:a", payload: { v: 1 } });
      const backup = await first.app.inject({ method: "POST", url: "/backups" });
      expect(backup.statusCode).toBe(201);
      const backupFile = (backup.json() as { file: string }).file;
      // Written after the backup: lost with the damaged file.
      await first.app.inject({ method: "PUT", url: "/state/user:a", payload: { v: 2 } });
      await first.app.inject({ method: "PUT", url: "/state/user:b", payload: { v: 1 } });
      await stop(first);

      await damage(dbPath, 0, 100);
      const damagedHash = await sha256(dbPath);

      const { app, logs } = await start();
      const report = (await app.inject({ url: "/backups" })).json() as {
        restored_at_start: { backup: string; backup_created_at: string; quarantined_to: string; at: string } | null;
      };
      expect(report.restored_at_start).toMatchObject({ backup: backupFile, quarantined_to: expect.stringMatching(/state\.db\.corrupt\./) });
      const quarantined = report.restored_at_start?.quarantined_to as string;
      expect(await sha256(quarantined)).toBe(damagedHash);

      const line = logs.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => l.msg.includes("was restored from backup"));
      expect(line?.level).toBe(50);
      expect(line?.msg).toContain(backupFile);

      expect((await app.inject({ url: "/state/user:a" })).json()).toMatchObject({ value: { v: 1 } });
      expect((await app.inject({ url: "/state/user:b" })).statusCode).toBe(404);
      expect((await app.inject({ method: "PUT", url: "/state/user:c", payload: { v: 1 } })).statusCode).toBe(201);
      expect(await readRows(dbPath, "PRAGMA integrity_check")).toEqual([{ integrity_check: "ok" }]);
    });

    it("without a backup refuses to start (StoreCorruptError) and moves the file aside, never replacing it with an empty one", async () => {
      const first = await start();
      await first.app.inject({ method: "PUT", url: "/state/user:a", payload: { v: 1 } });
      await stop(first);
      await damage(dbPath, 0, 100);
      const damagedHash = await sha256(dbPath);

      const { err, logs } = await failedStart(await testConfig(dir.path, broker.url));
      expect(err).toBeInstanceOf(StoreCorruptError);
      const corrupt = err as StoreCorruptError;
      expect(corrupt.message).toContain(dbPath);
      expect(corrupt.message).toContain("moved to");
      expect(await sha256(corrupt.quarantinedTo)).toBe(damagedHash);
      await expect(stat(dbPath)).rejects.toMatchObject({ code: "ENOENT" });
      const files = await readdir(dir.path);
      // The lock file stays (it is never unlinked); its holder record is gone with the failed start.
      expect(files.filter((f) => f.startsWith("state.db")).sort()).toEqual(
        [corrupt.quarantinedTo.slice(dir.path.length + 1), "state.db.lock"].sort(),
      );
      expect(logs.some((l) => l.includes("no usable backup"))).toBe(true);
    });
  });

  describe("encryption at rest", () => {
    it("stores values and history as Fernet tokens that the spec procedure decrypts; no plaintext in the file", async () => {
      const key = generateFernetKey();
      const r = await start({ STATE_ENCRYPTION_KEY: key });
      const { app } = r;
      expect((await app.inject({ method: "PUT", url: "/state/secret:a", payload: { marker: MARKER, n: 1 } })).statusCode).toBe(201);
      expect((await app.inject({ method: "PATCH", url: "/state/secret:a", payload: { n: 2 } })).statusCode).toBe(200);

      const [row] = await readRows(dbPath, "SELECT value FROM state_store WHERE key = 'secret:a'");
      const token = String(row?.value);
      expect(token.startsWith("gAAAAA")).toBe(true);
      expect(JSON.parse(fernetDecrypt(key, token).toString("utf8"))).toEqual({ marker: MARKER, n: 2 });
      const history = await readRows(dbPath, "SELECT old, new FROM state_history WHERE key = 'secret:a' ORDER BY id");
      const texts = history.flatMap((h) => [h.old, h.new]).filter((t): t is string => t !== null);
      expect(texts).toHaveLength(3);
      for (const text of texts) {
        expect(text.startsWith("gAAAAA")).toBe(true);
        expect(JSON.parse(fernetDecrypt(key, text).toString("utf8"))).toMatchObject({ marker: MARKER });
      }

      const bytes = async () => {
        const files = (await readdir(dir.path)).filter((f) => f.startsWith("state.db"));
        return Buffer.concat(await Promise.all(files.map((f) => readFile(join(dir.path, f)))));
      };
      expect((await bytes()).includes(MARKER)).toBe(false);
      await stop(r);
      expect((await bytes()).includes(MARKER)).toBe(false);
      expect((await readFile(dbPath)).includes("wb-bridge encryption check")).toBe(false);
      expect(r.logs.join("\n")).not.toContain(MARKER);
      expect(r.logs.join("\n")).not.toContain(key);
    });

    it("reads a token made by the Fernet spec procedure and written straight into the table", async () => {
      const key = generateFernetKey();
      const { app } = await start({ STATE_ENCRYPTION_KEY: key });
      const token = fernetEncrypt(key, JSON.stringify({ from: "outside", list: [1, "ü"] }));
      await readRows(dbPath, "INSERT INTO state_store (key, value, updated_at, version) VALUES ('secret:b', ?, ?, 1)", [token, Date.now()]);
      const res = await app.inject({ url: "/state/secret:b" });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ key: "secret:b", value: { from: "outside", list: [1, "ü"] } });
      // And changes to it are encrypted under the same key.
      await app.inject({ method: "PATCH", url: "/state/secret:b", payload: { n: 1 } });
      const [row] = await readRows(dbPath, "SELECT value FROM state_store WHERE key = 'secret:b'");
      expect(JSON.parse(fernetDecrypt(key, String(row?.value)).toString("utf8"))).toEqual({ from: "outside", list: [1, "ü"], n: 1 });
    });

    it("a wrong or missing key stops the start with a clear message, no key material, and the file untouched", async () => {
      const right = generateFernetKey();
      const wrong = generateFernetKey();
      const first = await start({ STATE_ENCRYPTION_KEY: right });
      await first.app.inject({ method: "PUT", url: "/state/secret:a", payload: { marker: MARKER } });
      await stop(first);
      const hash = await sha256(dbPath);
      const filesBefore = (await readdir(dir.path)).sort();

      const noKeyMaterial = (text: string) => {
        for (const k of [right, wrong]) {
          expect(text).not.toContain(k);
          expect(text).not.toContain(k.slice(0, 16));
        }
        expect(text).not.toContain(MARKER);
      };

      const wrongKey = await failedStart(await testConfig(dir.path, broker.url, {}, { STATE_ENCRYPTION_KEY: wrong }));
      expect(wrongKey.err).toBeInstanceOf(StoreOpenError);
      expect((wrongKey.err as Error).message).toMatch(/cannot be decrypted with the configured key/);
      expect((wrongKey.err as Error).message).toContain(dbPath);
      noKeyMaterial((wrongKey.err as Error).message);
      noKeyMaterial(wrongKey.logs.join("\n"));
      expect(await sha256(dbPath)).toBe(hash);
      expect((await readdir(dir.path)).sort()).toEqual(filesBefore);

      const missing = await failedStart(await testConfig(dir.path, broker.url));
      expect(missing.err).toBeInstanceOf(StoreOpenError);
      expect((missing.err as Error).message).toMatch(/is encrypted/);
      expect((missing.err as Error).message).toContain("STATE_ENCRYPTION_KEY");
      noKeyMaterial((missing.err as Error).message);
      noKeyMaterial(missing.logs.join("\n"));
      expect(await sha256(dbPath)).toBe(hash);
      expect((await readdir(dir.path)).sort()).toEqual(filesBefore);

      // A malformed key is a configuration error that names its position, never its text.
      const garbage = "not-a-fernet-key-but-secret-looking";
      const bad = await buildApp(await testConfig(dir.path, broker.url, {}, { STATE_ENCRYPTION_KEY: `${right},${garbage}` })).then(
        () => null,
        (e: unknown) => e,
      );
      expect(bad).toBeInstanceOf(ConfigError);
      expect((bad as Error).message).toMatch(/key 2 of 2/);
      expect((bad as Error).message).not.toContain(garbage);
      expect((bad as Error).message).not.toContain(right);
      expect(await sha256(dbPath)).toBe(hash);

      // The right key (also second in a list, as during rotation) still opens it.
      const again = await start({ STATE_ENCRYPTION_KEY: `${wrong},${right}` });
      expect((await again.app.inject({ url: "/state/secret:a" })).json()).toMatchObject({ value: { marker: MARKER } });
    });
  });
});
