import type { FastifyInstance } from "fastify";
import { buildApp } from "../../app/server.js";
import type { AppConfig } from "../../app/config/loader.js";
import { createLogger } from "../../app/observability/logger.js";
import { runClosedLoop, type LoopResult, type Operation } from "./closed-loop.js";
import { closePeers, connectPeers, type BenchPeer } from "./mqtt-peer.js";
import { benchDeviceId } from "./fixture.js";

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

export interface DurableResult extends LoopResult {
  devices: number;
}

export async function benchDurableActions(
  config: AppConfig,
  settings: { clients: number; warmupMs: number; measureMs: number; opTimeoutMs: number },
  variant: { history?: boolean } = {},
): Promise<DurableResult> {
  let app: FastifyInstance | null = null;
  let peers: BenchPeer[] = [];
  try {
    app = await buildApp(config, { logger: createLogger("silent"), history: variant.history });
    await app.ready();
    const broker = app.bridge.embeddedBroker;
    if (!broker) throw new Error("the bench config enables the embedded broker, but the bridge started none");

    peers = await connectPeers(broker.url, settings.clients, "bench-durable");
    const deviceCount = config.devices.length;
    const workers = await Promise.all(
      peers.map((peer, c) => {
        const own: string[] = [];
        for (let d = c; d < deviceCount; d += settings.clients) own.push(benchDeviceId(d));
        return clientWorker(peer, own, settings.opTimeoutMs);
      }),
    );
    const result = await runClosedLoop(workers, settings.warmupMs, settings.measureMs);
    return { ...result, devices: deviceCount };
  } finally {
    await closePeers(peers);
    await app?.close();
  }
}
