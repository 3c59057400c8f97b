import { type ChildProcess, spawn } from "node:child_process";
import { Agent, type IncomingHttpHeaders, request } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";
import { readStoredValue } from "../helpers/sqlite.js";

const repoRoot = join(import.meta.dirname, "../..");
/** The simulated driver's volume before any action. */
const DEFAULT_VOLUME = 20;

interface Child {
  proc: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: string[];
  /** Resolves with the first output line from index `from` on (already seen or future) that matches. */
  line(pred: (line: string) => boolean, from?: number): Promise<string>;
}

/** Starts the real entry point (`app/main.ts` under tsx) and resolves once it listens. */
async function startBridge(env: Record<string, string>): Promise<Child> {
  const proc = spawn(process.execPath, ["--import", "tsx", "app/main.ts"], {
    cwd: repoRoot,
    env: { ...process.env, ...env, HTTP_HOST: "127.0.0.1", HTTP_PORT: "0", LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  const waiters: Array<{ pred: (line: string) => boolean; resolve: (line: string) => void }> = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once("exit", (code, signal) => resolve({ code, signal })),
  );
  proc.stderr?.on("data", (d: Buffer) => output.push(d.toString()));
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    output.push(line);
    for (const w of waiters.splice(0)) {
      if (w.pred(line)) w.resolve(line);
      else waiters.push(w);
    }
  });
  const line = (pred: (line: string) => boolean, from = 0) => {
    const seen = output.slice(from).find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      waiters.push({ pred, resolve });
      void exited.then(({ code }) => reject(new Error(`bridge exited with ${code} before the awaited line:\n${output.join("\n")}`)));
    });
  };
  const listening = await line((l) => l.includes('"wb-bridge listening"'));
  return { proc, url: (JSON.parse(listening) as { address: string }).address, exited, output, line };
}

type Outcome =
  | { kind: "response"; status: number; body: string; headers: IncomingHttpHeaders }
  | { kind: "error"; code: string; reusedSocket: boolean };

/** POST /devices/:id/action with a volume; settles with the response or the socket error, never rejects. */
function postVolume(url: string, agent: Agent, device: string, level: number): Promise<Outcome> {
  const body = JSON.stringify({ action: "volume", params: { level } });
  return new Promise((resolve) => {
    const req = request(
      `${url}/devices/${device}/action`,
      { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ kind: "response", status: res.statusCode ?? 0, body: text, headers: res.headers }));
        res.on("error", (err: NodeJS.ErrnoException) =>
          resolve({ kind: "error", code: err.code ?? err.message, reusedSocket: req.reusedSocket }),
        );
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) =>
      resolve({ kind: "error", code: err.code ?? err.message, reusedSocket: req.reusedSocket }),
    );
    req.end(body);
  });
}

/**
 * A request the closing bridge turned away: a 503, a refused connection, or a reset of a
 * connection on which the server had read no request yet (Node closes those as idle: a
 * freshly accepted socket, or a kept-alive one the client reused just then). That none of
 * them was executed is checked against the database, not assumed.
 */
function turnedAway(o: Outcome): boolean {
  if (o.kind === "response") return o.status === 503;
  return o.code === "ECONNREFUSED" || o.code === "ECONNRESET";
}

async function storedVolume(dbPath: string, device: string): Promise<number | null> {
  const record = (await readStoredValue(dbPath, `device:${device}`)) as { state: { volume: number } } | null;
  return record ? record.state.volume : null;
}

