import { copyFile, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join, resolve, sep } from "node:path";
import type { AppConfig } from "../config/loader.js";
import { BackupManager, restoreBackupFile } from "../state/backups.js";
import { SQLiteStateStore } from "../state/sqlite-store.js";
import { StoreCorruptError, StoreOpenError } from "../state/store.js";
import type { GroupSpec } from "./args.js";
import { CliError, type CommandContext, finallyAsync, loadCliConfig, requireDatabase, withDbLock } from "./context.js";
import { table } from "./output.js";

function manager(ctx: CommandContext, config: AppConfig): BackupManager {
  const persistence = config.system.persistence;
  return new BackupManager({
    dbPath: config.paths.db,
    dir: config.paths.backups,
    keep: persistence.backups.keep,
    // The CLI never schedules; create() is one backup, rotated like the bridge's.
    intervalS: 0,
    busyTimeoutMs: persistence.busy_timeout_ms,
    log: ctx.log.child({ module: "backups" }),
  });
}

/** A path as given, else a file name from `backup list` in the backup directory. */
async function locateBackup(ctx: CommandContext, config: AppConfig, file: string): Promise<string> {
  const given = resolve(ctx.cwd, file);
  if (await isFile(given)) return given;
  if (!file.includes(sep) && !file.includes("/")) {
    const inDir = join(config.paths.backups, file);
    if (await isFile(inDir)) return inDir;
  }
  throw new CliError(`no backup file ${file} (neither a path nor a file in ${config.paths.backups})`);
}

async function isFile(path: string): Promise<boolean> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") return null;
    throw new CliError(`cannot read ${path}: ${err.message}`);
  });
  return info?.isFile() ?? false;
}

/**
 * Opens a copy of the backup with the configured key(s), so a backup the bridge could not
 * open afterwards is refused before the database is touched. The backup itself is never opened.
 */
async function checkOpens(ctx: CommandContext, config: AppConfig, backup: string): Promise<void> {
  const { codecFromKeys } = await import("../lifespan.js");
  const codec = codecFromKeys(config.secrets.encryptionKeys);
  const dir = await mkdtemp(join(tmpdir(), "wb-bridge-cli-"));
  const copy = join(dir, "backup.db");
  await finallyAsync(
    async () => {
      await copyFile(backup, copy);
      const store = new SQLiteStateStore({ path: copy, codec, history: false, log: ctx.log.child({ module: "store" }) });
      try {
        await store.initialize();
      } catch (err) {
        if (err instanceof StoreOpenError || err instanceof StoreCorruptError) {
          throw new CliError(`refusing to restore ${backup}: ${err.message.split(copy).join(basename(backup))}`);
        }
        throw err;
      }
      await store.close();
    },
    () => rm(dir, { recursive: true, force: true }),
    ctx.log,
    "removing the temporary copy",
  );
}

export const backupGroup: GroupSpec<CommandContext> = {
  name: "backup",
  summary: "Verified copies of the database file (VACUUM INTO), kept in the backup directory.",
  commands: [
    {
      name: "create",
      summary: "make a verified backup now (safe while the bridge runs); old ones are rotated out",
      async run(ctx) {
        const config = await loadCliConfig(ctx);
        await requireDatabase(config.paths.db);
        const info = await manager(ctx, config).create("cli");
        ctx.out.result(info, () => `backup created: ${info.path} (${info.size_bytes} bytes)`);
      },
    },
    {
      name: "list",
      summary: "list backups, newest first",
      async run(ctx) {
        const config = await loadCliConfig(ctx);
        const backups = await manager(ctx, config).list();
        ctx.out.result(backups, () =>
          backups.length === 0
            ? `(no backups in ${config.paths.backups})`
            : table(
                ["FILE", "CREATED_AT", "SIZE"],
                backups.map((b) => [b.file, b.created_at, String(b.size_bytes)]),
              ),
        );
      },
    },
    {
      name: "restore",
      summary: "install a backup as the database (the bridge must be stopped)",
      args: [{ name: "file" }],
      flags: { replace: { kind: "boolean", help: "replace an existing database; it is moved aside to <db>.replaced.<time>, not deleted" } },
      notes: [
        "<file> is a path, or a file name from `backup list`.",
        "The backup is verified and must open with the configured key(s) before anything changes.",
      ],
      async run(ctx, input) {
        const config = await loadCliConfig(ctx);
        const dbPath = config.paths.db;
        const backupPath = await locateBackup(ctx, config, input.args[0] ?? "");
        const replace = input.flags.bool("replace");
        const result = await withDbLock(ctx, dbPath, async () => {
          if (!replace && (await isFile(dbPath))) {
            throw new CliError(`${dbPath} exists; add --replace to replace it (it is moved aside, not deleted)`);
          }
          await checkOpens(ctx, config, backupPath);
          return restoreBackupFile({
            dbPath,
            backupPath,
            replace,
            busyTimeoutMs: config.system.persistence.busy_timeout_ms,
            log: ctx.log.child({ module: "backups" }),
          });
        });
        ctx.out.result({ db: dbPath, restored: result.restored, replaced_to: result.replacedTo }, () => [
          `restored ${dbPath} from ${result.restored.path} (taken ${result.restored.created_at})`,
          result.replacedTo ? `the previous database was moved to ${result.replacedTo}` : "there was no previous database",
        ]);
      },
    },
  ],
};
