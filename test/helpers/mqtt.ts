import { connect as netConnect } from "node:net";
import { MqttClient } from "mqtt";
import { type EmbeddedBroker, startEmbeddedBroker } from "../../app/mqtt/broker.js";
import { topicMatches } from "../../app/mqtt/topics.js";
import { createLogger } from "../../app/observability/logger.js";

export interface Received {
  topic: string;
  payload: string;
  retain: boolean;
}

export function startTestBroker(): Promise<EmbeddedBroker> {
  return startEmbeddedBroker({ host: "127.0.0.1", port: 0, log: createLogger("silent") });
}

/**
 * A plain MQTT peer for tests: records everything it receives and lets a test await
 * a message matching a filter (and predicate) instead of sleeping.
 */
export class TestMqttClient {
  readonly received: Received[] = [];
  private waiters: Array<{ filter: string; pred: (m: Received) => boolean; resolve: (m: Received) => void }> = [];

  private constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      const m = { topic, payload: payload.toString("utf8"), retain: packet.retain };
      this.received.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (topicMatches(w.filter, m.topic) && w.pred(m)) {
          w.resolve(m);
          return false;
        }
        return true;
      });
    });
  }

  static async connect(url: string, clientId = `test-${Math.random().toString(16).slice(2)}`): Promise<TestMqttClient> {
    const u = new URL(url);
    const client = new MqttClient(
      () => {
        const socket = netConnect({ host: u.hostname, port: Number(u.port) });
        socket.setNoDelay(true);
        return socket;
      },
      { clientId, protocolVersion: 4, clean: true, reconnectPeriod: 0 },
    );
    await new Promise<void>((resolve, reject) => {
      client.once("connect", () => resolve());
      client.once("error", reject);
    });
    return new TestMqttClient(client);
  }

  async subscribe(filter: string): Promise<void> {
    await this.client.subscribeAsync(filter, { qos: 1 });
  }

  async publish(topic: string, payload: string, retain = false): Promise<void> {
    await this.client.publishAsync(topic, payload, { qos: 1, retain });
  }

  /** Resolves with the first message (already received or future) matching filter and predicate. */
  waitFor(filter: string, pred: (m: Received) => boolean = () => true, timeoutMs = 5000): Promise<Received> {
    const seen = this.received.find((m) => topicMatches(filter, m.topic) && pred(m));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no message on ${filter} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        filter,
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  /** Messages received so far on topics matching the filter. */
  on(filter: string): Received[] {
    return this.received.filter((m) => topicMatches(filter, m.topic));
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}
