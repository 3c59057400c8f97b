/**
 * `npm run bench`: durable action rate through the whole bridge, against the floors
 * that bound it (bare broker round trip, one fsync per write), plus restore time.
 * Everything runs on 127.0.0.1 in a temp directory that is removed at the end.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchBrokerRoundTrip } from "./broker-rtt.js";
import { benchDurableActions } from "./durable.js";
import { BENCH_DEVICES, describeHost, readSettings } from "./env.js";
import { writeBenchConfig } from "./fixture.js";
import { benchRestore } from "./restore.js";
import { fmt, round } from "./stats.js";
import { benchStoreWrites } from "./store-writes.js";
import type { AppConfig } from "../../app/config/loader.js";
import { generateFernetKey } from "../../app/state/fernet.js";

const log = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const settings = readSettings();
  const root = await mkdtemp(join(tmpdir(), "wb-bridge-bench-"));
  log(`wb-bridge bench: ${describeHost()}`);
  log(`temp dir ${root}; ${settings.clients} clients, ${settings.warmupMs / 1000} s warm-up + ${settings.measureMs / 1000} s measured`);
  try {
    const config = await writeBenchConfig({ configDir: join(root, "config"), dbPath: join(root, "data", "state.db"), devices: BENCH_DEVICES });

    log("\n[1/4] durable actions (MQTT /on -> SQLite commit with history -> retained value)");
    const durable = await benchDurableActions(config, settings);
    log(`  ${durable.operations} actions on ${durable.devices} devices in ${durable.seconds} s`);
    log(`  durable actions/s: ${fmt(durable.perSecond)}`);
    log(`  latency ms: p50 ${fmt(durable.latency.p50, 3)}  p99 ${fmt(durable.latency.p99, 3)}  max ${fmt(durable.latency.max, 3)}`);

    // The same phase without history, and with encryption at rest, each on its own database.
    const variantConfig = (name: string, encryptionKeys: string | null): AppConfig => ({
      ...config,
      paths: { ...config.paths, db: join(root, "data", `${name}.db`) },
      secrets: { ...config.secrets, encryptionKeys },
    });
    const noHistory = await benchDurableActions(variantConfig("no-history", null), settings, { history: false });
    const encrypted = await benchDurableActions(variantConfig("encrypted", generateFernetKey()), settings);
    const cost = (other: number) => `${fmt((1 - durable.perSecond / other) * 100, 1)}%`;
    log(`  without history: ${fmt(noHistory.perSecond)} actions/s (p50 ${fmt(noHistory.latency.p50, 3)} ms); history costs ${cost(noHistory.perSecond)}`);
    log(`  with encryption (history on): ${fmt(encrypted.perSecond)} actions/s (p50 ${fmt(encrypted.latency.p50, 3)} ms); ${fmt((1 - encrypted.perSecond / durable.perSecond) * 100, 1)}% below the default`);

    log("\n[2/4] raw broker round trip (aedes + echo client, QoS 1, no bridge)");
    const rtt = await benchBrokerRoundTrip(settings);
    log(`  ${rtt.operations} round trips in ${rtt.seconds} s`);
    log(`  round trips/s: ${fmt(rtt.perSecond)}`);
    log(`  latency ms: p50 ${fmt(rtt.latency.p50, 3)}  p99 ${fmt(rtt.latency.p99, 3)}  max ${fmt(rtt.latency.max, 3)}`);

    log("\n[3/4] SQLite writes, synchronous=FULL, WAL");
    const writes = await benchStoreWrites(join(root, "fsync", "state.db"), settings);
    log(`  sequential awaited set(): ${writes.sequentialWrites} in ${fmt(writes.sequentialSeconds, 2)} s = ${fmt(writes.sequentialPerSecond)} writes/s (one commit each)`);
    log(`  group commit: ${writes.groupRows} concurrent set() in ${fmt(writes.groupSeconds, 3)} s = ${fmt(writes.groupRowsPerSecond)} rows/s`);

    log(`\n[4/4] restore: ${settings.restoreDevices} devices`);
    const restore = await benchRestore(root, settings.restoreDevices);
    log(`  seeding the database: ${fmt(restore.seedMs)} ms; writing + loading config: ${fmt(restore.loadConfigMs)} ms`);
    log(`  app.ready() (restore + init): ${fmt(restore.readyMs)} ms${restore.notRestored === 0 ? "" : `  (WARNING: ${restore.notRestored} devices did not get their stored volume back)`}`);
    log(`    of which restore (read + validate + driver setup): ${fmt(restore.restoreMs)} ms; the rest (publishing WB meta and values, scenarios): ${fmt(restore.publishMs)} ms`);
    log(`  store.list("device:"): ${fmt(restore.listMs)} ms for ${restore.listedEntries} entries`);
    log(`  app.close(): ${fmt(restore.closeMs)} ms`);

    const vsBroker = durable.perSecond / rtt.perSecond;
    const vsFsync = durable.perSecond / writes.sequentialPerSecond;
    log("\nratios");
    log(`  durable actions/s / broker round trips/s: ${fmt(vsBroker, 3)}`);
    log(`  durable actions/s / fsync writes/s:       ${fmt(vsFsync, 3)}`);

    const summary = {
      clients: settings.clients,
      seconds: settings.measureMs / 1000,
      durable: {
        actions: durable.operations,
        per_s: round(durable.perSecond, 1),
        p50_ms: round(durable.latency.p50),
        p99_ms: round(durable.latency.p99),
        max_ms: round(durable.latency.max),
        without_history_per_s: round(noHistory.perSecond, 1),
        encrypted_per_s: round(encrypted.perSecond, 1),
      },
      broker: {
        round_trips: rtt.operations,
        per_s: round(rtt.perSecond, 1),
        p50_ms: round(rtt.latency.p50),
        p99_ms: round(rtt.latency.p99),
        max_ms: round(rtt.latency.max),
      },
      sqlite: {
        fsync_writes_per_s: round(writes.sequentialPerSecond, 1),
        group_commit_rows: writes.groupRows,
        group_commit_rows_per_s: round(writes.groupRowsPerSecond, 1),
      },
      restore: {
        devices: restore.devices,
        ready_ms: round(restore.readyMs, 1),
        restore_ms: round(restore.restoreMs, 1),
        publish_ms: round(restore.publishMs, 1),
        list_ms: round(restore.listMs, 1),
        listed: restore.listedEntries,
        not_restored: restore.notRestored,
        close_ms: round(restore.closeMs, 1),
      },
      ratios: { durable_vs_broker: round(vsBroker, 4), durable_vs_fsync: round(vsFsync, 4) },
    };
    log(`\n${JSON.stringify(summary)}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

main().then(
  // Stray handles (a socket still closing) must not keep the process alive past the bench.
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
