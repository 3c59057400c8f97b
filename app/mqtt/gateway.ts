import { createRequire } from "node:module";
import { connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import type { IClientOptions, MqttClient, UniqueMessageIdProvider } from "mqtt";
import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import { redactUrl } from "../shared/urls.js";
import { coalesceWrites } from "./coalesce.js";
import { assertPublishableTopic, topicMatches } from "./topics.js";

// The client's own modules, not mqtt's index, which also loads every transport it can build
// (tls, ws, socks with ip-address): the gateway builds its stream itself. Required, since
// what an ES default import of these CommonJS modules gives differs between Node and vitest;
// and on first start rather than at import, so that the entry point has set up what they
// load first (`silenceDisabledDebug`).
const requireModule = createRequire(import.meta.url);
function clientModules(): { Client: typeof MqttClient; IdProvider: typeof UniqueMessageIdProvider } {
  return {
    Client: (requireModule("mqtt/lib/client") as { default: typeof MqttClient }).default,
    IdProvider: (requireModule("mqtt/lib/unique-message-id-provider") as { default: typeof UniqueMessageIdProvider }).default,
  };
}

/**
 * Subscriptions (commands on `/on`, the topics drivers follow) are QoS 0. The session is
 * clean, so QoS 1 would buy no redelivery across a reconnect, only a PUBACK written back
 * for every command and the broker's in-flight bookkeeping (mosquitto holds at most 20
 * unacknowledged messages per client by default, which throttles a burst of commands).
 * What the bridge publishes stays QoS 1, as the Wiren Board conventions ask.
 */
export const SUBSCRIPTION_QOS = 0;

export interface InboundMessage {
  topic: string;
  payload: Buffer;
  /** True when the broker delivered a stored retained message rather than a live one. */
  retain: boolean;
}

export type MessageHandler = (message: InboundMessage) => void;

export type ConnectHook = () => void | Promise<void>;

interface RegisteredHook {
  run: ConnectHook;
  /** The connection (by count) this hook last ran for: at most once per connection. */
  ranFor: number;
}

export interface PublishOptions {
  retain?: boolean;
  qos?: 0 | 1;
}

export interface OutboundMessage extends PublishOptions {
  topic: string;
  payload: string;
}

export interface MqttGatewayOptions {
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  keepaliveS?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Published by the broker if the bridge disappears without a clean disconnect. */
  will?: { topic: string; payload: string; retain: boolean };
  log: Logger;
  /** Observability: every message received (`in`) and every publish the broker took (`out`). Must not throw. */
  onMessage?: (direction: "in" | "out") => void;
}

export class MqttNotConnectedError extends Error {
  constructor(topic: string) {
    super(`MQTT broker is not connected; cannot publish to ${topic}`);
    this.name = "MqttNotConnectedError";
  }
}

/**
 * The bridge's only MQTT client. Owns the mqtt.js client, sets TCP_NODELAY on its
 * socket, reconnects forever with capped exponential backoff, resubscribes every
 * filter after each connect and then runs the connect hooks (which republish retained
 * state, so a broker restart without persistence loses nothing).
 */
export class MqttGateway {
  private client: MqttClient | null = null;
  private readonly handlers = new Map<string, Set<MessageHandler>>();
  private readonly connectHooks = new Set<RegisteredHook>();
  private readonly disconnectHooks = new Set<() => void>();
  private up = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectDelay: number;
  private stopping = false;
  private connections = 0;
  private readonly log: Logger;
  private brokerUrl: string;
  private connectInProcess: (() => Duplex) | null = null;

  constructor(private readonly options: MqttGatewayOptions) {
    this.log = options.log;
    this.brokerUrl = options.url;
    this.reconnectDelay = options.reconnectMinMs ?? 500;
  }

  get url(): string {
    return this.brokerUrl;
  }

  /**
   * Only before start(): the embedded broker's address is known once it listens. With
   * `connectInProcess` (the embedded broker's) the client connects through it instead of
   * TCP; `url` still names the broker in logs and `GET /health`.
   */
  setUrl(url: string, connectInProcess?: () => Duplex): void {
    if (this.client) throw new Error("cannot change the broker URL of a started MQTT gateway");
    this.brokerUrl = url;
    this.connectInProcess = connectInProcess ?? null;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  /** How many times a connection was established (1 after the first connect). */
  get connectCount(): number {
    return this.connections;
  }

  /**
   * Connects. Resolves on the first successful connect, or after `waitMs` with the
   * client still retrying in the background: the bridge serves HTTP and keeps state
   * while the broker is away, and republishes everything once it is back.
   */
  async start(waitMs = 10_000): Promise<void> {
    if (this.client) return;
    this.stopping = false;
    const url = new URL(this.brokerUrl);
    const secure = url.protocol === "mqtts:";
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(url.port || (secure ? 8883 : 1883));
    const { Client, IdProvider } = clientModules();
    const clientOptions: IClientOptions = {
      clientId: this.options.clientId,
      protocolVersion: 4,
      clean: true,
      keepalive: this.options.keepaliveS ?? 30,
      // Reconnection is ours (capped backoff); mqtt.js would retry at a fixed period.
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      resubscribe: false,
      queueQoSZero: false,
      // mqtt-packet's default number cache is 65,536 Buffers (6 MB of heap) built on the first write.
      writeCache: false,
      // The default provider wraps at 65535 and reuses ids still in flight when a burst
      // (republishing thousands of retained topics) outruns the acks; this one queues instead.
      messageIdProvider: new IdProvider(),
      username: this.options.username ?? (url.username ? decodeURIComponent(url.username) : undefined),
      password: this.options.password ?? (url.password ? decodeURIComponent(url.password) : undefined),
      will: this.options.will ? { ...this.options.will, qos: 1 } : undefined,
      // mqtt.js formats a debug() call for every packet even when debug output is off,
      // about 1% of the bridge's CPU under load; its errors still reach us as events.
      log: () => {},
    };
    const inProcess = this.connectInProcess;
    const streamBuilder = (): Duplex => {
      if (inProcess) {
        const stream = inProcess();
        coalesceWrites(stream);
        return stream;
      }
      const socket = secure ? tlsConnect({ host, port, servername: host }) : netConnect({ host, port });
      socket.setNoDelay(true);
      coalesceWrites(socket);
      return socket;
    };
    const client = new Client(streamBuilder, clientOptions);
    this.client = client;

    const firstConnect = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ url: redactUrl(this.brokerUrl) }, "MQTT broker not reachable yet; continuing and retrying");
        resolve();
      }, waitMs);
      client.once("connect", () => {
        clearTimeout(timer);
        resolve();
      });
    });

    client.on("connect", () => void this.handleConnect());
    client.on("message", (topic, payload, packet) => {
      this.options.onMessage?.("in");
      this.dispatch({ topic, payload, retain: packet.retain });
    });
    client.on("error", (err) => this.log.warn({ err: errorMessage(err) }, "MQTT client error"));
    client.on("close", () => {
      this.handleDisconnect();
      this.scheduleReconnect();
    });
    await firstConnect;
  }

  /** Disconnects cleanly (the will is not sent). Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const client = this.client;
    this.client = null;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => client.end(true, {}, () => resolve()), 2000);
      client.end(false, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Resolves when the broker acknowledged (QoS 1) or the packet was written (QoS 0). */
  publish(topic: string, payload: string | Buffer, options: PublishOptions = {}): Promise<void> {
    assertPublishableTopic(topic);
    const client = this.client;
    if (!client?.connected) return Promise.reject(new MqttNotConnectedError(topic));
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, { qos: options.qos ?? 1, retain: options.retain ?? false }, (err) => {
        if (err) return reject(err);
        this.options.onMessage?.("out");
        resolve();
      });
    });
  }

  /**
   * Publishes many messages with at most `window` unacknowledged at a time, so thousands
   * of retained topics neither flood the broker nor block the event loop. Never rejects:
   * failures are logged (topic only) and the rest still go out.
   */
  async publishMany(messages: Iterable<OutboundMessage>, window = 512): Promise<void> {
    let inFlight: Promise<void>[] = [];
    for (const m of messages) {
      inFlight.push(
        this.publish(m.topic, m.payload, m).catch((err: unknown) => {
          this.log.debug({ topic: m.topic, err: errorMessage(err) }, "publish skipped");
        }),
      );
      if (inFlight.length >= window) {
        await Promise.all(inFlight);
        inFlight = [];
      }
    }
    await Promise.all(inFlight);
  }

  /** Registers a handler; the filter is (re)subscribed on every connect. Returns an unsubscribe. */
  async subscribe(filter: string, handler: MessageHandler): Promise<() => Promise<void>> {
    let set = this.handlers.get(filter);
    const isNew = !set;
    if (!set) {
      set = new Set();
      this.handlers.set(filter, set);
    }
    set.add(handler);
    if (isNew && this.client?.connected) await this.subscribeFilters([filter]);
    return async () => {
      const current = this.handlers.get(filter);
      if (!current) return;
      current.delete(handler);
      if (current.size === 0) {
        this.handlers.delete(filter);
        if (this.client?.connected) await this.client.unsubscribeAsync(filter);
      }
    };
  }

  /** Runs after every later connect, once subscriptions are in place. Returns a remover. */
  onConnect(hook: ConnectHook): () => void {
    const entry: RegisteredHook = { run: hook, ranFor: 0 };
    this.connectHooks.add(entry);
    return () => this.connectHooks.delete(entry);
  }

  /**
   * onConnect for something that must also happen for the connection that is up now
   * (publishing retained state): runs the hook exactly once per connection. A hook
   * registered while a connect's hooks are still running would otherwise run twice,
   * once here and once by that connect (a Set's iteration visits what is added to it).
   * Resolves once it ran for the current connection, at once when disconnected.
   */
  async onEveryConnection(hook: ConnectHook): Promise<() => void> {
    const entry: RegisteredHook = { run: hook, ranFor: 0 };
    this.connectHooks.add(entry);
    const remove = () => {
      this.connectHooks.delete(entry);
    };
    if (this.up && this.connected) {
      entry.ranFor = this.connections;
      await hook();
    }
    return remove;
  }

  /**
   * Runs when an established connection is lost (not on a clean stop, not for failed
   * reconnect attempts), after `connected` turned false. Returns a remover.
   */
  onDisconnect(hook: () => void): () => void {
    this.disconnectHooks.add(hook);
    return () => this.disconnectHooks.delete(hook);
  }

  private handleDisconnect(): void {
    if (!this.up) return;
    this.up = false;
    if (this.stopping) return;
    for (const hook of this.disconnectHooks) {
      try {
        hook();
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, "MQTT disconnect hook failed");
      }
    }
  }

  private async handleConnect(): Promise<void> {
    this.up = true;
    this.connections += 1;
    const connection = this.connections;
    this.reconnectDelay = this.options.reconnectMinMs ?? 500;
    this.log.info({ url: redactUrl(this.brokerUrl), connects: this.connections }, "MQTT connected");
    try {
      await this.subscribeFilters([...this.handlers.keys()]);
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, "MQTT resubscribe failed");
    }
    for (const hook of this.connectHooks) {
      // Ran already: registered by onEveryConnection during this connect, or a newer connect got to it.
      if (hook.ranFor >= connection) continue;
      hook.ranFor = connection;
      try {
        await hook.run();
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, "MQTT connect hook failed");
      }
    }
  }

  private async subscribeFilters(filters: string[]): Promise<void> {
    if (!this.client || filters.length === 0) return;
    await this.client.subscribeAsync(filters, { qos: SUBSCRIPTION_QOS });
  }

  private scheduleReconnect(): void {
    if (this.stopping || !this.client || this.reconnectTimer) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(delay * 2, this.options.reconnectMaxMs ?? 30_000);
    this.log.info({ delayMs: delay }, "MQTT disconnected; reconnecting");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.stopping) this.client?.reconnect();
    }, delay);
  }

  private dispatch(message: InboundMessage): void {
    for (const [filter, set] of this.handlers) {
      if (!topicMatches(filter, message.topic)) continue;
      for (const handler of set) {
        try {
          handler(message);
        } catch (err) {
          this.log.error({ err: errorMessage(err), topic: message.topic }, "MQTT message handler failed");
        }
      }
    }
  }
}
