import type { DeviceDefinition } from "../../../app/config/device.js";
import { deviceConfigSchema } from "../../../app/config/device.js";
import type { DriverContext } from "../../../app/devices/driver.js";
import type { MessageHandler, PublishOptions } from "../../../app/mqtt/gateway.js";
import { topicMatches } from "../../../app/mqtt/topics.js";
import type { JsonObject } from "../../../app/shared/json.js";
import { captureLogger } from "../fixtures.js";

export interface Published {
  topic: string;
  payload: string;
  options: PublishOptions | undefined;
}

/**
 * The DeviceManager's side of the driver contract, in memory, for unit tests of drivers:
 * records publishes, subscriptions, reports and reachability, and delivers messages to
 * the driver's handlers as a broker would.
 */
export class FakeDriverContext implements DriverContext {
  readonly published: Published[] = [];
  readonly reports: JsonObject[] = [];
  readonly reachability: boolean[] = [];
  readonly subscriptions = new Map<string, number>();
  /** When set, publish rejects with it (a broker that is away). */
  publishError: Error | null = null;
  readonly logs: string[];
  readonly log: DriverContext["log"];
  private readonly handlers: Array<{ filter: string; handler: MessageHandler }> = [];

  constructor() {
    const { log, lines } = captureLogger("debug");
    this.log = log;
    this.logs = lines;
  }

  readonly mqtt: DriverContext["mqtt"] = {
    publish: async (topic, payload, options) => {
      if (this.publishError) throw this.publishError;
      this.published.push({ topic, payload, options });
    },
    subscribe: async (filter, handler) => {
      const entry = { filter, handler };
      this.handlers.push(entry);
      this.subscriptions.set(filter, (this.subscriptions.get(filter) ?? 0) + 1);
      return async () => {
        const i = this.handlers.indexOf(entry);
        if (i < 0) return;
        this.handlers.splice(i, 1);
        const left = (this.subscriptions.get(filter) ?? 1) - 1;
        if (left === 0) this.subscriptions.delete(filter);
        else this.subscriptions.set(filter, left);
      };
    },
  };

  report = (change: JsonObject): void => {
    this.reports.push(change);
  };

  setReachable = (reachable: boolean): void => {
    this.reachability.push(reachable);
  };

  /** Delivers a message to every handler whose filter matches, as the gateway does. */
  deliver(topic: string, payload: string, retain = false): void {
    for (const { filter, handler } of [...this.handlers]) {
      if (topicMatches(filter, topic)) handler({ topic, payload: Buffer.from(payload, "utf8"), retain });
    }
  }

  /** Every reported change merged, as the manager would commit them. */
  merged(initial: JsonObject): JsonObject {
    return Object.assign({}, initial, ...this.reports) as JsonObject;
  }
}

/** A device definition as the config loader produces it (defaults applied, file named). */
export function deviceDefinition(raw: Record<string, unknown>, file = "config/devices/dev.json"): DeviceDefinition {
  return { ...deviceConfigSchema.parse({ device_id: "dev", device_name: "Device", ...raw }), file };
}
