import type { DeviceDefinition, ParamSpec } from "../config/device.js";
import type { WbControlMeta, WbControlType } from "../mqtt/wb-values.js";
import type { StateControl } from "./driver.js";

/** One Wiren Board control of a device: a state field, a command, or both. */
export interface DeviceControl {
  id: string;
  meta: WbControlMeta;
  /** State field whose value this control shows. */
  field?: string;
  /** Command run by a message on the control's `/on` topic. */
  action?: string;
}

function commandControlType(param: ParamSpec | undefined): WbControlType {
  if (!param) return "pushbutton";
  if (param.type === "boolean") return "switch";
  if (param.type === "string") return "text";
  return param.min !== undefined && param.max !== undefined ? "range" : "value";
}

/**
 * Controls in a stable order: the driver's state fields first (writable when a command
 * of the same name exists), then the remaining commands. The order depends only on
 * config and driver, so it is the same after every restart.
 */
export function deriveControls(device: DeviceDefinition, stateControls: readonly StateControl[]): DeviceControl[] {
  const controls: DeviceControl[] = [];
  const fields = new Set<string>();
  for (const sc of stateControls) {
    fields.add(sc.field);
    const writable = sc.field in device.commands;
    controls.push({
      id: sc.field,
      field: sc.field,
      action: writable ? sc.field : undefined,
      meta: {
        type: sc.type,
        readonly: !writable,
        order: controls.length + 1,
        ...(sc.min !== undefined ? { min: sc.min } : {}),
        ...(sc.max !== undefined ? { max: sc.max } : {}),
        ...(sc.units !== undefined ? { units: sc.units } : {}),
        ...(sc.title !== undefined ? { title: { en: sc.title } } : {}),
      },
    });
  }
  for (const [name, command] of Object.entries(device.commands)) {
    if (fields.has(name)) continue;
    const param = command.params[0];
    const type = commandControlType(param);
    controls.push({
      id: name,
      action: name,
      meta: {
        type,
        readonly: false,
        order: controls.length + 1,
        ...(type === "range" && param ? { min: param.min, max: param.max } : {}),
        title: { en: command.description ?? name },
      },
    });
  }
  return controls;
}
