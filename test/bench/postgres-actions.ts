import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildBundle } from "../helpers/bridge-process.js";
import { dropSchema, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";
import { startBridgeChild } from "./bridge-child.js";
import type { LoopResult } from "./closed-loop.js";
import { benchDurableActions } from "./durable.js";
import { BENCH_DEVICES } from "./env.js";

/**
 * Durable actions through the whole bridge with its state on PostgreSQL: the production
 * bundle in its own process, the embedded broker, closed-loop MQTT clients that each send
 * a volume command and wait for the value published after the commit.
 */
export async function benchActionsOnPostgres(clientCounts: readonly number[], seconds: number): Promise<Map<number, LoopResult>> {
  buildBundle();
  const root = await mkdtemp(join(tmpdir(), "wb-bridge-bench-pg-"));
  const schema = uniqueSchema("bench_actions");
  const bridge = await startBridgeChild(root, "postgres", { devices: BENCH_DEVICES, postgres: { url: TEST_POSTGRES_URL, schema } });
  const results = new Map<number, LoopResult>();
  try {
    for (const clients of clientCounts) {
      results.set(
        clients,
        await benchDurableActions(bridge.mqttUrl, bridge.deviceIds, {
          clients,
          warmupMs: 1000,
          measureMs: seconds * 1000,
          opTimeoutMs: 10_000,
        }),
      );
    }
  } finally {
    await bridge.child.stop();
    await dropSchema(schema);
    await rm(root, { recursive: true, force: true });
  }
  return results;
}
