import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateFernetKey } from "../../app/state/fernet.js";
import { lockHolder } from "../../app/state/lock.js";
import { tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { spawnLockHolder, stopLockHolder } from "../helpers/lock-holder.js";
import { execSql, readRows } from "../helpers/sqlite.js";

const repoRoot = join(import.meta.dirname, "../..");

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  env?: Record<string, string>;
  input?: string;
  cwd?: string;
}

/** The environment of the test run without anything that would steer the CLI. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !["STATE_ENCRYPTION_KEY", "STATE_PATH", "CONFIG_DIR", "LOG_LEVEL"].includes(name)) env[name] = value;
  }
  return env;
}

/** Runs a command to its end as a child process and collects everything it wrote. */
function spawnToEnd(command: string[], options: RunOptions = {}): Promise<CliResult> {
  const proc = spawn(process.execPath, command, {
    cwd: options.cwd ?? repoRoot,
    env: { ...cleanEnv(), ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  proc.stdin.end(options.input ?? "");
  return new Promise((resolve, reject) => {
    proc.once("error", reject);
    proc.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The real CLI entry point under tsx, as `npm run cli` runs it. */
function cli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  return spawnToEnd(["--import", "tsx", "app/cli/main.ts", ...args], options);
}

function json<T>(result: CliResult): T {
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as T;
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

interface EntryView {
  key: string;
  value: Record<string, unknown>;
  version: number;
  expires_at: string | null;
}

interface HistoryItem {
  key: string;
  old: Record<string, unknown> | null;
  new: Record<string, unknown> | null;
  transition: string;
  source: string;
}

describe("wb-bridge CLI (real process)", { timeout: 90_000 }, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let configDir: string;
  let db: string;
  /** The CLI on this test's config directory and database. */
  let run: (args: string[], options?: RunOptions) => Promise<CliResult>;

  beforeEach(async () => {
    dir = await tempDir("wb-bridge-cli-");
    configDir = await writeConfigDir(dir.path, { system: { logging: { level: "info" } } });
    db = join(dir.path, "data", "state.db");
    run = (args, options) => cli(["--config-dir", configDir, "--db", db, ...args], options);
  });

  afterEach(async () => {
    await dir.remove();
  });

  it("a read command on an old-schema database changes nothing: no ALTER TABLE, no new tables, no lock", async () => {
    await mkdir(join(dir.path, "data"), { recursive: true });
    await execSql(
      db,
      `CREATE TABLE state_store (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);
       INSERT INTO state_store VALUES ('appliance:tv', '{"power":true}', 1);`,
    );
    const before = await sha256(db);
    const result = await run(["state", "list"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^wb-bridge: .*state\.db has an older schema .*a read command does not upgrade it/);
    expect(await sha256(db)).toBe(before);
    expect(await readdir(join(dir.path, "data"))).toEqual(["state.db"]);
    expect((await readRows(db, "PRAGMA table_info(state_store)")).map((c) => c.name)).toEqual(["key", "value", "updated_at"]);
  });

  it("state set/get/list --filter/delete/history round trip, written with source cli", async () => {
    const missing = await run(["state", "list"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^wb-bridge: no state database at .*state\.db/);
    expect(existsSync(db)).toBe(false);

    expect((await run(["state", "set", "appliance:tv", '{"power":true,"input":"hdmi1","volume":10}'])).code).toBe(0);
    expect((await run(["state", "set", "appliance:amp", '{"power":false,"input":"tv"}', "--ttl", "3600"])).code).toBe(0);
    expect((await run(["state", "set", "scene:evening", '{"power":true}'])).code).toBe(0);

    const [tv, amp, human] = await Promise.all([
      run(["state", "get", "appliance:tv", "--json"]),
      run(["--json", "state", "get", "appliance:amp"]),
      run(["state", "get", "appliance:tv"]),
    ]);
    const tvView = json<EntryView>(tv);
    expect(tvView).toMatchObject({ key: "appliance:tv", value: { power: true, input: "hdmi1", volume: 10 }, version: 1, expires_at: null });
    const expiresIn = Date.parse(json<EntryView>(amp).expires_at ?? "") - Date.now();
    expect(expiresIn).toBeGreaterThan(3500_000);
    expect(expiresIn).toBeLessThanOrEqual(3600_000);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain('"input": "hdmi1"');
    expect(human.stdout).toMatch(/version: 1\nupdated_at: \d{4}-.*\nexpires_at: never\n$/);

    const [filtered, byPrefix, firstPage] = await Promise.all([
      run(["state", "list", "--filter", "power=true", "--filter", "input=hdmi1", "--json"]),
      run(["state", "list", "--prefix", "appliance:", "--json"]),
      run(["state", "list", "--limit", "2", "--json"]),
    ]);
    const keys = (r: CliResult) => json<{ items: EntryView[] }>(r).items.map((e) => e.key);
    expect(keys(filtered)).toEqual(["appliance:tv"]);
    expect(keys(byPrefix)).toEqual(["appliance:amp", "appliance:tv"]);
    const page = json<{ items: EntryView[]; next_cursor: string | null }>(firstPage);
    expect(page.items.map((e) => e.key)).toEqual(["appliance:amp", "appliance:tv"]);
    expect(page.next_cursor).not.toBeNull();
    expect(keys(await run(["state", "list", "--limit", "2", "--cursor", page.next_cursor ?? "", "--json"]))).toEqual(["scene:evening"]);

    expect((await run(["state", "delete", "appliance:amp"])).stdout).toBe("deleted appliance:amp\n");
    const gone = await run(["state", "get", "appliance:amp"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe("wb-bridge: no such key: appliance:amp\n");
    expect((await run(["state", "delete", "appliance:amp"])).code).toBe(1);
    const internal = await run(["state", "set", "recovery:rp-1", "{}"]);
    expect(internal.code).toBe(1);
    expect(internal.stderr).toBe("wb-bridge: recovery:* is kept by the state layer itself; use the recovery commands\n");

    const history = json<{ items: HistoryItem[] }>(await run(["state", "history", "--json"])).items;
    expect(history.map((h) => [h.key, h.transition, h.source])).toEqual([
      ["appliance:amp", "delete", "cli"],
      ["scene:evening", "create", "cli"],
      ["appliance:amp", "create", "cli"],
      ["appliance:tv", "create", "cli"],
    ]);
    // The history cursor the CLI prints is taken back; one it did not issue is refused.
    const historyPage = json<{ items: HistoryItem[]; next_cursor: string | null }>(
      await run(["state", "history", "--limit", "2", "--json"]),
    );
    expect(historyPage.next_cursor).not.toBeNull();
    const nextHistory = await run(["state", "history", "--limit", "2", "--cursor", historyPage.next_cursor ?? "", "--json"]);
    expect(json<{ items: HistoryItem[] }>(nextHistory).items.map((h) => [h.key, h.transition])).toEqual([
      ["appliance:amp", "create"],
      ["appliance:tv", "create"],
    ]);
    const foreign = await run(["state", "history", "--cursor", "1e3"]);
    expect(foreign.code).toBe(1);
    expect(foreign.stderr).toMatch(/^wb-bridge: invalid cursor/);
    const deletes = json<{ items: HistoryItem[] }>(
      await run(["state", "history", "appliance:amp", "--transition", "delete", "--json"]),
    ).items;
    expect(deletes).toHaveLength(1);
    expect(deletes[0]).toMatchObject({ old: { power: false, input: "tv" }, new: null, at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });

    const migrate = await run(["migrate"]);
    expect(migrate.code).toBe(0);
    expect(migrate.stdout).toMatch(/^migrated 0 values; refused 0/);
  });

  it("export then import into a fresh database gives the same values; recovery points only with --all", async () => {
    await run(["state", "set", "appliance:tv", '{"power":true,"nested":{"list":[1,"two",null]}}']);
    await run(["state", "set", "appliance:amp", '{"power":false}']);
    await run(["state", "set", "scene:last", '{"scenario_id":"movie"}']);
    expect((await run(["recovery", "create", "--label", "before export"])).code).toBe(0);

    const [exported, everything] = await Promise.all([run(["export"]), run(["export", "--all"])]);
    expect(exported.code).toBe(0);
    expect(exported.stderr).toBe("");
    const lines = exported.stdout
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { key: "appliance:amp", value: { power: false }, version: 1, expires_at: null },
      { key: "appliance:tv", value: { power: true, nested: { list: [1, "two", null] } }, version: 1, expires_at: null },
      { key: "scene:last", value: { scenario_id: "movie" }, version: 1, expires_at: null },
    ]);
    expect(everything.stdout.split("\n").filter((l) => l.includes('"key":"recovery:'))).toHaveLength(1);
    const devicesOnly = await run(["export", "--prefix", "appliance:"]);
    expect(devicesOnly.stdout.trimEnd().split("\n")).toHaveLength(2);

    // Into a fresh database named by STATE_PATH this time, from stdin.
    const fresh = join(dir.path, "fresh", "state.db");
    const other = (args: string[], options: RunOptions = {}) =>
      cli(["--config-dir", configDir, ...args], { ...options, env: { STATE_PATH: fresh, ...options.env } });
    const imported = await other(["import"], { input: exported.stdout });
    expect(imported.stderr).toBe("");
    expect(imported.code).toBe(0);
    expect(imported.stdout).toBe("imported 3 entries\n");
    expect((await other(["export"])).stdout).toBe(exported.stdout);
    const history = json<{ items: HistoryItem[] }>(await other(["state", "history", "--json"])).items;
    expect(history.map((h) => [h.transition, h.source])).toEqual([
      ["restore", "cli"],
      ["restore", "cli"],
      ["restore", "cli"],
    ]);
  });

  it("import checks every line first: bad lines are named and nothing is written unless --skip-invalid", async () => {
    const file = join(dir.path, "in.jsonl");
    await writeFile(
      file,
      [
        '{"key":"appliance:tv","value":{"power":true}}',
        "{not json",
        '{"key":"NoNamespace","value":{}}',
        '{"key":"appliance:amp","value":[1,2]}',
        "",
        '{"key":"appliance:lamp","value":{"on":1},"version":2}',
      ].join("\n"),
    );
    const refused = await run(["import", file]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("wb-bridge: line 2: not valid JSON");
    expect(refused.stderr).toContain("wb-bridge: line 3: key: invalid state key");
    expect(refused.stderr).toContain("wb-bridge: line 4: value:");
    expect(refused.stderr).toContain("import refused: 3 invalid lines; nothing was written");
    expect(existsSync(db)).toBe(false);

    const partial = await run(["import", "-", "--skip-invalid", "--json"], { input: await readFile(file, "utf8") });
    expect(partial.code).toBe(0);
    expect(JSON.parse(partial.stdout)).toMatchObject({ imported: 2, invalid: 3 });
    const lamp = json<EntryView>(await run(["state", "get", "appliance:lamp", "--json"]));
    expect(lamp).toMatchObject({ value: { on: 1 }, version: 2 });
    expect((await run(["state", "get", "appliance:amp"])).code).toBe(1);
  });

  it("recovery create/list/restore puts the keys of its scope back and deletes keys created since", async () => {
    await run(["state", "set", "appliance:tv", '{"power":true}']);
    await run(["state", "set", "other:x", '{"n":1}']);
    const created = json<{ id: string; keys: number }>(
      await run(["recovery", "create", "--label", "base", "--prefix", "appliance:", "--json"]),
    );
    expect(created.keys).toBe(1);

    await run(["state", "set", "appliance:tv", '{"power":false}']);
    await run(["state", "set", "appliance:new", '{"power":true}']);
    await run(["state", "set", "other:x", '{"n":2}']);

    const listed = json<Array<{ id: string; label: string }>>(await run(["recovery", "list", "--json"]));
    expect(listed.map((p) => [p.id, p.label])).toEqual([[created.id, "base"]]);
    const restored = await run(["recovery", "restore", created.id]);
    expect(restored.code).toBe(0);
    expect(restored.stdout).toBe(`restored 1 key from ${created.id}; deleted 1 key created since\n`);

    expect(json<EntryView>(await run(["state", "get", "appliance:tv", "--json"])).value).toEqual({ power: true });
    expect((await run(["state", "get", "appliance:new"])).code).toBe(1);
    expect(json<EntryView>(await run(["state", "get", "other:x", "--json"])).value).toEqual({ n: 2 });
    const restores = json<{ items: HistoryItem[] }>(await run(["state", "history", "--transition", "restore", "--json"])).items;
    expect(restores.map((h) => h.key).sort()).toEqual(["appliance:new", "appliance:tv"]);

    const unknown = await run(["recovery", "restore", "rp-nope"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('wb-bridge: unknown recovery point "rp-nope"\n');
    await run(["recovery", "create", "--label", "second"]);
    expect((await run(["recovery", "prune", "--keep", "1"])).stdout).toBe("deleted 1 recovery point\n");
    expect(json<unknown[]>(await run(["recovery", "list", "--json"]))).toHaveLength(1);
  });

  it("backup create/list; backup restore is refused over an existing database without --replace and works with it", async () => {
    await run(["state", "set", "appliance:tv", '{"v":1}']);
    const backup = json<{ file: string; path: string }>(await run(["backup", "create", "--json"]));
    expect(backup.file).toMatch(/^state_store-\d{8}T\d{9}Z\.db$/);
    expect(existsSync(backup.path)).toBe(true);
    const listed = json<Array<{ file: string }>>(await run(["backup", "list", "--json"]));
    expect(listed.map((b) => b.file)).toEqual([backup.file]);

    await run(["state", "set", "appliance:tv", '{"v":2}']);
    const before = await sha256(db);
    const refused = await run(["backup", "restore", backup.file]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/state\.db exists; add --replace/);
    expect(await sha256(db)).toBe(before);
    expect(await lockHolder(db)).toBeNull();

    const restored = await run(["backup", "restore", backup.file, "--replace", "--json"]);
    expect(restored.stderr).toBe("");
    const result = JSON.parse(restored.stdout) as { replaced_to: string };
    expect(result.replaced_to).toMatch(/state\.db\.replaced\./);
    expect(await sha256(result.replaced_to)).toBe(before);
    expect(json<EntryView>(await run(["state", "get", "appliance:tv", "--json"])).value).toEqual({ v: 1 });

    // A path works too, and into a database that does not exist yet --replace is not needed.
    const elsewhere = join(dir.path, "elsewhere", "state.db");
    const human = await cli(["--config-dir", configDir, "--db", elsewhere, "backup", "restore", backup.path]);
    expect(human.code).toBe(0);
    expect(human.stdout).toContain("there was no previous database");
    expect(
      json<EntryView>(await cli(["--config-dir", configDir, "--db", elsewhere, "state", "get", "appliance:tv", "--json"])).value,
    ).toEqual({ v: 1 });
  });

  it("key generate prints only a key; key rotate re-encrypts what the old key wrote so the new key alone reads it", async () => {
    const [first, second] = await Promise.all([run(["key", "generate"]), run(["key", "generate"])]);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe("");
    expect(first.stdout).toMatch(/^[A-Za-z0-9_-]{43}=\n$/);
    const newKey = first.stdout.trim();
    const oldKey = second.stdout.trim();
    expect(newKey).not.toBe(oldKey);

    const withKeys = (keys: string) => ({ env: { STATE_ENCRYPTION_KEY: keys } });
    await run(["state", "set", "appliance:tv", '{"a":1}'], withKeys(oldKey));
    await run(["state", "set", "appliance:tv", '{"a":2}'], withKeys(oldKey));
    const [row] = await readRows(db, "SELECT value FROM state_store WHERE key = 'appliance:tv'");
    expect(String(row?.value)).toMatch(/^gAAAAA/);
    expect((await run(["state", "get", "appliance:tv"], withKeys(newKey))).code).toBe(1);

    const rotated = await run(["key", "rotate", "--json"], withKeys(`${newKey},${oldKey}`));
    expect(rotated.stderr).toBe("");
    expect(rotated.code).toBe(0);
    expect(JSON.parse(rotated.stdout)).toMatchObject({ values: 1, history: 2 });
    expect(rotated.stdout).not.toContain(newKey);
    expect(rotated.stdout).not.toContain(oldKey);

    expect(json<EntryView>(await run(["state", "get", "appliance:tv", "--json"], withKeys(newKey))).value).toEqual({ a: 2 });
    const history = json<{ items: HistoryItem[] }>(await run(["state", "history", "appliance:tv", "--json"], withKeys(newKey))).items;
    expect(history.map((h) => [h.old, h.new])).toEqual([
      [{ a: 1 }, { a: 2 }],
      [null, { a: 1 }],
    ]);
    const again = await run(["key", "rotate", "--json"], withKeys(newKey));
    expect(JSON.parse(again.stdout)).toMatchObject({ values: 0, history: 0 });

    const noKey = await run(["key", "rotate"]);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/^wb-bridge: no encryption key is configured: set STATE_ENCRYPTION_KEY/);
  });

  it("a wrong or missing key exits 1 with the store's message and leaves the database file unchanged", async () => {
    const right = generateFernetKey();
    const wrong = generateFernetKey();
    expect((await run(["state", "set", "appliance:tv", '{"secret":"s3cr3t-value"}'], { env: { STATE_ENCRYPTION_KEY: right } })).code).toBe(
      0,
    );
    const before = await sha256(db);

    const attempts = await Promise.all([
      run(["state", "get", "appliance:tv"], { env: { STATE_ENCRYPTION_KEY: wrong } }),
      run(["state", "set", "appliance:tv", '{"secret":"other"}'], { env: { STATE_ENCRYPTION_KEY: wrong } }),
      run(["export"], { env: { STATE_ENCRYPTION_KEY: wrong } }),
    ]);
    for (const attempt of attempts) {
      expect(attempt.code).toBe(1);
      expect(attempt.stdout).toBe("");
      expect(attempt.stderr).toMatch(
        /^wb-bridge: state database .*state\.db cannot be decrypted with the configured key\(s\); nothing was changed\n$/,
      );
      expect(attempt.stderr).not.toContain(right);
      expect(attempt.stderr).not.toContain(wrong);
    }
    const rotate = await run(["key", "rotate"], { env: { STATE_ENCRYPTION_KEY: wrong } });
    expect(rotate.code).toBe(1);
    expect(rotate.stderr).toContain("cannot be decrypted");
    const none = await run(["state", "get", "appliance:tv"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/is encrypted; configure its key/);

    expect(await sha256(db)).toBe(before);
    expect(await lockHolder(db)).toBeNull();
    expect(json<EntryView>(await run(["state", "get", "appliance:tv", "--json"], { env: { STATE_ENCRYPTION_KEY: right } })).value).toEqual({
      secret: "s3cr3t-value",
    });
  });

  it("while a live process holds the lock, write commands refuse naming its pid and read commands still work", async () => {
    await run(["state", "set", "appliance:tv", '{"power":true}']);
    const backup = json<{ file: string }>(await run(["backup", "create", "--json"]));
    await run(["recovery", "create", "--label", "kept"]);
    // A real bridge-like process holds the lock for the whole test.
    const holder = await spawnLockHolder(db, "wb-bridge");
    holder.go();
    const holderPid = holder.proc.pid!;
    expect(await holder.nextLine()).toBe(`locked ${holderPid}`);

    const writes: Array<[string[], RunOptions?]> = [
      [["state", "set", "appliance:tv", '{"power":false}']],
      [["state", "delete", "appliance:tv"]],
      [["recovery", "create", "--label", "x"]],
      [["recovery", "prune", "--keep", "0"]],
      [["import"], { input: '{"key":"appliance:amp","value":{}}\n' }],
      [["migrate"]],
      [["key", "rotate"], { env: { STATE_ENCRYPTION_KEY: generateFernetKey() } }],
      [["backup", "restore", backup.file, "--replace"]],
    ];
    const refused = await Promise.all(writes.map(([args, options]) => run(args, options)));
    refused.forEach((result, i) => {
      expect(result.code, writes[i]?.[0].join(" ")).toBe(1);
      expect(result.stderr, writes[i]?.[0].join(" ")).toBe(
        `wb-bridge: state database ${db} is in use by wb-bridge (pid ${holderPid}); stop it first\n`,
      );
    });

    const reads = [
      ["state", "get", "appliance:tv"],
      ["state", "list"],
      ["state", "history"],
      ["export"],
      ["backup", "list"],
      ["backup", "create"],
      ["recovery", "list"],
    ];
    const results = await Promise.all(reads.map((args) => run(args)));
    results.forEach((result, i) => {
      expect(result.stderr, reads[i]?.join(" ")).toBe("");
      expect(result.code, reads[i]?.join(" ")).toBe(0);
    });
    expect(results[0]?.stdout).toContain('"power": true');
    expect(await lockHolder(db)).toMatchObject({ pid: holderPid, owner: "wb-bridge" });
    await stopLockHolder(holder);
  });

  it("bad usage exits 2 with the usage on stderr; --help exits 0 with it on stdout", async () => {
    const bad = [
      [],
      ["frobnicate"],
      ["state"],
      ["state", "frob"],
      ["state", "get"],
      ["state", "get", "appliance:tv", "extra"],
      ["state", "list", "--bogus"],
      ["state", "list", "--limit", "zero"],
      ["state", "history", "--transition", "explode"],
      ["state", "set", "appliance:tv", "{not json"],
      ["state", "set", "appliance:tv", "[1]"],
      ["recovery", "create"],
      ["recovery", "create", "--label", "x", "--key", "a:b", "--prefix", "a:"],
      ["recovery", "prune"],
      ["key", "generate", "-x"],
      ["--json"],
    ];
    const results = await Promise.all(bad.map((args) => run(args)));
    results.forEach((result, i) => {
      const label = bad[i]?.join(" ") || "(nothing)";
      expect(result.code, label).toBe(2);
      expect(result.stdout, label).toBe("");
      expect(result.stderr, label).toMatch(/^wb-bridge: .+\n\nUsage: wb-bridge /);
    });
    expect(existsSync(db)).toBe(false);

    const [top, set] = await Promise.all([run(["--help"]), run(["state", "set", "--help"])]);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain("state get <key>");
    expect(top.stdout).toContain("--config-dir <dir>");
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(/^Usage: wb-bridge state set <key> <json> \[flags\]/);
    expect(set.stdout).toContain("--ttl <seconds>");
  });

  it("bin/wb-bridge.js runs the CLI from any working directory and passes its exit code on", async () => {
    const bin = join(repoRoot, "bin", "wb-bridge.js");
    const [generated, usage] = await Promise.all([
      spawnToEnd([bin, "key", "generate"], { cwd: dir.path }),
      spawnToEnd([bin, "state"], { cwd: dir.path }),
    ]);
    expect(generated.code).toBe(0);
    expect(generated.stdout).toMatch(/^[A-Za-z0-9_-]{43}=\n$/);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("Usage: wb-bridge state <command>");
  });
});
