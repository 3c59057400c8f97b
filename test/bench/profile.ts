/**
 * `npm run bench:profile`: the bridge under the 64-client durable load against the bench's
 * private mosquitto, run with `--cpu-prof`; prints CPU per action (bridge and mosquitto) and
 * where the bridge's CPU went: self time by package/module and the top functions.
 * PROFILE_CLIENTS and BENCH_SECONDS change the load.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildBundle } from "../helpers/bridge-process.js";
import { startBridgeChild } from "./bridge-child.js";
import { benchDurableActions } from "./durable.js";
import { BENCH_DEVICES } from "./env.js";
import { BenchMosquitto, cpuDuringWindow, threadCpuSeconds } from "./mosquitto.js";
import { fmt } from "./stats.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const log = (line: string) => process.stdout.write(`${line}\n`);

function moduleOf(url: string): string {
  if (url === "") return "(native/vm)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  if (url.startsWith("node:")) return url;
  return url.replace(/^file:\/\/.*\/(dist|app)\//, "$1/");
}

function summarizeProfile(profile: CpuProfile, top: number): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byModule = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const mod = moduleOf(url);
    byModule.set(mod, (byModule.get(mod) ?? 0) + us);
    const fn = `${functionName || "(anonymous)"} ${mod}:${lineNumber + 1}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  }
  const pct = (us: number) => `${fmt((100 * us) / total, 1)}%`;
  log(`  self time by module (${fmt(total / 1000, 0)} ms sampled):`);
  for (const [mod, us] of [...byModule].sort((a, b) => b[1] - a[1]).slice(0, 20)) log(`    ${pct(us).padStart(6)}  ${mod}`);
  log("  top functions by self time:");
  for (const [fn, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) log(`    ${pct(us).padStart(6)}  ${fn}`);
}

async function main(): Promise<void> {
  const clients = Number(process.env.PROFILE_CLIENTS ?? 64);
  const seconds = Number(process.env.BENCH_SECONDS ?? 8);
  const root = await mkdtemp(join(tmpdir(), "wb-bridge-profile-"));
  buildBundle("inherit");
  const mosquitto = await BenchMosquitto.start(root);
  const profDir = join(root, "prof");
  try {
    const bridge = await startBridgeChild(root, "profiled", {
      devices: BENCH_DEVICES,
      mqttUrl: mosquitto.url,
      nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${profDir}`],
    });
    const cpu = cpuDuringWindow({ bridge: bridge.child.pid, mosquitto: mosquitto.pid });
    const load = { clients, warmupMs: 1000, measureMs: seconds * 1000, opTimeoutMs: 5000 };
    let threads = { main: NaN, others: NaN };
    const result = await benchDurableActions(bridge.mqttUrl, bridge.deviceIds, load, {
      opened: () => {
        cpu.hooks.opened();
        threads = threadCpuSeconds(bridge.child.pid);
      },
      closed: () => {
        cpu.hooks.closed();
        const end = threadCpuSeconds(bridge.child.pid);
        threads = { main: end.main - threads.main, others: end.others - threads.others };
      },
    });
    await bridge.child.stop();
    const perAction = (s: number | undefined) => fmt(((s ?? NaN) * 1e6) / result.operations, 1);
    log(
      `${clients} clients against mosquitto: ${fmt(result.perSecond)} actions/s, p50 ${fmt(result.latency.p50, 3)} ms, p99 ${fmt(result.latency.p99, 3)} ms`,
    );
    log(`  CPU per action: bridge ${perAction(cpu.used().bridge)} µs, mosquitto ${perAction(cpu.used().mosquitto)} µs`);
    log(
      `  the bridge's: main thread ${perAction(threads.main)} µs, other threads (libuv pool: SQLite; V8 GC helpers) ${perAction(threads.others)} µs`,
    );
    const [file] = await readdir(profDir);
    if (!file) throw new Error("no profile written");
    summarizeProfile(JSON.parse(await readFile(join(profDir, file), "utf8")) as CpuProfile, Number(process.env.PROFILE_TOP ?? 40));
  } finally {
    await mosquitto.stop();
    await rm(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`profile failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
