import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { repoRoot } from "../helpers/bridge-process.js";

/** Variables the bridge reads that must not leak from the calling shell into a bench child. */
const BRIDGE_ENV = [
  "CONFIG_DIR",
  "STATE_PATH",
  "MQTT_URL",
  "HTTP_HOST",
  "HTTP_PORT",
  "LOG_LEVEL",
  "BACKUP_INTERVAL",
  "STATE_ENCRYPTION_KEY",
];

function inheritedEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of BRIDGE_ENV) delete env[name];
  return env;
}

/**
 * A process under measurement: the bridge's real entry point, or a baseline server, in
 * its own process so that its RSS and disk writes are its own, and so that the load
 * generator (this process) runs on the other core, as a real client would.
 */
export class ChildUnderTest {
  private readonly stderr: string[] = [];
  private readonly exited: Promise<number | null>;
  private readonly lines = new Set<(line: string) => void>();

  private constructor(private readonly proc: ChildProcess) {
    proc.stderr?.on("data", (d: Buffer) => {
      this.stderr.push(d.toString());
      if (this.stderr.length > 50) this.stderr.shift();
    });
    if (proc.stdout)
      createInterface({ input: proc.stdout }).on("line", (line) => {
        for (const l of this.lines) l(line);
      });
    this.exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
  }

  /** Runs an entry point relative to the repo: a `.ts` file under tsx, a `.js` file as it is. */
  static start(entry: string, env: Record<string, string>, nodeArgs: readonly string[] = []): ChildUnderTest {
    const loader = entry.endsWith(".ts") ? ["--import", "tsx"] : [];
    const proc = spawn(process.execPath, [...nodeArgs, ...loader, entry], {
      cwd: repoRoot,
      env: { ...inheritedEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return new ChildUnderTest(proc);
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new Error("child has no pid");
    return this.proc.pid;
  }

  /** Polls `url` until it answers 200; the child's stderr is in the error if it never does. */
  async waitReady(url: string, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let dead = false;
    void this.exited.then(() => (dead = true));
    while (Date.now() < deadline && !dead) {
      const ok = await fetch(url).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${url} not ready (${dead ? "child exited" : "timeout"}):\n${this.stderr.join("")}`);
  }

  /** Resolves with the first stdout line matching `pattern` (for children that say when they are ready). */
  waitForLine(pattern: RegExp, timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => finish(new Error(`no line matching ${pattern} within ${timeoutMs} ms:\n${this.stderr.join("")}`)),
        timeoutMs,
      );
      const onLine = (line: string) => {
        if (pattern.test(line)) finish(null, line);
      };
      const finish = (err: Error | null, line?: string) => {
        clearTimeout(timer);
        this.lines.delete(onLine);
        if (err) reject(err);
        else resolve(line as string);
      };
      this.lines.add(onLine);
      void this.exited.then((code) => finish(new Error(`child exited with ${code}:\n${this.stderr.join("")}`)));
    });
  }

  /** Resident set size in bytes, from /proc (Linux). */
  async rssBytes(): Promise<number> {
    const status = await readFile(`/proc/${this.pid}/status`, "utf8");
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    if (kb === undefined) throw new Error(`no VmRSS for ${this.pid}`);
    return Number(kb) * 1024;
  }

  /** Bytes this process caused to be written to storage (`write_bytes` of /proc/<pid>/io). */
  async writeBytes(): Promise<number> {
    const io = await readFile(`/proc/${this.pid}/io`, "utf8");
    const value = /write_bytes:\s+(\d+)/.exec(io)?.[1];
    if (value === undefined) throw new Error(`no write_bytes for ${this.pid}`);
    return Number(value);
  }

  /** SIGTERM and wait: the bridge's clean shutdown (checkpoint, close) is part of what runs. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 30_000);
    await this.exited;
    clearTimeout(timer);
  }
}
