import { freePort } from "../helpers/ports.js";
import { ChildUnderTest } from "./child.js";
import { type LoopResult, runClosedLoop, type WindowHooks } from "./closed-loop.js";
import type { LoadSettings } from "./durable.js";
import { type BenchPeer, closePeers, connectPeers } from "./mqtt-peer.js";

/** The echo broker (aedes + echo client in their own process), started once for every client count. */
export async function startEchoBroker(): Promise<{ child: ChildUnderTest; url: string }> {
  const port = await freePort();
  const child = ChildUnderTest.start("test/bench/echo-broker.ts", { ECHO_BROKER_PORT: String(port) });
  await child.waitForLine(/^ready \d+$/);
  return { child, url: `mqtt://127.0.0.1:${port}` };
}

/** Only the echo client, in its own process, against an external broker (the bench's mosquitto). */
export async function startEchoClient(brokerUrl: string): Promise<{ child: ChildUnderTest; url: string }> {
  const child = ChildUnderTest.start("test/bench/echo-broker.ts", { ECHO_BROKER_URL: brokerUrl });
  await child.waitForLine(/^ready \d+$/);
  return { child, url: brokerUrl };
}

/**
 * The floor under the durable figure: the same clients and closed loop against the
 * echo broker, which stands in for the bridge without state or SQLite. Each round trip
 * crosses the broker twice, as an action does (command in, value out).
 */
export async function benchBrokerRoundTrip(url: string, settings: LoadSettings, window?: WindowHooks): Promise<LoopResult> {
  let peers: BenchPeer[] = [];
  try {
    peers = await connectPeers(url, settings.clients, `bench-rtt-${settings.clients}`);
    const workers = await Promise.all(
      peers.map(async (peer, c) => {
        await peer.subscribe([`bench/resp/${c}`]);
        let seq = 0;
        return () => peer.request(`bench/req/${c}`, String(seq++), `bench/resp/${c}`, settings.opTimeoutMs);
      }),
    );
    return await runClosedLoop(workers, settings.warmupMs, settings.measureMs, window);
  } finally {
    await closePeers(peers);
  }
}
