import { performance } from "node:perf_hooks";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { type LatencySummary, summarize } from "./stats.js";

export interface StoreWriteResult {
  sequentialWrites: number;
  sequentialSeconds: number;
  /** One awaited set() at a time: one transaction, so one WAL fsync, per write. */
  sequentialPerSecond: number;
  /** Time of one awaited set(): a transaction and its fsync. */
  sequentialLatency: LatencySummary;
  groupRows: number;
  groupSeconds: number;
  /** Many set()s in flight at once: group commit folds them into few transactions. */
  groupRowsPerSecond: number;
}

export async function benchStoreWrites(dbPath: string, settings: { fsyncMs: number; groupCommitRows: number }): Promise<StoreWriteResult> {
  const store = new SQLiteStateStore({ path: dbPath, synchronous: "full" });
  await store.initialize();
  try {
    const value = { driver: "simulated", version: 1, state: { power: false, volume: 0, muted: false, input: "hdmi1" } };

    let writes = 0;
    const samples: number[] = [];
    const start = performance.now();
    const end = start + settings.fsyncMs;
    while (performance.now() < end) {
      // A handful of keys keeps the table small, as on the bridge, while every write still changes a row.
      const t0 = performance.now();
      await store.set(`bench:seq_${writes % 16}`, { ...value, state: { ...value.state, volume: writes % 101 } });
      samples.push(performance.now() - t0);
      writes += 1;
    }
    const sequentialSeconds = (performance.now() - start) / 1000;

    const groupStart = performance.now();
    await Promise.all(
      Array.from({ length: settings.groupCommitRows }, (_, i) =>
        store.set(`bench:group_${String(i).padStart(5, "0")}`, { ...value, state: { ...value.state, volume: i % 101 } }),
      ),
    );
    const groupSeconds = (performance.now() - groupStart) / 1000;

    return {
      sequentialWrites: writes,
      sequentialSeconds,
      sequentialPerSecond: writes / sequentialSeconds,
      sequentialLatency: summarize(samples),
      groupRows: settings.groupCommitRows,
      groupSeconds,
      groupRowsPerSecond: settings.groupCommitRows / groupSeconds,
    };
  } finally {
    await store.close();
  }
}
