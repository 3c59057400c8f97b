import type { JsonObject } from "../shared/json.js";

/** Where a change came from; carried in events (and, later, in history). */
/** `peer`: committed by the other bridge of an active/standby pair. */
export type ChangeSource = "http" | "mqtt" | "scenario" | "restore" | "cli" | "device" | "peer";

export interface DeviceStateEvent {
  deviceId: string;
  state: JsonObject;
  changed: string[];
  /** True for values restored from the store at start, false for live changes. */
  restored: boolean;
  source: ChangeSource;
  /** The action that caused the change; absent for restore and hardware feedback. */
  action?: string;
}

export interface DeviceReachabilityEvent {
  deviceId: string;
  reachable: boolean;
}

export interface ActionFailedEvent {
  deviceId: string;
  action: string;
  source: ChangeSource;
  code: string;
  message: string;
  /** The hardware could not be reached (WB error `r`) rather than refusing the write (`w`). */
  unreachable: boolean;
}
