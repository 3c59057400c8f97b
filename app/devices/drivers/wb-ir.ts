import { z } from "zod";
import type { DeviceDefinition } from "../../config/device.js";
import type { ParamValues } from "../../config/scenario.js";
import { wbTopics } from "../../mqtt/topics.js";
import { BadRequestError } from "../../shared/errors.js";
import type { DeviceDriver, DriverContext, DriverFactory, StateControl } from "../driver.js";
import { checkDevice, requireValid, sendCommand, topicLevelSchema } from "./common.js";

/**
 * `wb_ir`: a Wiren Board IR blaster (WB-MSW v3 and alike). Every command plays one code
 * stored in the blaster's ROM: `1` to `/devices/<location>/controls/Play from ROM<n>/on`.
 * IR gives no feedback, so the state is what the sent codes must have done (optimistic).
 */

/** What a command does to the believed state. */
export const IR_ROLES = ["power_toggle", "power_on", "power_off", "input", "volume_up", "volume_down", "mute_toggle", "plain"] as const;
export type IrRole = (typeof IR_ROLES)[number];

/** A command named like this has that role unless it says otherwise. */
const ROLE_BY_NAME: Record<string, IrRole> = {
  power: "power_toggle",
  power_toggle: "power_toggle",
  power_on: "power_on",
  power_off: "power_off",
  volume_up: "volume_up",
  volume_down: "volume_down",
  mute: "mute_toggle",
  mute_toggle: "mute_toggle",
};

/**
 * State fields, with a better command name: a command may not be named like one (its
 * control shows the state), except `power` as a toggle (flipping the switch sends it).
 */
const STATE_FIELDS: Record<string, string> = { power: "power_on", input: "input_hdmi1", muted: "mute_toggle" };

const configSchema = z
  .object({
    /** The blaster used by commands that name none. */
    location: topicLevelSchema.optional(),
  })
  .strict();

const commandSchema = z
  .object({
    description: z.string().optional(),
    params: z
      .array(z.object({ name: z.string(), type: z.string(), required: z.boolean().optional(), default: z.unknown().optional() }).loose())
      .default([]),
    rom_position: z.number().int().min(1).max(9999),
    location: topicLevelSchema.optional(),
    role: z.enum(IR_ROLES).optional(),
    /** The input this command selects (role `input`, implied by this field). */
    input: z.string().min(1).max(200).optional(),
  })
  .strict();

type IrConfig = z.infer<typeof configSchema>;
type IrCommandSpec = z.infer<typeof commandSchema>;

interface IrCommand {
  role: IrRole;
  location: string;
  romPosition: number;
  input?: string;
}

export const wbIrStateSchema = z
  .object({
    power: z.boolean(),
    input: z.string().nullable(),
    muted: z.boolean(),
  })
  .strict();

export type WbIrState = z.infer<typeof wbIrStateSchema>;

function roleOf(name: string, spec: IrCommandSpec): IrRole {
  // Own keys only, so that command names like "constructor" do not match Object's members.
  const byName = Object.hasOwn(ROLE_BY_NAME, name) ? ROLE_BY_NAME[name] : undefined;
  return spec.role ?? (spec.input !== undefined ? "input" : (byName ?? "plain"));
}

