import { stat } from "node:fs/promises";
import { type BridgeUnderTest, startBridgeChild } from "./bridge-child.js";
import { driveActions } from "./durable.js";
import { BenchPeer } from "./mqtt-peer.js";
import { fmt } from "./stats.js";

export interface MemoryResult {
  devices: number;
  actions: number;
  rssAfterStartMb: number;
  rssAt50kMb: number;
  rssAt100kMb: number;
  /** With `settledMs`: the RSS that long after the last action, the bridge left idle. */
  rssSettledMb?: number;
  /** How long after the last action that reading was taken (at least `settledMs`). */
  settledAfterMs?: number;
  seconds: number;
}

const mb = (bytes: number) => bytes / (1024 * 1024);

export interface MemoryOptions {
  /** Extra node flags for the bridge (after the production ones). */
  nodeArgs?: string[];
  /** Runs after each RSS sample ("start", "at <n>"), between actions (`npm run bench:memory`'s breakdown). */
  onSample?: (label: string, bridge: BridgeUnderTest) => Promise<void>;
  /**
   * Reads the RSS once more, the bridge left idle, at least this long after the load ends:
   * V8's memory reducer gives back the young generation and the old space's garbage only
   * some seconds after the allocation rate has dropped (7-12 s after the last action here).
   */
  settledMs?: number;
  /** Other work to run while the bridge settles (the main bench measures figures 2 and 4 meanwhile); the reading waits for it too. */
  meanwhile?: () => Promise<void>;
}

/** Figure 5: the bridge's RSS with `devices` devices, after start and at the half and full action count. */
export async function benchMemory(
  root: string,
  devices: number,
  actions: number,
  clients: number,
  options: MemoryOptions = {},
): Promise<MemoryResult> {
  const bridge = await startBridgeChild(root, "memory", { devices, nodeArgs: options.nodeArgs });
  try {
    const rssAfterStartMb = mb(await bridge.child.rssBytes());
    await options.onSample?.("after start", bridge);
    const samples = new Map<number, number>();
    const half = Math.floor(actions / 2);
    const started = Date.now();
    await driveActions(
      bridge.mqttUrl,
      bridge.deviceIds,
      clients,
      actions,
      async (done) => {
        if (done !== half && done !== actions) return;
        samples.set(done, mb(await bridge.child.rssBytes()));
        await options.onSample?.(`at ${done}`, bridge);
      },
      half,
    );
    const seconds = (Date.now() - started) / 1000;
    let rssSettledMb: number | undefined;
    let settledAfterMs: number | undefined;
    if (options.settledMs !== undefined) {
      const ended = Date.now();
      await Promise.all([new Promise((resolve) => setTimeout(resolve, options.settledMs)), options.meanwhile?.()]);
      rssSettledMb = mb(await bridge.child.rssBytes());
      settledAfterMs = Date.now() - ended;
      await options.onSample?.(`${fmt(settledAfterMs / 1000, 1)} s after the last action`, bridge);
    }
    return {
      devices,
      actions,
      rssAfterStartMb,
      rssAt50kMb: samples.get(half) ?? NaN,
      rssAt100kMb: samples.get(actions) ?? NaN,
      rssSettledMb,
      settledAfterMs,
      seconds,
    };
  } finally {
    await bridge.child.stop();
  }
}

export interface DiskResult {
  actions: number;
  seconds: number;
  bytesWritten: number;
  bytesPerAction: number;
  walBytesStart: number;
  walBytesEnd: number;
  dbBytesEnd: number;
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => null))?.size ?? 0;
}

/**
 * Figure 6: bytes the bridge process writes to storage (`/proc/<pid>/io` write_bytes)
 * per action at a steady one action per second, and what the WAL and database files
 * did meanwhile.
 */
export async function benchDiskWrites(root: string, seconds: number): Promise<DiskResult> {
  const bridge = await startBridgeChild(root, "disk", { devices: 100 });
  let peer: BenchPeer | null = null;
  try {
    peer = await BenchPeer.connect(bridge.mqttUrl, "bench-disk");
    const topics = bridge.deviceIds.map((id) => `/devices/${id}/controls/volume`);
    await peer.subscribe(topics);
    const levels = new Map<string, number>();
    for (const topic of topics) levels.set(topic, Number(await peer.waitForAny(topic, 5000)));
    const walBytesStart = await sizeOf(`${bridge.dbPath}-wal`);
    const before = await bridge.child.writeBytes();
    const started = Date.now();
    for (let i = 0; i < seconds; i++) {
      // Each action on the next device, as in a house: different rows and pages each time.
      const topic = topics[i % topics.length] as string;
      const level = ((levels.get(topic) ?? 0) + 1) % 101;
      levels.set(topic, level);
      await peer.request(`${topic}/on`, String(level), topic, 5000);
      // A steady 1/s: the next action starts one second after this one started.
      const next = started + (i + 1) * 1000;
      await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
    }
    const bytesWritten = (await bridge.child.writeBytes()) - before;
    return {
      actions: seconds,
      seconds: (Date.now() - started) / 1000,
      bytesWritten,
      bytesPerAction: bytesWritten / seconds,
      walBytesStart,
      walBytesEnd: await sizeOf(`${bridge.dbPath}-wal`),
      dbBytesEnd: await sizeOf(bridge.dbPath),
    };
  } finally {
    await peer?.close();
    await bridge.child.stop();
  }
}
