/**
 * `npm run bench:memory`: figures 10 and 5 alone, with where the memory is. The bridge runs
 * as production runs it (the bundle, BUNDLE_NODE_ARGS); BENCH_NODE_ARGS adds node flags
 * (they come after the production ones, so they win), for trying flags out.
 *
 * Each sample prints VmRSS, /proc/<pid>/smaps grouped by mapping (the node binary's
 * file-backed pages, V8's anonymous heap, ...) and, with MEMORY_PROBE=1, V8's heap spaces
 * and the CommonJS modules loaded, read by a small preload (it costs a little memory
 * itself, so the RSS figures are taken without it unless asked).
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildBundle } from "../helpers/bridge-process.js";
import { type BridgeUnderTest, benchNodeArgs, startBridgeChild } from "./bridge-child.js";
import { BENCH_DEVICES, readSettings } from "./env.js";
import { BenchMosquitto } from "./mosquitto.js";
import { benchMemory } from "./resources.js";
import { fmt } from "./stats.js";

const log = (line: string) => process.stdout.write(`${line}\n`);
const kbToMb = (kb: number) => kb / 1024;

/**
 * The preload: on SIGUSR2 it prints one line with V8's heap spaces and the CommonJS
 * modules in the loader's cache (ESM-only packages such as zod and jose are not in it).
 */
const PROBE = `
import { createRequire } from "node:module";
import { getHeapSpaceStatistics, getHeapStatistics } from "node:v8";
const require = createRequire(process.cwd() + "/");
process.on("SIGUSR2", () => {
  const packages = {};
  for (const file of Object.keys(require.cache)) {
    const parts = file.split("node_modules/").pop().split("/");
    const name = file.includes("node_modules/") ? (parts[0].startsWith("@") ? parts[0] + "/" + parts[1] : parts[0]) : "(app)";
    packages[name] = (packages[name] ?? 0) + 1;
  }
  const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
  const heap = getHeapStatistics();
  process.stdout.write("MEMORY-PROBE " + JSON.stringify({ spaces, heap, external: process.memoryUsage().external, arrayBuffers: process.memoryUsage().arrayBuffers, packages }) + "\\n");
});
`;
const PROBE_ARGS = ["--import", `data:text/javascript,${encodeURIComponent(PROBE)}`];

interface ProbeReport {
  spaces: Record<string, { size: number; used: number }>;
  heap: { total_heap_size: number; used_heap_size: number; malloced_memory: number; external_memory: number };
  external: number;
  arrayBuffers: number;
  packages: Record<string, number>;
}

/** Rss and Anonymous of each kind of mapping, from /proc/<pid>/smaps. */
async function smapsByMapping(pid: number): Promise<Map<string, { rss: number; anon: number }>> {
  const text = await readFile(`/proc/${pid}/smaps`, "utf8");
  const groups = new Map<string, { rss: number; anon: number }>();
  let current = "";
  for (const line of text.split("\n")) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[1] ?? "";
      current = name === "" ? "[anon]" : name.endsWith("/node") ? "node binary" : name.startsWith("/") ? name.replace(/^.*\//, "") : name;
      if (!groups.has(current)) groups.set(current, { rss: 0, anon: 0 });
      continue;
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (!field) continue;
    const g = groups.get(current) as { rss: number; anon: number };
    if (field[1] === "Rss") g.rss += Number(field[2]);
    else g.anon += Number(field[2]);
  }
  return groups;
}

async function rollup(pid: number): Promise<Record<string, number>> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  return Object.fromEntries([...text.matchAll(/^(\w+):\s+(\d+) kB/gm)].map((m) => [m[1] as string, Number(m[2])]));
}

async function probe(bridge: BridgeUnderTest): Promise<ProbeReport> {
  const line = bridge.child.waitForLine(/^MEMORY-PROBE /, 5000);
  process.kill(bridge.child.pid, "SIGUSR2");
  return JSON.parse((await line).slice("MEMORY-PROBE ".length)) as ProbeReport;
}

