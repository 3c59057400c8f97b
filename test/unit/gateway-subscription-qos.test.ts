import { once } from "node:events";
import { createServer } from "node:net";
import { Aedes, type Client, type Subscription } from "aedes";
import { afterEach, describe, expect, it } from "vitest";
import { MqttGateway } from "../../app/mqtt/gateway.js";
import { createLogger } from "../../app/observability/logger.js";
import { TestMqttClient } from "../helpers/mqtt.js";

describe("MQTT gateway subscriptions", () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it("subscribes at QoS 0, so a QoS 1 command costs no PUBACK from the bridge", async () => {
    // aedes itself, not the bridge's wrapper: its events show what each client sent.
    const broker = await Aedes.createBroker();
    const server = createServer((socket) => broker.handle(socket));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    cleanups.push(async () => {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    const url = `mqtt://127.0.0.1:${address.port}`;

    const granted: Array<{ clientId: string; topic: string; qos: number }> = [];
    broker.on("subscribe", (subs: Subscription[], client: Client) => {
      for (const s of subs) granted.push({ clientId: client.id, topic: s.topic, qos: s.qos });
    });
    const acks: string[] = [];
    broker.on("ack", (_packet, client: Client) => acks.push(client.id));

    const gateway = new MqttGateway({ url, clientId: "bridge-under-test", log: createLogger("silent") });
    cleanups.push(() => gateway.stop());
    const received: string[] = [];
    await gateway.subscribe("/devices/+/controls/+/on", (message) => received.push(message.payload.toString()));
    await gateway.start();

    const sender = await TestMqttClient.connect(url);
    cleanups.push(() => sender.close());
    // Three commands at QoS 1; then a QoS 1 message the sender subscribed to itself, whose
    // ack proves aedes reports acks (the bridge's absence of one is then meaningful).
    await sender.subscribe("probe/#");
    for (const value of ["1", "0", "1"]) await sender.client.publishAsync("/devices/tv/controls/power/on", value, { qos: 1 });
    await sender.client.publishAsync("probe/x", "p", { qos: 1 });
    await sender.waitFor("probe/x");
    await expect.poll(() => received).toEqual(["1", "0", "1"]);
    await expect.poll(() => acks).toContain(sender.client.options.clientId);

    expect(granted.filter((g) => g.clientId === "bridge-under-test")).toEqual([
      { clientId: "bridge-under-test", topic: "/devices/+/controls/+/on", qos: 0 },
    ]);
    expect(acks).not.toContain("bridge-under-test");
  });
});
