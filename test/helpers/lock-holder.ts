import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { repoRoot } from "./bridge-process.js";

export interface LockChild {
  proc: ChildProcess;
  /** The pid that takes the lock (the node process, also when started under a shell). */
  pid: Promise<number>;
  /** Resolves with the next line the child prints. */
  nextLine(): Promise<string>;
  exited: Promise<number | null>;
}

const CHILD = ["--import", "tsx", "test/helpers/lock-holder-child.ts"];

/**
 * Starts a lock-holder process and waits until it is loaded ("ready"); `go()` then makes
 * it try the lock. With `zombie`, it runs under a shell that never reaps it, so after a
 * kill it stays a zombie (dead, its pid still taken) until the shell ends.
 */
export async function spawnLockHolder(db: string, owner: string, options: { zombie?: boolean } = {}): Promise<LockChild & { go(): void }> {
  const args = [...CHILD, db, owner].map((a) => `'${a}'`).join(" ");
  const proc = options.zombie
    ? // A background job's stdin would be /dev/null, hence fd 3. `exec sleep` replaces the shell with a process that never calls wait(): the child is never reaped.
      spawn("sh", ["-c", `exec 3<&0; '${process.execPath}' ${args} <&3 & echo "pid $!"; exec sleep 600 3<&-`], {
        cwd: repoRoot,
        stdio: ["pipe", "pipe", "inherit"],
      })
    : spawn(process.execPath, [...CHILD, db, owner], { cwd: repoRoot, stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const queue: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  const nextLine = () => {
    const line = queue.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise<string>((resolve, reject) => {
      waiters.push(resolve);
      void exited.then((code) => reject(new Error(`lock holder exited (${code}) before printing`)));
    });
  };
  let pid: Promise<number> = Promise.resolve(proc.pid!);
  if (options.zombie) {
    const first = await nextLine();
    pid = Promise.resolve(Number(/^pid (\d+)$/.exec(first)?.[1]));
  }
  const ready = await nextLine();
  if (ready !== "ready") throw new Error(`lock holder printed "${ready}" instead of "ready"`);
  return { proc, pid, nextLine, exited, go: () => proc.stdin!.write("go\n") };
}

/** Ends a holder: closing stdin makes it release the lock and exit. */
export async function stopLockHolder(child: LockChild): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.stdin!.end();
  await once(child.proc, "exit");
}
