import { startBridgeChild } from "./bridge-child.js";
import { benchBrokerRoundTrip, startEchoClient } from "./broker-rtt.js";
import type { LoopResult } from "./closed-loop.js";
import { benchDurableActions, type LoadSettings } from "./durable.js";
import { BENCH_DEVICES } from "./env.js";
import { BenchMosquitto, cpuDuringWindow } from "./mosquitto.js";

export interface MosquittoDurable {
  loop: LoopResult;
  /** User + system CPU of each process inside the measured window, per action. */
  bridgeCpuUs: number;
  brokerCpuUs: number;
}

export interface MosquittoEcho {
  loop: LoopResult;
  /** CPU per round trip of the echo client (mqtt.js, no state): what any mqtt.js process pays per action. */
  clientCpuUs: number;
  brokerCpuUs: number;
}

export interface MosquittoResult {
  echo: Map<number, MosquittoEcho>;
  durable: Map<number, MosquittoDurable>;
  /** RSS `settleMs` after ready, then `steadyMs` after ready (after V8's memory reducer). */
  rssIdleMb: number;
  rssSteadyMb: number;
}

const perOperation = (seconds: number | undefined, loop: LoopResult) => ((seconds ?? Number.NaN) * 1e6) / loop.operations;

/**
 * The client counts the mosquitto figures are taken at: 64 (CPU per action), then one
 * (latency), so that the one-client figure is a warm bridge's, as figure 2's is; the echo
 * rounds go in the same order.
 */
const CLIENTS = [64, 1];

/**
 * Figures 8-10, on the broker a Wiren Board runs: a private mosquitto started here. The
 * baseline is an echo client (in its own process) that answers each command on the same
 * broker, so one round trip crosses mosquitto twice, as an action does; then the bridge on
 * the same mosquitto, with the CPU time of both processes read at the window's edges.
 */
export async function benchOnMosquitto(
  root: string,
  load: (clients: number) => LoadSettings,
  idle: { settleMs: number; steadyMs: number },
  /** Runs while the bridge sits idle after the echo rounds (a phase of another figure, so the wait costs no time). */
  meanwhile: () => Promise<void> = async () => {},
): Promise<MosquittoResult> {
  const mosquitto = await BenchMosquitto.start(root);
  try {
    // The bridge starts first and sits idle, restored and published, through the echo rounds
    // (their topics are not its) and `meanwhile`, until its idle RSS is read.
    const bridge = await startBridgeChild(root, "on-mosquitto", { devices: BENCH_DEVICES, mqttUrl: mosquitto.url });
    try {
      const readyAt = Date.now();
      const rssAt = async (ms: number) => {
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, readyAt + ms - Date.now())));
        return (await bridge.child.rssBytes()) / (1024 * 1024);
      };
      const early = rssAt(idle.settleMs);
      early.catch(() => undefined); // awaited below; a failure before then must not go unhandled
      const echo = new Map<number, MosquittoEcho>();
      const echoClient = await startEchoClient(mosquitto.url);
      try {
        for (const clients of CLIENTS) {
          const cpu = cpuDuringWindow({ client: echoClient.child.pid, broker: mosquitto.pid });
          const loop = await benchBrokerRoundTrip(mosquitto.url, load(clients), cpu.hooks);
          const used = cpu.used();
          echo.set(clients, { loop, clientCpuUs: perOperation(used.client, loop), brokerCpuUs: perOperation(used.broker, loop) });
        }
      } finally {
        await echoClient.child.stop();
      }
      await meanwhile();
      const rssIdleMb = await early;
      const rssSteadyMb = await rssAt(idle.steadyMs);
      const durable = new Map<number, MosquittoDurable>();
      for (const clients of CLIENTS) {
        const cpu = cpuDuringWindow({ bridge: bridge.child.pid, broker: mosquitto.pid });
        const loop = await benchDurableActions(bridge.mqttUrl, bridge.deviceIds, load(clients), cpu.hooks);
        const used = cpu.used();
        durable.set(clients, { loop, bridgeCpuUs: perOperation(used.bridge, loop), brokerCpuUs: perOperation(used.broker, loop) });
      }
      return { echo, durable, rssIdleMb, rssSteadyMb };
    } finally {
      await bridge.child.stop();
    }
  } finally {
    await mosquitto.stop();
  }
}
