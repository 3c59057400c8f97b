import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { FastifyInstance } from "fastify";
import { createLogger } from "../../app/observability/logger.js";
import { buildApp } from "../../app/server.js";
import { SQLiteStateStore } from "../../app/state/sqlite-store.js";
import { benchDeviceId, writeBenchConfig } from "./fixture.js";

export interface RestoreResult {
  devices: number;
  seedMs: number;
  loadConfigMs: number;
  readyMs: number;
  /** Inside ready(): reading + validating the stored states and driver setup; the rest is mostly WB publishing. */
  restoreMs: number;
  publishMs: number;
  /** Devices whose restored volume differs from the seeded one (0 when restore worked). */
  notRestored: number;
  closeMs: number;
  listMs: number;
  listedEntries: number;
}

/** Same record shape DeviceManager writes for a simulated device (app/devices/record.ts). */
const record = (i: number) => ({
  driver: "simulated",
  version: 1,
  state: { power: false, volume: 20 + (i % 50), muted: false, input: "hdmi1" },
});

/**
 * Start-up cost with a full database: seed N device rows, then time app.ready() of a
 * bridge configured with those N devices, and the bare prefix listing it is built on.
 * Volumes differ from the default (20) so devices that silently fell back are counted.
 */
export async function benchRestore(root: string, devices: number): Promise<RestoreResult> {
  const dbPath = join(root, "restore", "state.db");
  const width = 5;

  const seedStart = performance.now();
  const seeder = new SQLiteStateStore({ path: dbPath, synchronous: "full" });
  await seeder.initialize();
  try {
    await Promise.all(Array.from({ length: devices }, (_, i) => seeder.set(`device:${benchDeviceId(i, width)}`, record(i))));
  } finally {
    await seeder.close();
  }
  const seedMs = performance.now() - seedStart;

  const loadStart = performance.now();
  const config = await writeBenchConfig({ configDir: join(root, "restore", "config"), dbPath, devices, idWidth: width });
  const loadConfigMs = performance.now() - loadStart;

  let app: FastifyInstance | null = null;
  let readyMs: number;
  let closeMs: number;
  let notRestored = 0;
  let restoreMs = NaN;
  let publishMs = NaN;
  try {
    app = await buildApp(config, { logger: createLogger("silent") });
    const readyStart = performance.now();
    await app.ready();
    readyMs = performance.now() - readyStart;
    restoreMs = app.bridge.devices.startupTimings?.restoreMs ?? NaN;
    publishMs = readyMs - restoreMs;
    for (let i = 0; i < devices; i++) {
      if (app.bridge.devices.getState(benchDeviceId(i, width)).state.volume !== record(i).state.volume) notRestored += 1;
    }
  } finally {
    const closeStart = performance.now();
    await app?.close();
    closeMs = performance.now() - closeStart;
  }

  const reader = new SQLiteStateStore({ path: dbPath, synchronous: "full" });
  await reader.initialize();
  let listMs: number;
  let listedEntries: number;
  try {
    const listStart = performance.now();
    listedEntries = (await reader.list("device:")).length;
    listMs = performance.now() - listStart;
  } finally {
    await reader.close();
  }

  return { devices, seedMs, loadConfigMs, readyMs, restoreMs, publishMs, notRestored, closeMs, listMs, listedEntries };
}
