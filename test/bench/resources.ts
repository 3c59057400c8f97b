import { stat } from "node:fs/promises";
import { startBridgeChild } from "./bridge-child.js";
import { driveActions } from "./durable.js";
import { BenchPeer } from "./mqtt-peer.js";

export interface MemoryResult {
  devices: number;
  actions: number;
  rssAfterStartMb: number;
  rssAt50kMb: number;
  rssAt100kMb: number;
  seconds: number;
}

const mb = (bytes: number) => bytes / (1024 * 1024);

/** Figure 5: the bridge's RSS with `devices` devices, after start and at the half and full action count. */
export async function benchMemory(root: string, devices: number, actions: number, clients: number): Promise<MemoryResult> {
  const bridge = await startBridgeChild(root, "memory", { devices });
  try {
    const rssAfterStartMb = mb(await bridge.child.rssBytes());
    const samples = new Map<number, number>();
    const half = Math.floor(actions / 2);
    const started = Date.now();
    await driveActions(bridge.mqttUrl, bridge.deviceIds, clients, actions, async (done) => {
      if (done === half || done === actions) samples.set(done, mb(await bridge.child.rssBytes()));
    }, half);
    return {
      devices,
      actions,
      rssAfterStartMb,
      rssAt50kMb: samples.get(half) ?? NaN,
      rssAt100kMb: samples.get(actions) ?? NaN,
      seconds: (Date.now() - started) / 1000,
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
    const id = bridge.deviceIds[0] as string;
    const valueTopic = `/devices/${id}/controls/volume`;
    await peer.subscribe([valueTopic]);
    let level = Number(await peer.waitForAny(valueTopic, 5000));
    const walBytesStart = await sizeOf(`${bridge.dbPath}-wal`);
    const before = await bridge.child.writeBytes();
    const started = Date.now();
    for (let i = 0; i < seconds; i++) {
      level = (level + 1) % 101;
      await peer.request(`${valueTopic}/on`, String(level), valueTopic, 5000);
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
