import { mkdir, open, readFile, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { StoreOpenError } from "./store.js";

export interface DbLock {
  readonly path: string;
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * `<db>.lock` holding the owner's pid: the bridge and the CLI's exclusive commands take
 * it, so neither changes the database under the other. A lock left by a process that
 * no longer runs (kill -9, power loss) is taken over.
 */
export async function acquireDbLock(dbPath: string, owner: string): Promise<DbLock> {
  const path = `${dbPath}.lock`;
  try {
    await mkdir(dirname(dbPath), { recursive: true });
  } catch (err) {
    throw new StoreOpenError(`cannot create directory for state database ${dbPath}: ${(err as Error).message}`, { cause: err });
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, "wx");
      await handle.writeFile(JSON.stringify({ pid: process.pid, owner, since: new Date().toISOString() }));
      await handle.close();
      return {
        path,
        release: async () => {
          await unlink(path).catch((err: unknown) => {
            if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
          });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new StoreOpenError(`cannot create lock file ${path}: ${(err as Error).message}`, { cause: err });
      }
      const holder = await readLock(path);
      if (holder && holder.pid !== process.pid && alive(holder.pid)) {
        throw new StoreOpenError(
          `state database ${dbPath} is in use by ${holder.owner ?? "another process"} (pid ${holder.pid}); stop it first`,
        );
      }
      await unlink(path).catch(() => undefined);
    }
  }
  throw new StoreOpenError(`cannot take the lock ${path}`);
}

/** Who holds the lock, if anyone alive does. */
export async function lockHolder(dbPath: string): Promise<{ pid: number; owner?: string } | null> {
  const holder = await readLock(`${dbPath}.lock`);
  return holder && alive(holder.pid) ? holder : null;
}

async function readLock(path: string): Promise<{ pid: number; owner?: string } | null> {
  try {
    const parsed = JSON.parse(await readFile(path, "utf8")) as { pid?: unknown; owner?: unknown };
    return typeof parsed.pid === "number" ? { pid: parsed.pid, owner: typeof parsed.owner === "string" ? parsed.owner : undefined } : null;
  } catch {
    // Unreadable or half-written: treat as no holder; the next open("wx") decides.
    return null;
  }
}
