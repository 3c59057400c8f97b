import { performance } from "node:perf_hooks";
import { type LatencySummary, summarize } from "./stats.js";

export interface LoopResult {
  /** Operations that started and finished inside the measured window. */
  operations: number;
  seconds: number;
  perSecond: number;
  latency: LatencySummary;
}

export interface WindowHooks {
  opened(): void;
  closed(): void;
}

/** One closed-loop worker: `op` performs a single request and resolves when its answer arrived. */
export type Operation = () => Promise<void>;

/**
 * Runs every worker in a closed loop (next request only after the previous answer) for
 * a warm-up and then a measured window. Only operations entirely inside the window
 * count, so the warm-up tail and the last unfinished operation do not skew the rate.
 */
export async function runClosedLoop(
  workers: readonly Operation[],
  warmupMs: number,
  measureMs: number,
  /** Called when the measured window opens and closes (e.g. to read a process's CPU time). */
  window?: WindowHooks,
): Promise<LoopResult> {
  const start = performance.now();
  const windowStart = start + warmupMs;
  const windowEnd = windowStart + measureMs;
  const samples: number[] = [];
  let closed = false;
  const close = () => {
    if (closed || !window) return;
    closed = true;
    window.closed();
  };
  const timers = window ? [setTimeout(window.opened, warmupMs), setTimeout(close, warmupMs + measureMs)] : [];

  await Promise.all(
    workers.map(async (op) => {
      while (performance.now() < windowEnd) {
        const t0 = performance.now();
        await op();
        const t1 = performance.now();
        if (t0 >= windowStart && t1 <= windowEnd) samples.push(t1 - t0);
      }
    }),
  );

  // The loop ends on the first answer after windowEnd, which can come before the close
  // timer fires (timers run late, a one-client operation takes under a millisecond):
  // close the window then rather than lose it.
  for (const t of timers) clearTimeout(t);
  close();
  const seconds = measureMs / 1000;
  return { operations: samples.length, seconds, perSecond: samples.length / seconds, latency: summarize(samples) };
}
