import type { Logger } from "pino";
import { errorMessage } from "../shared/errors.js";
import type { MqttGateway } from "./gateway.js";
import { wbTopics } from "./topics.js";
import type { WbControlMeta } from "./wb-values.js";

export const BRIDGE_DEVICE_ID = "wb_bridge";

const READY_TOPIC = wbTopics.control(BRIDGE_DEVICE_ID, "ready");

/**
 * The MQTT last will: when the bridge vanishes (kill -9, a crash, a lost network) the
 * broker turns the retained `ready` to 0, or it would say 1 for a bridge that is gone.
 * MQTT gives a connection one will; `ready` is what clients act on, so it takes it
 * (`meta/error` is marked `r` on a clean shutdown only).
 */
export const bridgeWill = {
  topic: READY_TOPIC,
  payload: "0",
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
    await this.publish(READY_TOPIC, ready ? "1" : "0");
  }

  /** Clean shutdown: not ready, and the device offline. */
  async stop(): Promise<void> {
    this.stopHook?.();
    this.stopHook = null;
    this.ready = false;
    await this.publish(READY_TOPIC, "0");
    await this.publish(wbTopics.deviceError(BRIDGE_DEVICE_ID), "r");
  }

  private async publishAll(): Promise<void> {
    const id = BRIDGE_DEVICE_ID;
    // First: a `1` retained by a run whose will never fired (the broker had not noticed
    // it was gone) must not stand while this run restores.
    await this.publish(READY_TOPIC, this.ready ? "1" : "0");
    await this.publish(wbTopics.deviceMeta(id), JSON.stringify({ driver: "wb-bridge", title: { en: "WB Bridge" } }));
    await this.publish(wbTopics.deviceMetaName(id), "WB Bridge");
    for (const [name, meta] of Object.entries(controls)) {
      await this.publish(wbTopics.controlMeta(id, name), JSON.stringify(meta));
    }
    await this.publish(wbTopics.control(id, "version"), this.version);
    // Clears the offline mark of a previous run's shutdown.
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
