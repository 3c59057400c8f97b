import { cpus } from "node:os";

export interface BenchSettings {
  /** Concurrent MQTT clients for figure 1 (8 and 64). */
  clientCounts: number[];
  measureMs: number;
  warmupMs: number;
  fsyncMs: number;
  groupCommitRows: number;
  restoreDevices: number;
  opTimeoutMs: number;
  httpSeconds: number;
  httpConnections: number;
  memoryDevices: number;
  memoryActions: number;
  ioSeconds: number;
  /** How long the bridge sits idle after ready before its idle RSS is first read. */
  rssIdleSettleMs: number;
  /**
   * When it is read again, the reading figure 10 is judged by. V8's memory reducer gives back
   * the pages start-up garbage held (about 10 MB) once it judges the process idle, and its
   * allocation-rate test averages over the last ten collections, which are start-up's: on
   * a quick machine it ran 8 s after start, on a slower one (2026-12-07's second session)
   * 16 s after; the RSS then stays where it is.
   */
  rssIdleSteadyMs: number;
  /**
   * How long figure 5's bridge sits idle after its load before the reading it is judged by:
   * V8's memory reducer collects only once the allocation rate has been low for a while
   * (5 s of throughput history, checked on an 8 s timer), 7-12 s after the last action here.
   */
  memorySettleMs: number;
}

function positiveNumber(env: NodeJS.ProcessEnv, name: string, fallback: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || value > max) {
    throw new Error(`${name}: expected a number in (0, ${max}], got "${raw}"`);
  }
  return value;
}

/** The durable bench gives each client its own devices, so clients cannot outnumber devices. */
export const BENCH_DEVICES = 100;

export function readSettings(env: NodeJS.ProcessEnv = process.env): BenchSettings {
  const seconds = positiveNumber(env, "BENCH_SECONDS", 4, 600);
  return {
    clientCounts: [8, 64],
    measureMs: seconds * 1000,
    warmupMs: Math.min(1000, seconds * 200),
    fsyncMs: 2000,
    groupCommitRows: 20_000,
    restoreDevices: 10_000,
    opTimeoutMs: 5000,
    httpSeconds: seconds,
    httpConnections: 32,
    memoryDevices: 1000,
    memoryActions: Math.floor(positiveNumber(env, "BENCH_MEMORY_ACTIONS", 100_000, 10_000_000)),
    // The disk-wear figure needs minutes to be steady: BENCH_LONG=1 (or BENCH_IO_SECONDS) runs it longer.
    ioSeconds: Math.floor(positiveNumber(env, "BENCH_IO_SECONDS", env.BENCH_LONG === "1" ? 600 : 30, 3600)),
    rssIdleSettleMs: 2000,
    rssIdleSteadyMs: 30_000,
    memorySettleMs: 30_000,
  };
}

export function describeHost(): string {
  const cpu = cpus();
  return `node ${process.version}, ${cpu.length} CPU(s) ${cpu[0]?.model ?? "unknown"}`;
}
