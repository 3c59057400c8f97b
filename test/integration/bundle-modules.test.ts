import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BridgeChild,
  BUNDLE_ENV,
  BUNDLE_FILE,
  BUNDLE_NODE_ARGS,
  buildBundle,
  repoRoot,
  startBridge,
} from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";

/**
 * Printed by the preload on SIGUSR2, one stderr line: every CommonJS module the process has
 * loaded, and the name of the function the `debug` package's cache entry exports.
 */
const LOADED_MARK = "loaded modules: ";
const PRELOAD = `
process.on("SIGUSR2", () => {
  const debug = Object.entries(require.cache).find(([path]) => path.endsWith("/node_modules/debug/src/index.js"));
  const report = { modules: Object.keys(require.cache), debugFactory: debug ? debug[1].exports.name : null };
  process.stderr.write(${JSON.stringify(LOADED_MARK)} + JSON.stringify(report) + "\\n");
});
`;

/**
 * What the production bundle loads at start: the mqtt client without mqtt's index (every
 * transport it can build), prom-client's classes without its index (Pushgateway, cluster
 * aggregator, @opentelemetry/api), and zod carried in the bundle instead of its ~80 modules.
 */
describe("the production bundle's modules", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let bridge: BridgeChild | null = null;

  beforeAll(async () => {
    buildBundle();
    dir = await tempDir();
    const preload = join(dir.path, "preload.cjs");
    await writeFile(preload, PRELOAD);
    const configDir = await writeConfigDir(dir.path, {
      system: { mqtt: { client_id: "bundle-modules", embedded: { enabled: true, host: "127.0.0.1", port: 0 } } },
      devices: [simulatedDevice("tv")],
    });
    bridge = await startBridge({ ...BUNDLE_ENV, CONFIG_DIR: configDir }, 30_000, [...BUNDLE_NODE_ARGS, "--require", preload, BUNDLE_FILE]);
  });

  afterAll(async () => {
    if (bridge && bridge.proc.exitCode === null) {
      bridge.proc.kill("SIGTERM");
      expect((await bridge.exited).code).toBe(0);
    }
    await dir?.remove();
  });

  async function loadedModules(): Promise<{ modules: string[]; debugFactory: string | null }> {
    const proc = (bridge as BridgeChild).proc;
    const lines = createInterface({ input: proc.stderr as NodeJS.ReadableStream });
    try {
      const line = new Promise<string>((resolve) => lines.on("line", (l) => l.startsWith(LOADED_MARK) && resolve(l)));
      proc.kill("SIGUSR2");
      const report = JSON.parse((await line).slice(LOADED_MARK.length)) as { modules: string[]; debugFactory: string | null };
      return { ...report, modules: report.modules.map((path) => path.slice(repoRoot.length + 1)) };
    } finally {
      lines.close();
    }
  }

  it("loads the mqtt client and prom-client's classes, not their indexes", async () => {
    const loaded = (await loadedModules()).modules;
    expect(loaded).toContain("node_modules/mqtt/build/lib/client.js");
    expect(loaded).toContain("node_modules/prom-client/lib/registry.js");
    const unwanted = loaded.filter((path) =>
      /^node_modules\/(mqtt\/build\/(index\.js|lib\/connect\/)|prom-client\/(index\.js|lib\/(pushgateway|cluster)\.js)|@opentelemetry\/|zod\/|fastify-type-provider-zod\/)/.test(
        path,
      ),
    );
    expect(unwanted).toEqual([]);
  });

  it("hands mqtt-packet, loaded after the entry point's start, the quiet debug factory", async () => {
    const { modules, debugFactory } = await loadedModules();
    expect(modules).toContain("node_modules/mqtt-packet/parser.js");
    // The entry point swapped it in before the broker and the client loaded mqtt-packet.
    expect(debugFactory).toBe("quietDebug");
  });

  it("carries zod and its Fastify type provider in the bundle", async () => {
    const files = (await readdir(join(repoRoot, "dist"))).filter((name) => name.endsWith(".js"));
    const texts = await Promise.all(files.map((name) => readFile(join(repoRoot, "dist", name), "utf8")));
    const importers = files.filter((_, i) => /from\s*"(zod|fastify-type-provider-zod)[/"]/.test(texts[i] ?? ""));
    expect(importers).toEqual([]);
    // ... and a schema error still reads as zod's, from the bundled copy.
    const url = (bridge as BridgeChild).url;
    const bad = await fetch(`${url}/devices/tv/action`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ action: 42 }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toMatch(/action/);
  });

  it("serves the process CPU counters it writes itself beside prom-client's default metrics", async () => {
    const text = await (await fetch(`${(bridge as BridgeChild).url}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(value("process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(value("process_cpu_system_seconds_total")).toBeGreaterThanOrEqual(0);
    expect(value("process_cpu_seconds_total")).toBeCloseTo(
      value("process_cpu_user_seconds_total") + value("process_cpu_system_seconds_total"),
      6,
    );
    expect(text).toMatch(/^# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds\.$/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes /m);
  });
});
