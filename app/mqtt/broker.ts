import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { listenFailure, type PortUse } from "../shared/listen.js";
import { inProcessLink } from "./in-process-link.js";

export const embeddedBrokerPort = (host: string, port: number): PortUse => ({
  what: "embedded MQTT broker",
  host,
  port,
  change: 'MQTT_EMBEDDED_PORT=<port> (or "mqtt.embedded.port" in config/system.json; MQTT_URL=mqtt://host:port uses that broker instead)',
});

export interface EmbeddedBroker {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  /**
   * A connection to the broker from inside the process, for the bridge's own client: the
   * same MQTT on the wire, without the kernel's loopback in between. Once the broker is
   * closed the stream comes back already closed, as a refused connection would.
   */
  connectInProcess(): Duplex;
  /** Open connections made by `connectInProcess()` (the bridge's own client: 1 while connected). */
  readonly inProcessConnections: number;
  close(): Promise<void>;
}

/**
 * Starts an in-process aedes broker on TCP, for every other client; the bridge's own
 * connects through `connectInProcess()`. TCP_NODELAY on every accepted socket: without
 * it Nagle's algorithm meets the client's delayed ACK and a QoS 1 round trip takes tens
 * of milliseconds instead of a fraction of one.
 */
export async function startEmbeddedBroker(options: { host: string; port: number; log: Logger }): Promise<EmbeddedBroker> {
  const log = options.log;
  // Loaded here, not at start: with an external broker (a Wiren Board's mosquitto) aedes
  // and its dependencies would only cost memory.
  const { Aedes } = await import("aedes");
  const broker = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const links = new Set<Duplex>();
  const track = <T extends Socket | Duplex>(set: Set<T>, connection: T) => {
    set.add(connection);
    connection.on("close", () => set.delete(connection));
  };
  const server: Server = createServer((socket) => {
    socket.setNoDelay(true);
    track(sockets, socket);
    broker.handle(socket);
  });
  broker.on("clientError", (client, err) => log.debug({ clientId: client.id, err: err.message }, "mqtt client error"));
  broker.on("connectionError", (_client, err) => log.debug({ err: err.message }, "mqtt connection error"));

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((err: unknown) => {
    broker.close();
    throw new Error(listenFailure(embeddedBrokerPort(options.host, options.port), err), { cause: err });
  });

  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  log.info({ host: options.host, port }, "embedded MQTT broker listening");

  let closed: Promise<void> | null = null;
  return {
    host: options.host,
    port,
    url: `mqtt://${options.host.includes(":") ? `[${options.host}]` : options.host}:${port}`,
    connectInProcess() {
      const [clientEnd, brokerEnd] = inProcessLink();
      if (closed) {
        clientEnd.destroy();
        return clientEnd;
      }
      track(links, brokerEnd);
      broker.handle(brokerEnd);
      return clientEnd;
    },
    get inProcessConnections() {
      return links.size;
    },
    close() {
      closed ??= (async () => {
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        await new Promise<void>((resolve) => broker.close(() => resolve()));
        for (const connection of [...sockets, ...links]) connection.destroy();
        await serverClosed;
      })();
      return closed;
    },
  };
}
