import type { ControlOverride, DeviceDefinition, ParamSpec } from "../config/device.js";
import type { WbControlMeta, WbControlType, WbTitle } from "../mqtt/wb-values.js";
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
  // A command that runs without a value (no params, or only optional ones) is a button.
  if (!param?.required || param.default !== undefined) return "pushbutton";
  if (param.type === "boolean") return "switch";
  if (param.type === "string") return "text";
  return param.min !== undefined && param.max !== undefined ? "range" : "value";
}

function title(en: string | undefined, override: ControlOverride | undefined): WbTitle | undefined {
  const t = { ...(en ? { en } : {}), ...override?.title };
  if (!t.en) return undefined;
  return t.ru ? { en: t.en, ru: t.ru } : { en: t.en };
}

/** Drops undefined members so the published JSON holds only what is set. */
function compact(meta: WbControlMeta): WbControlMeta {
  // A plain loop: every control of every device passes here at start, and the
  // entries/filter/fromEntries arrays were a measurable share of restoring 10,000.
  const source = meta as unknown as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const key in source) if (source[key] !== undefined) kept[key] = source[key];
  return kept as unknown as WbControlMeta;
}

function applyOverride(meta: WbControlMeta, override: ControlOverride | undefined): WbControlMeta {
  if (!override) return compact(meta);
  const { title: _title, ...rest } = override;
  return compact({ ...meta, ...rest });
}

/**
 * Controls in a stable order: the driver's state fields first (writable when a command
 * of the same name exists), then the remaining commands, each adjustable by the
 * device's `controls` overrides. The order depends only on config and driver, so it
 * is the same after every restart.
 */
export function deriveControls(device: DeviceDefinition, stateControls: readonly StateControl[]): DeviceControl[] {
  const controls: DeviceControl[] = [];
  const fields = new Set<string>();
  for (const sc of stateControls) {
    fields.add(sc.field);
    const override = device.controls[sc.field];
    const writable = sc.field in device.commands && !sc.readonly;
    controls.push({
      id: sc.field,
      field: sc.field,
      action: writable ? sc.field : undefined,
      meta: applyOverride(
        {
          type: sc.type,
          readonly: !writable,
          order: controls.length + 1,
          min: sc.min,
          max: sc.max,
          precision: sc.precision,
          units: sc.units,
          title: title(sc.title, override),
          enum: sc.enum ? Object.fromEntries(sc.enum.map((v) => [v, { en: v }])) : undefined,
        },
        override,
      ),
    });
  }
  for (const [name, command] of Object.entries(device.commands)) {
    if (fields.has(name)) continue;
    const param = command.params[0];
    const type = commandControlType(param);
    const override = device.controls[name];
    controls.push({
      id: name,
      action: name,
      meta: applyOverride(
        {
          type,
          readonly: false,
          order: controls.length + 1,
          min: type === "range" ? param?.min : undefined,
          max: type === "range" ? param?.max : undefined,
          title: title(command.description ?? name, override),
          enum: param?.enum ? Object.fromEntries(param.enum.map((v) => [v, { en: v }])) : undefined,
        },
        override,
      ),
    });
  }
  // A readonly override removes the command binding too: nothing accepted on /on.
  for (const control of controls) if (control.meta.readonly) control.action = undefined;
  return controls;
}

/** Override keys that name neither a state field nor a command are config errors. */
export function unknownControlOverrides(device: DeviceDefinition, stateControls: readonly StateControl[]): string[] {
  const known = new Set([...stateControls.map((c) => c.field), ...Object.keys(device.commands)]);
  return Object.keys(device.controls)
    .filter((id) => !known.has(id))
    .map((id) => `${device.file}: controls.${id}: no state field or command named "${id}"`);
}
