import { request as httpRequest, type IncomingMessage } from "node:http";
import type { FastifyInstance } from "fastify";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { buildApp } from "../../app/server.js";
import { captureLogger, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker } from "../helpers/mqtt.js";

interface SseFrame {
  id?: string;
  event?: string;
  data?: unknown;
  comment?: string;
}

/** A real SSE client over HTTP: collects frames and lets a test await one. */
class SseClient {
  readonly frames: SseFrame[] = [];
  private buffer = "";
  private waiters: Array<{ pred: (f: SseFrame) => boolean; resolve: (f: SseFrame) => void }> = [];
  closed: Promise<void>;

  private constructor(readonly response: IncomingMessage) {
    response.setEncoding("utf8");
    response.on("data", (chunk: string) => this.feed(chunk));
    this.closed = new Promise((resolve) => response.once("close", () => resolve()));
  }

  static open(url: string): Promise<SseClient> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, { headers: { accept: "text/event-stream" } }, (res) => resolve(new SseClient(res)));
      req.on("error", reject);
      req.end();
    });
  }

  waitFor(pred: (f: SseFrame) => boolean, timeoutMs = 5000): Promise<SseFrame> {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no matching SSE frame")), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  private feed(chunk: string): void {
    this.buffer += chunk;
    for (let end = this.buffer.indexOf("\n\n"); end >= 0; end = this.buffer.indexOf("\n\n")) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const frame: SseFrame = {};
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) frame.comment = line.slice(1).trim();
        else if (line.startsWith("id: ")) frame.id = line.slice(4);
        else if (line.startsWith("event: ")) frame.event = line.slice(7);
        else if (line.startsWith("data: ")) frame.data = JSON.parse(line.slice(6));
      }
      this.frames.push(frame);
      const matched = this.waiters.filter((w) => w.pred(frame));
      this.waiters = this.waiters.filter((w) => !matched.includes(w));
      for (const w of matched) w.resolve(frame);
    }
  }
}

describe("GET /events (Server-Sent Events)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance;
  let base: string;

  let logs: string[] = [];
  async function start(events = {}) {
    const captured = captureLogger();
    logs = captured.lines;
    const config = await testConfig(dir.path, broker.url, {
      scenarios: [{ scenario_id: "tv", name: "TV", devices: ["tv"], startup: [{ device: "tv", action: "power_on" }] }],
    });
    app = await buildApp(config, { logger: captured.log, events });
    await app.listen({ host: "127.0.0.1", port: 0 });
    const address = app.server.address();
    if (!address || typeof address === "string") throw new Error("no address");
    base = `http://127.0.0.1:${address.port}`;
  }

  beforeEach(async () => {
    dir = await tempDir();
    broker = await startTestBroker();
  });
  afterEach(async () => {
    await app?.close();
    await broker.close();
    await dir.remove();
  });

  it("streams state changes, scenario switches and failures with ids, and ends on shutdown", async () => {
    await start();
    const client = await SseClient.open(`${base}/events`);
    expect(client.response.headers["content-type"]).toMatch(/^text\/event-stream/);

    await fetch(`${base}/devices/tv/action`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ action: "volume", params: { level: 44 } }),
    });
    const state = await client.waitFor((f) => f.event === "device.state");
    expect(state.data).toMatchObject({
      device_id: "tv",
      changed: ["volume"],
      restored: false,
      source: "http",
      action: "volume",
      state: { volume: 44 },
    });

    await fetch(`${base}/devices/tv/action`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ action: "volume", params: { level: 400 } }),
    });
    const failed = await client.waitFor((f) => f.event === "action.failed");
    expect(failed.data).toMatchObject({ device_id: "tv", action: "volume", code: "invalid_params", source: "http" });

    await fetch(`${base}/scenario/switch`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "tv" }),
    });
    const switched = await client.waitFor((f) => f.event === "scenario.switched");
    const ids = client.frames.filter((f) => f.id !== undefined).map((f) => Number(f.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    expect(Number(switched.id)).toBeGreaterThan(Number(state.id));

    await app.close();
    await client.closed;
  });

  it("marks values restored at start so consumers can tell them from live changes", async () => {
    const config = await testConfig(dir.path, broker.url);
    const restoredFlags: boolean[] = [];
    app = await buildApp(config, { logger: captureLogger().log });
    app.bridge.bus.on("device.state", (e) => {
      restoredFlags.push(e.restored);
    });
    await app.ready();
    expect(restoredFlags).toEqual([true, true]);
    await app.bridge.devices.performAction("tv", "power_on", {}, "http");
    expect(restoredFlags).toEqual([true, true, false]);
  });

  it("sends keep-alive comments to idle clients", async () => {
    await start({ keepAliveMs: 20 });
    const client = await SseClient.open(`${base}/events`);
    expect((await client.waitFor((f) => f.comment === "keep-alive")).comment).toBe("keep-alive");
  });

  it("drops a client that does not read instead of buffering without bound", async () => {
    await start({ maxBufferedBytes: 64 * 1024 });
    const slow = await SseClient.open(`${base}/events`);
    slow.response.pause();
    const fast = await SseClient.open(`${base}/events`);
    // Large events fill the kernel's socket buffers, then our limit; a reader that keeps up is unaffected.
    const big = { blob: "x".repeat(100_000) };
    const dropped = () => logs.some((l) => l.includes("SSE client dropped") && l.includes("client too slow"));
    let n = 0;
    while (n < 500 && !dropped()) {
      app.bridge.bus.emit("device.state", { deviceId: "tv", state: big, changed: [], restored: false, source: "http" });
      n += 1;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    expect(dropped()).toBe(true);
    expect(n).toBeLessThan(500);
    slow.response.destroy();
    // The fast client keeps receiving.
    await app.bridge.devices.performAction("amp", "power_on", {}, "http");
    await fast.waitFor((f) => f.event === "device.state" && (f.data as { device_id: string }).device_id === "amp");
  });
});
