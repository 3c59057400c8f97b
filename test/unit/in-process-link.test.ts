import { once } from "node:events";
import type { Duplex } from "node:stream";
import { MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import { type EmbeddedBroker, startEmbeddedBroker } from "../../app/mqtt/broker.js";
import { MqttGateway } from "../../app/mqtt/gateway.js";
import { inProcessLink } from "../../app/mqtt/in-process-link.js";
import { createLogger } from "../../app/observability/logger.js";
import { TestMqttClient } from "../helpers/mqtt.js";

/** Everything `stream` emits as 'data' until it has `bytes` bytes. */
function readBytes(stream: NodeJS.ReadableStream, bytes: number): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length < bytes) return;
      stream.off("data", onData);
      resolve(Buffer.concat(chunks).toString("utf8"));
    };
    stream.on("data", onData);
  });
}

describe("inProcessLink: an in-memory connection", () => {
  it("carries bytes both ways, in order", async () => {
    const [a, b] = inProcessLink();
    const atB = readBytes(b, 6);
    a.write("one");
    a.write("two");
    expect(await atB).toBe("onetwo");
    const atA = readBytes(a, 4);
    b.write("back");
    expect(await atA).toBe("back");
  });

  it("delivers after the writer's call returns, never inside it", async () => {
    const [a, b] = inProcessLink();
    const seen: string[] = [];
    b.on("data", (chunk: Buffer) => seen.push(chunk.toString("utf8")));
    a.write("x");
    expect(seen).toEqual([]);
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(seen).toEqual(["x"]);
  });

  it("holds the writer back while the reader's buffer is full, and lets it go once it reads", async () => {
    const [a, b] = inProcessLink();
    const big = Buffer.alloc(64 * 1024, 1);
    let callbacks = 0;
    // Nobody reads b: its buffer fills up to its high-water mark and the write callbacks stop.
    const writes = Array.from({ length: 8 }, () => new Promise<void>((resolve) => a.write(big, () => resolve(void callbacks++))));
    // Delivery runs on the next tick: a few turns are more than it needs to stall.
    for (let turn = 0; turn < 5; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
    expect(b.readableLength).toBeGreaterThan(0);
    expect(callbacks).toBeLessThan(8);
    expect(a.writableLength).toBeGreaterThan(0);

    let received = 0;
    b.on("data", (chunk: Buffer) => (received += chunk.length));
    await Promise.all(writes);
    expect(received).toBe(8 * big.length);
  });

  it("closes both ends when one is destroyed, and ends the reader when the writer ends", async () => {
    const [a, b] = inProcessLink();
    const bClosed = once(b, "close");
    a.destroy();
    await bClosed;
    expect(b.destroyed).toBe(true);

    const [c, d] = inProcessLink();
    d.resume();
    const ended = once(d, "end");
    c.end("last");
    await ended;
  });
});

describe("the embedded broker's in-process connections", () => {
  let broker: EmbeddedBroker | null = null;
  const cleanup: Array<() => Promise<void>> = [];

  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
    await broker?.close();
    broker = null;
  });

  function inProcessClient(b: EmbeddedBroker, clientId: string): Promise<MqttClient> {
    const client = new MqttClient(() => b.connectInProcess(), { clientId, protocolVersion: 4, reconnectPeriod: 0 });
    return new Promise((resolve, reject) => {
      client.once("connect", () => resolve(client));
      client.once("error", reject);
    });
  }

  it("speak MQTT with the broker's TCP clients, both ways", async () => {
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port: 0, log: createLogger("silent") });
    const b = broker;
    const inside = await inProcessClient(b, "inside");
    cleanup.push(() => inside.endAsync());
    expect(b.inProcessConnections).toBe(1);
    const outside = await TestMqttClient.connect(b.url);
    cleanup.push(() => outside.close());

    await outside.subscribe("from/inside");
    await inside.publishAsync("from/inside", "hello", { qos: 1, retain: true });
    expect((await outside.waitFor("from/inside")).payload).toBe("hello");

    await inside.subscribeAsync("from/outside", { qos: 1 });
    const got = new Promise<[string, Buffer]>((resolve) => inside.once("message", (topic, payload) => resolve([topic, payload])));
    await outside.publish("from/outside", "world");
    const [topic, payload] = await got;
    expect([topic, payload.toString()]).toEqual(["from/outside", "world"]);
  });

  it("are closed with the broker, and refused after it closed", async () => {
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port: 0, log: createLogger("silent") });
    const b = broker;
    const inside = await inProcessClient(b, "inside");
    const closed = new Promise<void>((resolve) => inside.once("close", () => resolve()));
    await b.close();
    await closed;
    expect(inside.connected).toBe(false);
    expect(b.inProcessConnections).toBe(0);
    expect(b.connectInProcess().destroyed).toBe(true);
    inside.end(true);
  });

  it("carry the bridge's gateway, which connects again, resubscribed, when one drops", async () => {
    broker = await startEmbeddedBroker({ host: "127.0.0.1", port: 0, log: createLogger("silent") });
    const b = broker;
    const opened: Duplex[] = [];
    const gateway = new MqttGateway({
      url: "mqtt://unused.invalid:1",
      clientId: "bridge",
      log: createLogger("silent"),
      reconnectMinMs: 10,
    });
    gateway.setUrl(b.url, () => {
      const stream = b.connectInProcess();
      opened.push(stream);
      return stream;
    });
    cleanup.push(() => gateway.stop());
    const received: string[] = [];
    await gateway.subscribe("cmd/#", (message) => received.push(message.payload.toString()));
    await gateway.start(5_000);
    expect(gateway.url).toBe(b.url);
    expect(b.inProcessConnections).toBe(1);

    const sender = await TestMqttClient.connect(b.url);
    cleanup.push(() => sender.close());
    await sender.publish("cmd/a", "1");
    await expect.poll(() => received).toEqual(["1"]);

    (opened[0] as Duplex).destroy();
    await expect.poll(() => gateway.connectCount).toBe(2);
    expect(opened).toHaveLength(2);
    await expect.poll(() => b.inProcessConnections).toBe(1);
    await sender.publish("cmd/b", "2");
    await expect.poll(() => received).toEqual(["1", "2"]);
  });
});
