import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { type AppConfig, type Env, loadConfig } from "../../app/config/loader.js";
import { createLogger, type Logger } from "../../app/observability/logger.js";

export async function tempDir(prefix = "wb-bridge-"): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** A logger whose every line is kept, so tests can scan what was logged. */
export function captureLogger(level: "info" | "debug" | "warn" = "debug"): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(line);
      done();
    },
  });
  return { log: createLogger(level, stream), lines };
}

/** A one-device scenario: `devices[0]` on at start, off at shutdown. */
export function powerScenario(id: string, devices: string[]): Record<string, unknown> {
  const device = devices[0];
  return {
    scenario_id: id,
    name: id[0]?.toUpperCase() + id.slice(1),
    devices,
    startup: [{ device, action: "power_on" }],
    shutdown: [{ device, action: "power_off" }],
  };
}

export function simulatedDevice(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    device_id: id,
    device_name: `Device ${id}`,
    driver: "simulated",
    config: { inputs: ["hdmi1", "hdmi2", "tv"] },
    commands: {
      power: { params: [{ name: "on", type: "boolean" }] },
      power_on: {},
      power_off: {},
      volume: { params: [{ name: "level", type: "integer", min: 0, max: 100 }] },
      volume_up: {},
      input: { params: [{ name: "input", type: "string", enum: ["hdmi1", "hdmi2", "tv"] }] },
    },
    ...extra,
  };
}

export interface ConfigFiles {
  system?: Record<string, unknown>;
  devices?: Record<string, unknown>[];
  scenarios?: Record<string, unknown>[];
}

/** Writes a config directory under `root` and returns its path. */
export async function writeConfigDir(root: string, files: ConfigFiles): Promise<string> {
  const dir = join(root, "config");
  await mkdir(join(dir, "devices"), { recursive: true });
  await mkdir(join(dir, "scenarios"), { recursive: true });
  if (files.system) await writeFile(join(dir, "system.json"), JSON.stringify(files.system, null, 2));
  for (const d of files.devices ?? []) {
    await writeFile(join(dir, "devices", `${String(d.device_id)}.json`), JSON.stringify(d, null, 2));
  }
  for (const s of files.scenarios ?? []) {
    await writeFile(join(dir, "scenarios", `${String(s.scenario_id)}.json`), JSON.stringify(s, null, 2));
  }
  return dir;
}

/** A config for a test app: SQLite in `root`, the given broker, HTTP on an ephemeral port. */
export async function testConfig(root: string, brokerUrl: string, files: ConfigFiles = {}, env: Env = {}): Promise<AppConfig> {
  const configDir = await writeConfigDir(root, {
    system: files.system ?? {
      mqtt: { client_id: `bridge-${Math.random().toString(16).slice(2)}`, reconnect_min_ms: 100 },
      persistence: { db_path: join(root, "state.db") },
      logging: { level: "silent" },
      // Tests drive hundreds of writes from one client; the rate-limit tests turn it on.
      rate_limit: { max: 0 },
    },
    devices: files.devices ?? [simulatedDevice("tv"), simulatedDevice("amp")],
    scenarios: files.scenarios ?? [],
  });
  return loadConfig({ configDir, env: { MQTT_URL: brokerUrl, HTTP_PORT: "0", ...env }, cwd: root });
}
