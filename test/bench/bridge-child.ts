import { join } from "node:path";
import { BUNDLE_ENV, BUNDLE_FILE, BUNDLE_NODE_ARGS } from "../helpers/bridge-process.js";
import { freePort } from "../helpers/ports.js";
import { ChildUnderTest } from "./child.js";
import { benchDeviceId, writeBenchConfigDir } from "./fixture.js";

export interface BridgeUnderTest {
  child: ChildUnderTest;
  httpUrl: string;
  mqttUrl: string;
  dbPath: string;
  deviceIds: string[];
}

/**
 * BENCH_NODE_ARGS: node flags added after the production ones (so they win) in every
 * bench bridge, for measuring what a flag would cost or save before it goes into BUNDLE_NODE_ARGS.
 */
export function benchNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.BENCH_NODE_ARGS ?? "").split(/\s+/).filter((arg) => arg !== "");
}

/**
 * Starts the bridge as production runs it (the bundle of `app/main.ts`, built by
 * `buildBundle()`) on its own config dir and database under `root/name`, with the
 * embedded broker (or `mqttUrl`'s), and waits until `/health/ready` says it has restored and published
 * everything.
 */
export async function startBridgeChild(
  root: string,
  name: string,
  /** `nodeArgs` go to node itself (e.g. `--cpu-prof` when profiling the bridge under bench load). */
  options: {
    devices: number;
    history?: boolean;
    encryptionKey?: string;
    nodeArgs?: string[];
    mqttUrl?: string;
    /** The state on PostgreSQL: this server and schema instead of a SQLite file. */
    postgres?: { url: string; schema: string };
  },
): Promise<BridgeUnderTest> {
  const [mqttPort, httpPort] = [await freePort(), await freePort()];
  const dir = join(root, name);
  const dbPath = join(dir, "data", "state.db");
  await writeBenchConfigDir({
    configDir: join(dir, "config"),
    dbPath,
    devices: options.devices,
    mqttPort,
    httpPort,
    history: options.history,
    mqttUrl: options.mqttUrl,
    postgresSchema: options.postgres?.schema,
  });
  const env: Record<string, string> = { ...BUNDLE_ENV, CONFIG_DIR: join(dir, "config") };
  if (options.postgres) env.STATE_DATABASE_URL = options.postgres.url;
  if (options.encryptionKey) env.STATE_ENCRYPTION_KEY = options.encryptionKey;
  const child = ChildUnderTest.start(BUNDLE_FILE, env, [...BUNDLE_NODE_ARGS, ...benchNodeArgs(), ...(options.nodeArgs ?? [])]);
  const httpUrl = `http://127.0.0.1:${httpPort}`;
  try {
    await child.waitReady(`${httpUrl}/health/ready`);
  } catch (err) {
    await child.stop();
    throw err;
  }
  const deviceIds = Array.from({ length: options.devices }, (_, i) => benchDeviceId(i));
  return { child, httpUrl, mqttUrl: options.mqttUrl ?? `mqtt://127.0.0.1:${mqttPort}`, dbPath, deviceIds };
}
