import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const repoRoot = join(import.meta.dirname, "../..");

export interface BridgeChild {
  proc: ChildProcess;
  /** `http://127.0.0.1:<port>`, from the "wb-bridge listening" log line. */
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stdout lines and stderr chunks, in arrival order. */
  output: string[];
}

/** The source entry point under tsx. */
export const SOURCE_ENTRY = ["--import", "tsx", "app/main.ts"] as const;
/** The node flags `npm start`, the systemd unit and the image run the bundle with. */
export const BUNDLE_NODE_ARGS = ["--max-semi-space-size=4", "--heap-growing-percent=25", "--no-allocation-site-pretenuring"] as const;
/**
 * The environment they add, both glibc malloc settings, neither with a CPU cost measurable
 * in `npm run bench`: glibc keeps up to 8 malloc arenas per core for a process's threads
 * (the libuv pool where SQLite runs, V8's helpers), and two hold the bridge's native
 * allocations in 4-5 MB less RSS; and its mmap threshold, which starts at 128 KiB, rises to
 * the size of any mapped block freed (start-up frees many), after which such blocks come
 * from the heap and their free space stays resident. Fixed at 32 KiB, blocks that size and
 * larger go back to the kernel when freed: about 4 MB less idle RSS.
 */
export const BUNDLE_ENV = { MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "32768" } as const;
export const BUNDLE_FILE = "dist/wb-bridge.js";
/** What `npm start`, the systemd unit and the image run, after `npm run build`. */
export const BUNDLE_ENTRY = [...BUNDLE_NODE_ARGS, BUNDLE_FILE] as const;

/** `npm run build`: the bundle from the current source. */
export function buildBundle(stdio: "inherit" | "pipe" = "pipe"): void {
  execFileSync("npm", ["run", "-s", "build"], { cwd: repoRoot, stdio });
}

/** The real entry point, as a supervisor would start it; HTTP on an ephemeral loopback port unless `env` names one. */
function spawnEntryPoint(env: Record<string, string>, stdout: "pipe" | "ignore", entry: readonly string[] = SOURCE_ENTRY): ChildProcess {
  return spawn(process.execPath, [...entry], {
    cwd: repoRoot,
    env: { ...process.env, HTTP_HOST: "127.0.0.1", HTTP_PORT: "0", ...env, ...(stdout === "pipe" ? { LOG_LEVEL: "info" } : {}) },
    stdio: ["ignore", stdout, "pipe"],
  });
}

/**
 * Starts `app/main.ts` and resolves once it listens. Rejects with everything it printed
 * when it exits first or does not listen within `timeoutMs` (it is then killed).
 */
export async function startBridge(
  env: Record<string, string>,
  timeoutMs = 20_000,
  entry: readonly string[] = SOURCE_ENTRY,
): Promise<BridgeChild> {
  const proc = spawnEntryPoint(env, "pipe", entry);
  const output: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );
  proc.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
  const lines = createInterface({ input: proc.stdout! });
  let timer: NodeJS.Timeout | undefined;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      lines.on("line", (line) => {
        output.push(line);
        if (line.includes('"wb-bridge listening"')) resolve((JSON.parse(line) as { address: string }).address);
      });
      void exited.then(({ code, signal }) =>
        reject(new Error(`bridge exited (${code ?? signal}) before listening:\n${output.join("\n")}`)),
      );
      timer = setTimeout(() => {
        proc.kill("SIGKILL");
        reject(new Error(`bridge did not listen within ${timeoutMs} ms:\n${output.join("\n")}`));
      }, timeoutMs);
    });
    return { proc, url, exited, output };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the entry point expecting it to stop by itself (a failed start). */
export async function runToExit(env: Record<string, string>, timeoutMs = 20_000): Promise<{ code: number | null; stderr: string }> {
  const proc = spawnEntryPoint(env, "ignore");
  let stderr = "";
  proc.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => proc.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr };
}

/** POST /devices/:id/action `volume`; resolves once the bridge acknowledged exactly `level`. */
export async function setVolume(url: string, device: string, level: number): Promise<void> {
  const res = await fetch(`${url}/devices/${device}/action`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ action: "volume", params: { level } }),
  });
  if (res.status !== 200) throw new Error(`action failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { state: { volume: number } };
  if (body.state.volume !== level) throw new Error(`acknowledged ${body.state.volume}, sent ${level}`);
}
