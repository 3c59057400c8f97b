import { startEmbeddedBroker, type EmbeddedBroker } from "../../app/mqtt/broker.js";
import { createLogger } from "../../app/observability/logger.js";
import { runClosedLoop, type LoopResult } from "./closed-loop.js";
import { BenchPeer, closePeers, connectPeers } from "./mqtt-peer.js";

/**
 * The floor under the durable figure: the same clients and closed loop against a bare
 * aedes broker, an echo client standing in for the bridge without state or SQLite.
 */
export async function benchBrokerRoundTrip(settings: {
  clients: number;
  warmupMs: number;
  measureMs: number;
  opTimeoutMs: number;
}): Promise<LoopResult> {
  let broker: EmbeddedBroker | null = null;
  let echo: BenchPeer | null = null;
  let peers: BenchPeer[] = [];
  try {
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port: 0, log: createLogger("silent") });
    echo = await BenchPeer.connect(broker.url, "bench-echo");
    const echoClient = echo.client;
    echoClient.on("message", (topic, payload) => {
      const n = topic.slice("bench/req/".length);
      echoClient.publish(`bench/resp/${n}`, payload, { qos: 1, retain: false });
    });
    await echo.subscribe(["bench/req/+"]);

    peers = await connectPeers(broker.url, settings.clients, "bench-rtt");
    const workers = await Promise.all(
      peers.map(async (peer, c) => {
        await peer.subscribe([`bench/resp/${c}`]);
        let seq = 0;
        return () => peer.request(`bench/req/${c}`, String(seq++), `bench/resp/${c}`, settings.opTimeoutMs);
      }),
    );
    return await runClosedLoop(workers, settings.warmupMs, settings.measureMs);
  } finally {
    await closePeers(peers);
    await echo?.close();
    await broker?.close();
  }
}
