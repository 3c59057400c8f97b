import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { loadConfig, type AppConfig } from "../../app/config/loader.js";

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

/**
 * Writes a config dir (system.json + one file per device) and loads it the way the
 * bridge does. The embedded broker and HTTP take port 0 so nothing collides with a
 * running bridge or a system broker.
 */
export async function writeBenchConfig(options: {
  configDir: string;
  dbPath: string;
  devices: number;
  idWidth?: number;
}): Promise<AppConfig> {
  const { configDir, dbPath, devices } = options;
  const system = {
    mqtt: { client_id: "wb-bridge-bench", embedded: { enabled: true, host: "127.0.0.1", port: 0 } },
    http: { host: "127.0.0.1", port: 0 },
    persistence: { db_path: dbPath, synchronous: "full" },
    logging: { level: "silent" },
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
  // An empty env: MQTT_URL, STATE_PATH, ... of the calling shell must not redirect the bench.
  return loadConfig({ configDir, env: {}, cwd: configDir });
}