/** Cross-field checks once config and commands parse; each problem names file and field. */
function commandProblems(device: DeviceDefinition, config: IrConfig, commands: Map<string, IrCommandSpec>): string[] {
  const problems: string[] = [];
  const at = (name: string, field?: string) => `${device.file}: commands.${name}${field ? `.${field}` : ""}`;
  for (const [name, spec] of commands) {
    const role = roleOf(name, spec);
    if (!spec.location && !config.location) {
      problems.push(`${at(name, "location")}: required when config.location is not set (the blaster's WB device id, e.g. "msw_12")`);
    }
    if (role === "input" && spec.input === undefined) {
      problems.push(`${at(name, "input")}: required for role "input" (the name of the input this code selects)`);
    }
    if (role !== "input" && spec.input !== undefined) {
      problems.push(`${at(name, "input")}: only a command with role "input" selects an input (this one has role "${role}")`);
    }
    const better = Object.hasOwn(STATE_FIELDS, name) ? STATE_FIELDS[name] : undefined;
    if (better && !(name === "power" && role === "power_toggle")) {
      problems.push(`${at(name)}: "${name}" is the name of a state control; name the command differently (e.g. ${better})`);
    }
    const forceable = role === "power_on" || role === "power_off";
    spec.params.forEach((param, i) => {
      const optional = param.required === false || param.default !== undefined;
      if (forceable && param.name === "force" && param.type === "boolean" && optional) return;
      problems.push(
        forceable
          ? `${at(name, `params[${i}]`)}: a ${role} command takes only {"name": "force", "type": "boolean", "default": false}`
          : `${at(name, `params[${i}]`)}: a ${role} IR command takes no params`,
      );
    });
  }
  return problems;
}

class WbIrDriver implements DeviceDriver<WbIrState> {
  readonly stateSchema = wbIrStateSchema;
  readonly stateVersion = 1;

  constructor(
    private readonly device: DeviceDefinition,
    private readonly commands: ReadonlyMap<string, IrCommand>,
    private readonly context: DriverContext<WbIrState>,
  ) {}

  defaultState(): WbIrState {
    return { power: false, input: null, muted: false };
  }

  controls(): StateControl[] {
    const roles = new Set([...this.commands.values()].map((c) => c.role));
    const inputs = [...new Set([...this.commands.values()].flatMap((c) => (c.input ? [c.input] : [])))];
    const controls: StateControl[] = [{ field: "power", type: "switch", title: "Power" }];
    if (inputs.length > 0) controls.push({ field: "input", type: "text", title: "Input", enum: inputs, readonly: true });
    if (roles.has("mute_toggle")) controls.push({ field: "muted", type: "switch", title: "Mute", readonly: true });
    return controls;
  }

  async handleAction(action: string, params: ParamValues, state: Readonly<WbIrState>): Promise<Partial<WbIrState>> {
    const command = this.commands.get(action);
    if (!command) throw new BadRequestError("unknown_action", `wb_ir device ${this.device.device_id} has no command "${action}"`);
    const wanted = command.role === "power_on" ? true : command.role === "power_off" ? false : undefined;
    if (wanted !== undefined && state.power === wanted && params.force !== true) {
      // Sending "on" to a device believed on is harmless for discrete codes but useless,
      // and for devices that toggle on any power code it would switch them off.
      this.context.log.info({ action }, "IR command skipped: the device is already in that power state (pass force: true to send)");
      return {};
    }
    await sendCommand(this.context.mqtt, wbTopics.controlOn(command.location, `Play from ROM${command.romPosition}`), "1");
    this.context.setReachable(true);
    switch (command.role) {
      case "power_toggle":
        return { power: !state.power };
      case "power_on":
        return { power: true };
      case "power_off":
        return { power: false };
      case "input":
        return { input: command.input ?? null };
      case "mute_toggle":
        return { muted: !state.muted };
      case "volume_up":
      case "volume_down":
      case "plain":
        return {};
    }
  }
}

function check(device: DeviceDefinition) {
  const checked = checkDevice(device, configSchema, commandSchema);
  if (!checked.ok) return checked;
  const problems = commandProblems(device, checked.data.config, checked.data.commands);
  return problems.length > 0 ? { ok: false as const, problems } : checked;
}

export const wbIrDriverFactory: DriverFactory = {
  name: "wb_ir",
  validate(device) {
    const checked = check(device);
    return checked.ok ? [] : checked.problems;
  },
  create(device, context) {
    const { config, commands } = requireValid(check(device));
    const compiled = new Map<string, IrCommand>();
    for (const [name, spec] of commands) {
      compiled.set(name, {
        role: roleOf(name, spec),
        location: (spec.location ?? config.location) as string,
        romPosition: spec.rom_position,
        input: spec.input,
      });
    }
    return new WbIrDriver(device, compiled, context as DriverContext<WbIrState>);
  },
};
