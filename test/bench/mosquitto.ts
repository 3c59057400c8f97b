import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { freePort } from "../helpers/ports.js";
import type { WindowHooks } from "./closed-loop.js";

/** `getconf CLK_TCK` on Linux: the unit of utime/stime in /proc/<pid>/stat. */
const CLOCK_TICKS_PER_S = 100;

/** User + system CPU seconds a process has used so far, from /proc/<pid>/stat (sync: read at a window's exact edge). */
export function cpuSeconds(pid: number, stat = readFileSync(`/proc/${pid}/stat`, "utf8")): number {
  // Fields 14 and 15, counted after the command name's closing paren (which may hold spaces).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
}

/**
 * CPU seconds of a process's main thread and of all its other threads together (for the
 * bridge: the libuv pool, where SQLite runs, and V8's GC helpers).
 */
export function threadCpuSeconds(pid: number): { main: number; others: number } {
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (tid !== String(pid)) others += cpuSeconds(pid, readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8"));
  }
  return { main: cpuSeconds(pid, readFileSync(`/proc/${pid}/task/${pid}/stat`, "utf8")), others };
}

/**
 * A private mosquitto for the bench, on a free loopback port, with the settings a Wiren
 * Board controller runs it with (`set_tcp_nodelay true`, `max_queued_messages 0`) and no
 * persistence, so its CPU time can be set beside the bridge's in the same run.
 */
export class BenchMosquitto {
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
  ) {}

  static async start(dir: string): Promise<BenchMosquitto> {
    const port = await freePort();
    const conf = join(dir, "mosquitto.conf");
    await writeFile(
      conf,
      `${[
        `listener ${port} 127.0.0.1`,
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "max_queued_messages 0",
        "persistence false",
        "log_type error",
        "log_type notice",
        "log_type information",
        "log_dest stderr",
      ].join("\n")}\n`,
    );
    const proc = spawn("mosquitto", ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`mosquitto did not start on ${port}`)), 5000);
      createInterface({ input: proc.stderr! }).on("line", (line) => {
        if (/mosquitto version \S+ running/.test(line)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot run mosquitto (is it installed?): ${err.message}`));
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`mosquitto exited with ${code} before it was running`));
      });
    });
    return new BenchMosquitto(proc, port);
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new Error("mosquitto has no pid");
    return this.proc.pid;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.proc.once("exit", () => resolve()));
    this.proc.kill("SIGTERM");
    await exited;
  }
}

/** CPU seconds each of `pids` spent inside a closed loop's measured window. */
export function cpuDuringWindow(pids: Record<string, number>): { hooks: WindowHooks; used(): Record<string, number> } {
  const start: Record<string, number> = {};
  const used: Record<string, number> = {};
  return {
    hooks: {
      opened: () => {
        for (const [name, pid] of Object.entries(pids)) start[name] = cpuSeconds(pid);
      },
      closed: () => {
        for (const [name, pid] of Object.entries(pids)) used[name] = cpuSeconds(pid) - (start[name] ?? NaN);
      },
    },
    used: () => used,
  };
}
