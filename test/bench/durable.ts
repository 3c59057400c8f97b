import { type LoopResult, type Operation, runClosedLoop, type WindowHooks } from "./closed-loop.js";
import { type BenchPeer, closePeers, connectPeers } from "./mqtt-peer.js";

const valueTopic = (id: string) => `/devices/${id}/controls/volume`;
const commandTopic = (id: string) => `/devices/${id}/controls/volume/on`;

/**
 * One client's loop over its own devices. The bridge publishes only fields that
 * changed, so every command must carry a value different from the device's current one.
 */
async function clientWorker(peer: BenchPeer, deviceIds: string[], timeoutMs: number): Promise<Operation> {
  await peer.subscribe(deviceIds.map(valueTopic));
  const current = new Map<string, number>();
  for (const id of deviceIds) {
    // The retained value the bridge published at start tells us where each device is.
    current.set(id, Number(await peer.waitForAny(valueTopic(id), timeoutMs)));
  }
  let turn = 0;
  return async () => {
    const id = deviceIds[turn++ % deviceIds.length] as string;
    const next = ((current.get(id) ?? 0) + 1) % 101;
    await peer.request(commandTopic(id), String(next), valueTopic(id), timeoutMs);
    current.set(id, next);
  };
}

export interface LoadSettings {
  clients: number;
  warmupMs: number;
  measureMs: number;
  opTimeoutMs: number;
}

/**
 * Durable actions against a running bridge: each client sends a volume command on
 * `/on` and waits for the new value the bridge publishes after the commit. Clients
 * share the devices round-robin, so no two clients drive the same device.
 */
export async function benchDurableActions(
  mqttUrl: string,
  deviceIds: readonly string[],
  settings: LoadSettings,
  window?: WindowHooks,
): Promise<LoopResult> {
  if (settings.clients > deviceIds.length)
    throw new Error(`${settings.clients} clients need at least as many devices (have ${deviceIds.length})`);
  let peers: BenchPeer[] = [];
  try {
    peers = await connectPeers(mqttUrl, settings.clients, `bench-durable-${settings.clients}`);
    const workers = await Promise.all(
      peers.map((peer, c) =>
        clientWorker(
          peer,
          deviceIds.filter((_, d) => d % settings.clients === c),
          settings.opTimeoutMs,
        ),
      ),
    );
    return await runClosedLoop(workers, settings.warmupMs, settings.measureMs, window);
  } finally {
    await closePeers(peers);
  }
}

/** A fixed number of durable actions as fast as `clients` closed loops go, reporting progress. */
export async function driveActions(
  mqttUrl: string,
  deviceIds: readonly string[],
  clients: number,
  total: number,
  onProgress: (done: number) => Promise<void> | void,
  every: number,
): Promise<void> {
  let peers: BenchPeer[] = [];
  try {
    peers = await connectPeers(mqttUrl, clients, `bench-drive-${clients}`);
    const workers = await Promise.all(
      peers.map((peer, c) =>
        clientWorker(
          peer,
          deviceIds.filter((_, d) => d % clients === c),
          10_000,
        ),
      ),
    );
    let started = 0;
    let done = 0;
    let checkpoint = Promise.resolve();
    await Promise.all(
      workers.map(async (op) => {
        while (started < total) {
          started += 1;
          await op();
          done += 1;
          if (done % every === 0) {
            // Progress checks (an RSS sample) run one at a time, between actions.
            const at = done;
            checkpoint = checkpoint.then(() => onProgress(at));
            await checkpoint;
          }
        }
      }),
    );
  } finally {
    await closePeers(peers);
  }
}