describe("graceful shutdown of the real process", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  const children: Child[] = [];
  const agents: Agent[] = [];

  const bridgeEnv = async (devices: string[], shutdownTimeoutMs: number) => {
    const configDir = await writeConfigDir(dir.path, {
      // Hundreds of writes from one client: the write rate limit would turn them into 429s.
      system: { shutdown_timeout_ms: shutdownTimeoutMs, persistence: { backups: { interval_s: 0 } }, rate_limit: { max: 0 } },
      devices: devices.map((id) => simulatedDevice(id)),
    });
    return { CONFIG_DIR: configDir, STATE_PATH: join(dir.path, "db", "state.db"), MQTT_URL: broker.url };
  };
  const start = async (env: Record<string, string>) => {
    const child = await startBridge(env);
    children.push(child);
    return child;
  };
  const keepAliveAgent = (maxSockets: number) => {
    const agent = new Agent({ keepAlive: true, maxSockets });
    agents.push(agent);
    return agent;
  };

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });

  afterEach(async () => {
    for (const a of agents.splice(0)) a.destroy();
    for (const c of children.splice(0)) {
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGKILL");
      await c.exited;
    }
    await broker.close();
    await dir.remove();
  });

  it("SIGTERM under load: each action is acknowledged and kept, or turned away unexecuted; exit 0", async () => {
    const devices = Array.from({ length: 60 }, (_, i) => `dev${i}`);
    const perDevice = 5;
    const env = await bridgeEnv(devices, 10_000);
    const bridge = await start(env);
    const agent = keepAliveAgent(32);

    // Every device gets volumes 21, 22, ... one request at a time, all devices at once:
    // up to 60 requests in flight over 32 keep-alive sockets. SIGTERM at the first 200.
    let signalled = false;
    const outcomes: Array<{ device: string; level: number; outcome: Outcome }> = [];
    const lastAcked = new Map<string, number>();
    const worker = async (device: string) => {
      for (let step = 1; step <= perDevice; step++) {
        const level = DEFAULT_VOLUME + step;
        const outcome = await postVolume(bridge.url, agent, device, level);
        outcomes.push({ device, level, outcome });
        if (outcome.kind !== "response" || outcome.status !== 200) return;
        expect((JSON.parse(outcome.body) as { state: { volume: number } }).state.volume).toBe(level);
        lastAcked.set(device, level);
        if (!signalled) {
          signalled = true;
          bridge.proc.kill("SIGTERM");
        }
      }
    };
    await Promise.all(devices.map(worker));
    expect(await bridge.exited).toEqual({ code: 0, signal: null });
    expect(bridge.output.join("\n")).toContain("bridge stopped");

    const unexpected = outcomes.filter(({ outcome }) => !(outcome.kind === "response" && outcome.status === 200) && !turnedAway(outcome));
    expect(unexpected, "only 200, 503, refused or reset before being read").toEqual([]);
    const acked = outcomes.filter(({ outcome }) => outcome.kind === "response" && outcome.status === 200).length;
    expect(acked).toBeGreaterThan(0);
    // SIGTERM came while work was still queued: some requests were turned away.
    expect(acked).toBeLessThan(devices.length * perDevice);

    // The file holds exactly what was acknowledged (a turned-away request changed nothing) ...
    for (const device of devices) {
      const expected = lastAcked.get(device) ?? null;
      expect(await storedVolume(env.STATE_PATH, device), device).toBe(expected);
    }
    // ... and a restart restores it.
    const again = await start(env);
    for (const device of devices) {
      const res = await fetch(`${again.url}/devices/${device}/state`);
      const { state } = (await res.json()) as { state: { volume: number } };
      expect(state.volume, device).toBe(lastAcked.get(device) ?? DEFAULT_VOLUME);
    }
  }, 60_000);

  it("an action in flight on a keep-alive connection at SIGTERM commits, and its connection does not hold shutdown", async () => {
    const env = await bridgeEnv(["tv"], 5_000);
    const bridge = await start(env);
    const agent = keepAliveAgent(1);
    // A first request leaves the agent with a kept-alive socket to reuse.
    const warm = await postVolume(bridge.url, agent, "tv", 30);
    expect(warm).toMatchObject({ kind: "response", status: 200 });

    // Headers now, body later: the request is routed before SIGTERM and completes after it.
    const body = JSON.stringify({ action: "volume", params: { level: 77 } });
    const response = new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
      const req = request(
        `${bridge.url}/devices/tv/action`,
        { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (text += chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }));
        },
      );
      req.on("error", reject);
      const from = bridge.output.length;
      req.write(body.slice(0, 10));
      void bridge
        .line((l) => l.includes('"incoming request"'), from)
        .then(() => {
          bridge.proc.kill("SIGTERM");
          return bridge.line((l) => l.includes('"shutting down"'));
        })
        .then(() => req.end(body.slice(10)), reject);
    });

    const res = await response;
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body) as { state: { volume: number } }).state.volume).toBe(77);
    expect(res.connection).toBe("close");
    // The agent still holds its socket; the server must not wait for the client to drop it.
    expect(await bridge.exited).toEqual({ code: 0, signal: null });
    expect(await storedVolume(env.STATE_PATH, "tv")).toBe(77);
  });

  it("exits 1 with a log line when shutdown does not finish within shutdown_timeout_ms", async () => {
    const env = await bridgeEnv(["tv"], 300);
    const bridge = await start(env);
    const agent = keepAliveAgent(1);
    // A request whose body never arrives keeps the server from closing.
    const req = request(`${bridge.url}/devices/tv/action`, {
      method: "POST",
      agent,
      headers: { "content-type": "application/json", "content-length": 100 },
    });
    req.on("error", () => undefined);
    const from = bridge.output.length;
    req.write("{");
    await bridge.line((l) => l.includes('"incoming request"'), from);
    bridge.proc.kill("SIGTERM");
    expect(await bridge.exited).toEqual({ code: 1, signal: null });
    const timedOut = bridge.output.find((l) => l.includes("shutdown timed out"));
    expect(timedOut).toBeDefined();
    expect(JSON.parse(timedOut!)).toMatchObject({ level: 50, timeoutMs: 300 });
    req.destroy();
  });
});
