/**
 * Baseline process for the broker round trip: the embedded aedes broker and an echo
 * client in one process, connected in-process as the bridge's own client is, but with
 * no state, no SQLite and no devices. Prints "ready <port>" once the echo client is
 * subscribed.
 */
import { startEmbeddedBroker } from "../../app/mqtt/broker.js";
import { SUBSCRIPTION_QOS } from "../../app/mqtt/gateway.js";
import { createLogger } from "../../app/observability/logger.js";
import { BenchPeer } from "./mqtt-peer.js";

const port = Number(process.env.ECHO_BROKER_PORT ?? 0);
// With ECHO_BROKER_URL only the echo client runs here, against that broker (mosquitto).
const external = process.env.ECHO_BROKER_URL;
const broker = external ? null : await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });
// Connected as the bridge connects: in-process to its embedded broker, over TCP to any other.
const echo = broker
  ? await BenchPeer.over(() => broker.connectInProcess(), "bench-echo", "the embedded broker")
  : await BenchPeer.connect(external as string, "bench-echo");
echo.client.on("message", (topic, payload) => {
  echo.client.publish(`bench/resp/${topic.slice("bench/req/".length)}`, payload, { qos: 1, retain: false });
});
// On the wire as the bridge is: commands in at its subscription QoS, answers out at QoS 1.
await echo.subscribe(["bench/req/+"], SUBSCRIPTION_QOS);
process.stdout.write(`ready ${new URL(external ?? (broker as NonNullable<typeof broker>).url).port}\n`);

const stop = () => {
  void echo
    .close()
    .then(() => broker?.close())
    .finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
