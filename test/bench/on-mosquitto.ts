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

/** The client counts the mosquitto figures are taken at: one (latency) and 64 (CPU per action). */
const CLIENTS = [1, 64];

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
): Promise<MosquittoResult> {
  const mosquitto = await BenchMosquitto.start(root);
  try {
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
    const bridge = await startBridgeChild(root, "on-mosquitto", { devices: BENCH_DEVICES, mqttUrl: mosquitto.url });
    try {
      // Idle: restored, published, and left alone for a moment (timers, lazy compilation settle).
      await new Promise((resolve) => setTimeout(resolve, idle.settleMs));
      const rssIdleMb = (await bridge.child.rssBytes()) / (1024 * 1024);
      await new Promise((resolve) => setTimeout(resolve, idle.steadyMs - idle.settleMs));
      const rssSteadyMb = (await bridge.child.rssBytes()) / (1024 * 1024);
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
