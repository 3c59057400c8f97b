import type { JsonObject } from "../shared/json.js";

/** Where a change came from; carried in events (and, later, in history). */
export type ChangeSource = "http" | "mqtt" | "scenario" | "restore" | "cli";

export interface DeviceStateEvent {
  deviceId: string;
  state: JsonObject;
  changed: string[];
  /** True for values restored from the store at start, false for live changes. */
  restored: boolean;
  source: ChangeSource;
}
