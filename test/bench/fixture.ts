import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type AppConfig, loadConfig } from "../../app/config/loader.js";

export const benchDeviceId = (index: number, width = 3) => `bench_${String(index).padStart(width, "0")}`;

function deviceConfig(id: string) {
  return {
    device_id: id,
    device_name: `Bench device ${id}`,
    driver: "simulated",
    commands: {
      volume: { description: "Set volume", params: [{ name: "level", type: "integer", min: 0, max: 100 }] },
    },
  };
}

export interface BenchConfigOptions {
  configDir: string;
  dbPath: string;
  devices: number;
  idWidth?: number;
  /** Ports for the embedded broker and HTTP; 0 (the default) lets the OS choose. */
  mqttPort?: number;
  httpPort?: number;
  history?: boolean;
  /** An external broker (e.g. the bench's private mosquitto) instead of the embedded one. */
  mqttUrl?: string;
  /** Keep the state in this PostgreSQL schema (the URL comes from STATE_DATABASE_URL) instead of SQLite. */
  postgresSchema?: string;
}

/** Writes a config dir (system.json + one file per device) for a bench bridge. */
export async function writeBenchConfigDir(options: BenchConfigOptions): Promise<void> {
  const { configDir, dbPath, devices } = options;
  const system = {
    mqtt: options.mqttUrl
      ? { client_id: "wb-bridge-bench", url: options.mqttUrl, embedded: { enabled: false } }
      : { client_id: "wb-bridge-bench", embedded: { enabled: true, host: "127.0.0.1", port: options.mqttPort ?? 0 } },
    http: { host: "127.0.0.1", port: options.httpPort ?? 0 },
    persistence: {
      db_path: dbPath,
      synchronous: "full",
      history: { enabled: options.history ?? true },
      ...(options.postgresSchema ? { backend: "postgres", postgres: { schema: options.postgresSchema } } : {}),
    },
    logging: { level: "warn" },
    // The bench is the only client and sends far more than a person would.
    rate_limit: { max: 0 },
  };
  await mkdir(join(configDir, "devices"), { recursive: true });
  await writeFile(join(configDir, "system.json"), JSON.stringify(system, null, 2));
  const ids = Array.from({ length: devices }, (_, i) => benchDeviceId(i, options.idWidth));
  // Bounded parallelism: 10,000 simultaneous opens would hit the fd limit on small hosts.
  for (let i = 0; i < ids.length; i += 256) {
    await Promise.all(
      ids.slice(i, i + 256).map((id) => writeFile(join(configDir, "devices", `${id}.json`), JSON.stringify(deviceConfig(id)))),
    );
  }
}

/**
 * Writes a config dir and loads it the way the bridge does, for an in-process bridge.
 * The embedded broker and HTTP take port 0 so nothing collides with a running bridge or
 * a system broker.
 */
export async function writeBenchConfig(options: BenchConfigOptions): Promise<AppConfig> {
  await writeBenchConfigDir(options);
  // An empty env: MQTT_URL, STATE_PATH, ... of the calling shell must not redirect the bench.
  return loadConfig({ configDir: options.configDir, env: {}, cwd: options.configDir });
}
