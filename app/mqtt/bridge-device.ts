import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { MqttGateway } from "./gateway.js";
import { wbTopics } from "./topics.js";
import type { WbControlMeta } from "./wb-values.js";

export const BRIDGE_DEVICE_ID = "wb_bridge";

/** The MQTT last will: the broker marks the bridge offline if it vanishes. */
export const bridgeWill = {
  topic: wbTopics.deviceError(BRIDGE_DEVICE_ID),
  payload: "r",
  retain: true,
} as const;

const controls: Record<"ready" | "version", WbControlMeta> = {
  ready: { type: "switch", readonly: true, order: 1, title: { en: "Ready" } },
  version: { type: "text", readonly: true, order: 2, title: { en: "Version" } },
};

/**
 * `/devices/wb_bridge`: tells WB (and anyone on the broker) whether the bridge is up.
 * `ready` is 1 only once restore and initialization have finished.
 */
export class BridgeDevice {
  private ready = false;
  private stopHook: (() => void) | null = null;

  constructor(
    private readonly mqtt: MqttGateway,
    private readonly version: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    this.stopHook = await this.mqtt.onEveryConnection(() => this.publishAll());
  }

  async setReady(ready: boolean): Promise<void> {
    this.ready = ready;
    await this.publish(wbTopics.control(BRIDGE_DEVICE_ID, "ready"), ready ? "1" : "0");
  }

  /** Clean shutdown: the same mark the last will would leave. */
  async stop(): Promise<void> {
    this.stopHook?.();
    this.stopHook = null;
    this.ready = false;
    await this.publish(wbTopics.control(BRIDGE_DEVICE_ID, "ready"), "0");
    await this.publish(bridgeWill.topic, bridgeWill.payload);
  }

  private async publishAll(): Promise<void> {
    const id = BRIDGE_DEVICE_ID;
    await this.publish(wbTopics.deviceMeta(id), JSON.stringify({ driver: "wb-bridge", title: { en: "WB Bridge" } }));
    await this.publish(wbTopics.deviceMetaName(id), "WB Bridge");
    for (const [name, meta] of Object.entries(controls)) {
      await this.publish(wbTopics.controlMeta(id, name), JSON.stringify(meta));
    }
    await this.publish(wbTopics.control(id, "version"), this.version);
    await this.publish(wbTopics.control(id, "ready"), this.ready ? "1" : "0");
    // Clears the error a previous last will may have left.
    await this.publish(wbTopics.deviceError(id), "");
  }

  private async publish(topic: string, payload: string): Promise<void> {
    try {
      await this.mqtt.publish(topic, payload, { retain: true, qos: 1 });
    } catch (err) {
      this.log.debug({ topic, err: errorMessage(err) }, "bridge status publish skipped");
    }
  }
}
