import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { SqliteConnection } from "../../app/state/sqlite-connection.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { type LatencySummary, summarize } from "./stats.js";

export interface RetentionRun {
  historyRows: number;
  removed: number;
  pruneMs: number;
  /** Awaited writes, one after another, while the run went on: how long each took to commit. */
  writeLatency: LatencySummary;
}

/** The history record a simulated device's action leaves, as DeviceManager writes it. */
const VALUE = JSON.stringify({
  driver: "simulated",
  version: 1,
  state: { power: false, volume: 20, muted: false, input: "hdmi1" },
  updated_at: "2026-12-07T12:00:00.000Z",
});

/**
 * History retention on a full table: `keys` keys with `perKey` rows each, pruned to the
 * default 200 per key, while one writer keeps committing (`synchronous=FULL`). The run
 * shares the writer with every action, so the writes' waits are what an action arriving
 * during maintenance would see.
 */
export async function benchRetention(root: string, name: string, keys: number, perKey: number): Promise<RetentionRun> {
  const path = join(root, "retention", name, "state.db");
  const setup = new SQLiteStateStore({ path });
  await setup.initialize();
  await setup.close();
  const raw = await SqliteConnection.open(path, "readwrite");
  await raw.exec(
    `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ${keys * perKey - 1})
     INSERT INTO state_history (key, old, new, transition, source, actor, at)
     SELECT 'device:bench_' || (i % ${keys}), '${VALUE}', '${VALUE}', 'update', 'mqtt', NULL, ${Date.now()} FROM n`,
  );
  await raw.close();

  const store = new SQLiteStateStore({ path });
  await store.initialize();
  try {
    const waits: number[] = [];
    let pruning = true;
    const writer = (async () => {
      for (let i = 0; pruning; i++) {
        const started = performance.now();
        await store.set(`device:writer_${i % 10}`, { i });
        waits.push(performance.now() - started);
      }
    })();
    const started = performance.now();
    const removed = await store.pruneHistory({ maxPerKey: 200, maxAgeMs: 90 * 86_400_000 }, Date.now()).finally(() => {
      pruning = false;
    });
    const pruneMs = performance.now() - started;
    await writer;
    return { historyRows: keys * perKey, removed, pruneMs, writeLatency: summarize(waits) };
  } finally {
    await store.close();
  }
}
