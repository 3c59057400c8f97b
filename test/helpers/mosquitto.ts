import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { freePort } from "./ports.js";

/** Whether a mosquitto binary can be run here; CI must have one (the tests then fail loudly). */
export function mosquittoAvailable(): boolean {
  return spawnSync("mosquitto", ["-h"], { stdio: "ignore" }).error === undefined;
}

/**
 * A private mosquitto (no persistence, local only) on a free port, for tests that must
 * stop and restart a real broker without touching the system's one on 1883.
 */
export class PrivateMosquitto {
  private proc: ChildProcess | null = null;

  private constructor(readonly port: number) {}

  static async start(): Promise<PrivateMosquitto> {
    const broker = new PrivateMosquitto(await freePort());
    await broker.restart();
    return broker;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** Starts it again on the same port, empty: retained messages are gone. */
  async restart(): Promise<void> {
    await this.stop();
    const proc = spawn("mosquitto", ["-p", String(this.port), "-v"], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = proc;
    // mosquitto logs "... running" once its listeners are open.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`mosquitto did not start on ${this.port}`)), 5000);
      const lines = createInterface({ input: proc.stderr! });
      lines.on("line", (line) => {
        if (/mosquitto version \S+ running/.test(line)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`mosquitto exited with ${code} before it was running`));
      });
    });
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGKILL");
    await exited;
  }
}
