import { stat } from "node:fs/promises";
import { userInfo } from "node:os";
import type { Logger } from "pino";
import { type AppConfig, type Env, loadConfig } from "../config/loader.js";
import { createStateService } from "../namespaces.js";
import { errorMessage } from "../shared/errors.js";
import type { ValueCodec } from "../state/codec.js";
import { acquireDbLock } from "../state/lock.js";
import { RecoveryPoints } from "../state/recovery.js";
import type { ChangeOptions, StateService } from "../state/service.js";
import { SQLiteStateStore } from "../state/sqlite-store.js";
import type { Output } from "./output.js";

export interface GlobalOptions {
  configDir?: string;
  db?: string;
  json: boolean;
  verbose: boolean;
}

/** What every command gets: global options, output, a logger (silent unless --verbose) and the process's inputs. */
export interface CommandContext {
  globals: GlobalOptions;
  out: Output;
  log: Logger;
  env: Env;
  cwd: string;
  stdin: NodeJS.ReadableStream;
}

/** A failure to report as one line on stderr with exit code 1. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * How a command uses the database:
 * - `read`: no lock (SQLite WAL lets it read while the bridge runs); the file must exist.
 * - `write`: takes the database lock (refused while the bridge or another CLI holds it); the file must exist.
 * - `create`: like `write`, and a missing database is created.
 */
export type Access = "read" | "write" | "create";

export interface StateSession {
  config: AppConfig;
  store: SQLiteStateStore;
  state: StateService;
  recovery: RecoveryPoints;
  codec: ValueCodec;
}

/** The configuration as the bridge would load it; `--db` wins over STATE_PATH and db_path. */
export function loadCliConfig(ctx: CommandContext): Promise<AppConfig> {
  const env = ctx.globals.db !== undefined ? { ...ctx.env, STATE_PATH: ctx.globals.db } : ctx.env;
  return loadConfig({ configDir: ctx.globals.configDir, env, cwd: ctx.cwd });
}

/** Who made a CLI change, for history: the OS user when known. */
export function cliChange(extra: Partial<ChangeOptions> = {}): ChangeOptions {
  return { source: "cli", actor: osUser(), ...extra };
}

function osUser(): string | null {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry (some containers): history records no actor.
    return null;
  }
}

export async function requireDatabase(path: string): Promise<void> {
  const found = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return null;
    throw new CliError(`cannot read state database ${path}: ${err.message}`);
  });
  if (!found) throw new CliError(`no state database at ${path} (see --db, STATE_PATH or persistence.db_path)`);
}

/** Runs `fn`, then `cleanup`; a cleanup failure after a failed `fn` is logged, not allowed to hide the first error. */
export async function finallyAsync<T>(fn: () => Promise<T>, cleanup: () => Promise<void>, log: Logger, what: string): Promise<T> {
  let result: T;
  try {
    result = await fn();
  } catch (err) {
    await cleanup().catch((cleanupErr: unknown) => log.warn({ err: errorMessage(cleanupErr) }, `${what} failed`));
    throw err;
  }
  await cleanup();
  return result;
}

/** Holds the database lock (owner "cli") while `fn` runs. */
export async function withDbLock<T>(ctx: CommandContext, dbPath: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireDbLock(dbPath, "cli");
  return finallyAsync(fn, () => lock.release(), ctx.log, "releasing the database lock");
}

/**
 * Opens the store exactly as the bridge does (same codec from the configured keys,
 * synchronous mode, busy timeout, history on), runs `fn`, and always closes the store and
 * releases the lock. A wrong or missing key fails in initialize(), before anything is written.
 */
export async function withState<T>(
  ctx: CommandContext,
  access: Access,
  fn: (session: StateSession) => Promise<T>,
  loaded?: AppConfig,
): Promise<T> {
  const config = loaded ?? (await loadCliConfig(ctx));
  // Loaded on demand: it brings in the whole bridge, which usage errors and `key generate` do not need.
  const { codecFromKeys } = await import("../lifespan.js");
  const codec = codecFromKeys(config.secrets.encryptionKeys);
  const dbPath = config.paths.db;
  if (access !== "create") await requireDatabase(dbPath);
  const open = async () => {
    const persistence = config.system.persistence;
    const store = new SQLiteStateStore({
      path: dbPath,
      synchronous: persistence.synchronous,
      busyTimeoutMs: persistence.busy_timeout_ms,
      codec,
      history: true,
      // Read commands must never write: no schema upgrade, and they hold no lock.
      readOnly: access === "read",
      log: ctx.log.child({ module: "store" }),
    });
    await store.initialize();
    const state = createStateService(store, ctx.log.child({ module: "state" }), persistence);
    const session: StateSession = { config, store, state, recovery: new RecoveryPoints(state), codec };
    return finallyAsync(
      () => fn(session),
      () => store.close(),
      ctx.log,
      "closing the state store",
    );
  };
  return access === "read" ? open() : withDbLock(ctx, dbPath, open);
}
