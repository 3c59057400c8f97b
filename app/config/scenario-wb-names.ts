import type { DeviceDefinition } from "./device.js";

/**
 * Names of the scenario system's Wiren Board device. Pure, so the config loader can
 * check collisions with the same rules the device publishes by.
 */
export const SCENARIO_DEVICE_ID = "scenarios";
/** The writable text control holding the active scenario id. */
export const SCENARIO_CONTROL = "scenario";
/** The value of the `scenario` control when no scenario is active; writing it shuts down. */
export const NO_SCENARIO = "none";

export function roleControlId(role: string, action: string): string {
  return `${role}_${action}`;
}

/**
 * Commands a pushbutton can run: a press carries no value, so only commands whose
 * params are all optional or defaulted.
 */
export function roleButtonActions(device: Pick<DeviceDefinition, "commands">): string[] {
  return Object.entries(device.commands)
    .filter(([, command]) => command.params.every((p) => !p.required || p.default !== undefined))
    .map(([name]) => name);
}