async function report(label: string, bridge: BridgeUnderTest, withProbe: boolean): Promise<void> {
  const rssMb = (await bridge.child.rssBytes()) / (1024 * 1024);
  const r = await rollup(bridge.child.pid);
  const anon = r.Anonymous ?? 0;
  const rss = r.Rss ?? 0;
  log(`${label}: VmRSS ${fmt(rssMb)} MB = anonymous ${fmt(kbToMb(anon))} MB + file-backed ${fmt(kbToMb(rss - anon))} MB`);
  const groups = [...(await smapsByMapping(bridge.child.pid))].filter(([, g]) => g.rss >= 256).sort((a, b) => b[1].rss - a[1].rss);
  log(
    `  by mapping (>= 0.25 MB): ${groups.map(([name, g]) => `${name} ${fmt(kbToMb(g.rss))}${g.anon ? ` (anon ${fmt(kbToMb(g.anon))})` : ""}`).join(", ")}`,
  );
  if (!withProbe) return;
  const p = await probe(bridge);
  const mb = (bytes: number) => fmt(bytes / (1024 * 1024));
  log(
    `  V8: heap total ${mb(p.heap.total_heap_size)} MB, used ${mb(p.heap.used_heap_size)} MB, malloced ${mb(p.heap.malloced_memory)} MB; external ${mb(p.external)} MB (array buffers ${mb(p.arrayBuffers)} MB)`,
  );
  log(
    `  spaces (size/used MB): ${Object.entries(p.spaces)
      .filter(([, s]) => s.size > 0)
      .map(([name, s]) => `${name.replace(/_space$/, "")} ${mb(s.size)}/${mb(s.used)}`)
      .join(", ")}`,
  );
  log(
    `  CommonJS modules loaded: ${Object.entries(p.packages)
      .sort((a, b) => b[1] - a[1])
      .map(([name, n]) => `${name} ${n}`)
      .join(", ")}`,
  );
}

async function main(): Promise<void> {
  const s = readSettings();
  const extra = benchNodeArgs();
  const withProbe = process.env.MEMORY_PROBE === "1";
  const nodeArgs = withProbe ? PROBE_ARGS : [];
  const root = await mkdtemp(join(tmpdir(), "wb-bridge-memory-"));
  buildBundle("inherit");
  log(`extra node flags: ${extra.join(" ") || "(none)"}${withProbe ? "; with the probe preload" : ""}`);
  try {
    log(
      `\n[10] idle on a private mosquitto, ${BENCH_DEVICES} devices, ${s.rssIdleSettleMs / 1000} s and ${s.rssIdleSteadyMs / 1000} s after ready`,
    );
    const mosquitto = await BenchMosquitto.start(root);
    try {
      const bridge = await startBridgeChild(root, "idle", { devices: BENCH_DEVICES, mqttUrl: mosquitto.url, nodeArgs });
      try {
        await new Promise((resolve) => setTimeout(resolve, s.rssIdleSettleMs));
        await report("idle", bridge, withProbe);
        await new Promise((resolve) => setTimeout(resolve, s.rssIdleSteadyMs - s.rssIdleSettleMs));
        await report("idle, steady", bridge, withProbe);
      } finally {
        await bridge.child.stop();
      }
    } finally {
      await mosquitto.stop();
    }

    if (process.env.MEMORY_IDLE_ONLY === "1") return;
    log(`\n[5] ${s.memoryDevices} devices, embedded broker, ${s.memoryActions} durable actions at 64 clients`);
    const memory = await benchMemory(root, s.memoryDevices, s.memoryActions, 64, {
      nodeArgs,
      onSample: (label, bridge) => report(label, bridge, withProbe),
      settledMs: s.memorySettleMs,
    });
    log(
      `RSS after start ${fmt(memory.rssAfterStartMb)} MB, at ${memory.actions / 2} ${fmt(memory.rssAt50kMb)} MB, at ${memory.actions} ${fmt(memory.rssAt100kMb)} MB (${fmt(memory.seconds)} s, ${fmt(memory.actions / memory.seconds, 0)} actions/s), ${fmt(memory.rssSettledMb ?? Number.NaN)} MB ${fmt((memory.settledAfterMs ?? Number.NaN) / 1000, 1)} s later, idle`,
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:memory failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
