import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";
import { NotFoundError } from "../shared/errors.js";
import type { BackupManager } from "./backups.js";
import type { ValueCodec } from "./codec.js";
import { type ChangeOptions, INTERNAL_NAMESPACES, namespaceOf, type StateService } from "./service.js";
import { SQLiteStateStore } from "./sqlite-store.js";
import { isUndecodable } from "./store.js";

/**
 * Restores a backup while the bridge runs: a safety backup of the current state is made
 * first, then every key is put back as the backup has it (keys created since are
 * deleted) in one transaction recorded as `restore`, so listeners republish devices.
 * The backup file itself is never opened for writing (a temporary copy is read).
 */
export async function restoreBackupOnline(options: {
  backups: BackupManager;
  state: StateService;
  codec: ValueCodec;
  file: string;
  log: Pick<Logger, "warn">;
  change: ChangeOptions;
}): Promise<{ restored: number; deleted: number; safety_backup: string }> {
  const backup = (await options.backups.list()).find((b) => b.file === options.file);
  if (!backup) throw new NotFoundError("backup_not_found", `unknown backup "${options.file}"`);
  const safety = await options.backups.create("pre-restore");

  const dir = await mkdtemp(join(tmpdir(), "wb-bridge-restore-"));
  try {
    const copy = join(dir, "backup.db");
    await copyFile(backup.path, copy);
    const reader = new SQLiteStateStore({ path: copy, codec: options.codec, history: false });
    await reader.initialize();
    const entries = (await reader.list("")).filter((e) => !INTERNAL_NAMESPACES.includes(namespaceOf(e.key)));
    await reader.close();
    const unreadable = entries.filter(isUndecodable).map((e) => e.key);
    if (unreadable.length > 0) options.log.warn({ keys: unreadable.slice(0, 20) }, "backup holds values that cannot be decoded; skipped");
    const wanted = entries.flatMap((e) => (isUndecodable(e) ? [] : [{ key: e.key, value: e.value, version: e.version }]));
    const keep = new Set(entries.map((e) => e.key));
    const current = await options.state.store.list("");
    const stale = current.filter((e) => !keep.has(e.key) && !INTERNAL_NAMESPACES.includes(namespaceOf(e.key))).map((e) => e.key);
    await options.state.restoreEntries([...wanted, ...stale.map((key) => ({ key, value: null }))], options.change);
    options.log.warn({ backup: backup.file, restored: wanted.length, deleted: stale.length }, "state restored from backup");
    return { restored: wanted.length, deleted: stale.length, safety_backup: safety.file };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
