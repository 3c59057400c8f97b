import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { MqttClient } from "mqtt";

interface Waiter {
  payload: string;
  resolve: () => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A bench MQTT client: TCP_NODELAY, MQTT 3.1.1, and one pending expectation per topic
 * (a closed-loop worker never has two requests outstanding on the same topic).
 */
export class BenchPeer {
  private readonly waiters = new Map<string, Waiter>();
  /** Last payload seen per topic, retained or live. */
  readonly last = new Map<string, string>();

  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      const text = payload.toString("utf8");
      this.last.set(topic, text);
      const waiter = this.waiters.get(topic);
      if (waiter && waiter.payload === text) {
        this.waiters.delete(topic);
        clearTimeout(waiter.timer);
        waiter.resolve();
      }
    });
  }

  static connect(url: string, clientId: string): Promise<BenchPeer> {
    const u = new URL(url);
    if (u.hostname !== "127.0.0.1") throw new Error(`bench peers only connect to 127.0.0.1, not ${u.hostname}`);
    return BenchPeer.over(
      () => {
        const socket = netConnect({ host: u.hostname, port: Number(u.port) });
        socket.setNoDelay(true);
        return socket;
      },
      clientId,
      url,
    );
  }

  /** A peer on the stream `connect` opens (an embedded broker's in-process connection, say); `label` names it in errors. */
  static over(connect: () => Duplex, clientId: string, label: string): Promise<BenchPeer> {
    const client = new MqttClient(connect, { clientId, protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 5000 });
    return new Promise((resolve, reject) => {
      client.once("connect", () => {
        client.off("error", reject);
        resolve(new BenchPeer(client));
      });
      client.once("error", reject);
      client.once("close", () => reject(new Error(`MQTT connection to ${label} closed before CONNACK`)));
    });
  }

  async subscribe(filters: string[], qos: 0 | 1 = 1): Promise<void> {
    const granted = await this.client.subscribeAsync(filters, { qos });
    const refused = granted.filter((g) => g.qos === 128);
    if (refused.length > 0) throw new Error(`subscription refused: ${refused.map((g) => g.topic).join(", ")}`);
  }

  /** Publishes (QoS 1, not retained) and resolves when `payload` arrives on `replyTopic`. */
  request(topic: string, payload: string, replyTopic: string, timeoutMs: number): Promise<void> {
    if (this.waiters.has(replyTopic)) return Promise.reject(new Error(`a request on ${replyTopic} is already pending`));
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(replyTopic);
        reject(new Error(`no "${payload}" on ${replyTopic} within ${timeoutMs} ms (last seen: ${this.last.get(replyTopic) ?? "nothing"})`));
      }, timeoutMs);
      this.waiters.set(replyTopic, { payload, resolve, reject, timer });
    });
    // The PUBACK is not waited for: the answer on replyTopic implies the broker had it.
    this.client.publish(topic, payload, { qos: 1, retain: false }, (err) => {
      const waiter = this.waiters.get(replyTopic);
      if (err && waiter) {
        this.waiters.delete(replyTopic);
        clearTimeout(waiter.timer);
        waiter.reject(err);
      }
    });
    return answered;
  }

  /** Waits until a payload has been seen on `topic` (e.g. a retained value after subscribing). */
  async waitForAny(topic: string, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = this.last.get(topic);
      if (seen !== undefined) return seen;
      if (Date.now() > deadline) throw new Error(`nothing received on ${topic} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    for (const waiter of this.waiters.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("peer closed"));
    }
    this.waiters.clear();
    await this.client.endAsync(false).catch(() => this.client.endAsync(true));
  }
}

export async function connectPeers(url: string, count: number, prefix: string): Promise<BenchPeer[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => BenchPeer.connect(url, `${prefix}-${i}`)));
}

export async function closePeers(peers: readonly BenchPeer[]): Promise<void> {
  await Promise.allSettled(peers.map((p) => p.close()));
}
