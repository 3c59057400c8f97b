import { z } from "zod";
import type { CommandSpec, DeviceDefinition, ParamSpec } from "../../config/device.js";
import { describeIssues } from "../../config/issues.js";
import type { ParamValue, ParamValues } from "../../config/scenario.js";
import { BadRequestError } from "../../shared/errors.js";
import type { DeviceDriver, DriverFactory, StateControl } from "../driver.js";

const configSchema = z
  .object({
    inputs: z.array(z.string().min(1)).min(1).default(["hdmi1", "hdmi2", "tv"]),
    volume_step: z.number().int().min(1).max(100).default(5),
  })
  .strict();

export const simulatedStateSchema = z
  .object({
    power: z.boolean(),
    volume: z.number().int().min(0).max(100),
    muted: z.boolean(),
    input: z.string(),
  })
  .strict();

export type SimulatedState = z.infer<typeof simulatedStateSchema>;

/** What each supported command needs as its first param (undefined: no param). */
const COMMANDS: Record<string, ParamSpec["type"][] | undefined> = {
  power: ["boolean"],
  power_on: undefined,
  power_off: undefined,
  power_toggle: undefined,
  volume: ["integer", "number"],
  volume_up: undefined,
  volume_down: undefined,
  mute: ["boolean"],
  input: ["string"],
};

function firstParam(command: CommandSpec | undefined, params: ParamValues): ParamValue | undefined {
  const spec = command?.params[0];
  return spec ? params[spec.name] : undefined;
}

class SimulatedDriver implements DeviceDriver<SimulatedState> {
  readonly stateSchema = simulatedStateSchema;
  readonly stateVersion = 1;

  constructor(
    private readonly device: DeviceDefinition,
    private readonly config: z.infer<typeof configSchema>,
  ) {}

  defaultState(): SimulatedState {
    return { power: false, volume: 20, muted: false, input: this.config.inputs[0] as string };
  }

  controls(): StateControl[] {
    return [
      { field: "power", type: "switch", title: "Power" },
      { field: "volume", type: "range", min: 0, max: 100, title: "Volume" },
      { field: "muted", type: "switch", title: "Mute" },
      { field: "input", type: "text", title: "Input" },
    ];
  }

  async handleAction(action: string, params: ParamValues, state: Readonly<SimulatedState>): Promise<Partial<SimulatedState>> {
    const value = firstParam(this.device.commands[action], params);
    const step = this.config.volume_step;
    switch (action) {
      case "power":
        return { power: value === true };
      case "power_on":
        return { power: true };
      case "power_off":
        return { power: false };
      case "power_toggle":
        return { power: !state.power };
      case "volume":
        return { volume: clampVolume(Number(value)) };
      case "volume_up":
        return { volume: clampVolume(state.volume + step) };
      case "volume_down":
        return { volume: clampVolume(state.volume - step) };
      case "mute":
        return { muted: value === true };
      case "input": {
        const input = String(value);
        if (!this.config.inputs.includes(input)) {
          throw new BadRequestError(
            "invalid_params",
            // The rejected value is left out: messages end up in logs, values must not.
            `device ${this.device.device_id} has no such input (known: ${this.config.inputs.join(", ")})`,
          );
        }
        return { input };
      }
      default:
        throw new BadRequestError("unknown_action", `simulated driver cannot perform "${action}"`);
    }
  }
}

function clampVolume(v: number): number {
  return Math.max(0, Math.min(100, Math.round(v)));
}

/** An in-process device with power, volume, mute and input: the demo and the tests use it. */
export const simulatedDriverFactory: DriverFactory = {
  name: "simulated",
  validate(device) {
    const problems: string[] = [];
    const config = configSchema.safeParse(device.config);
    if (!config.success) {
      problems.push(...describeIssues(device.file, config.error.issues, ["config"]));
    }
    for (const [name, command] of Object.entries(device.commands)) {
      // Own keys only: a command named "constructor" or "toString" must not find Object's.
      if (!Object.hasOwn(COMMANDS, name)) {
        problems.push(
          `${device.file}: commands.${name}: the simulated driver has no command "${name}" (known: ${Object.keys(COMMANDS).join(", ")})`,
        );
        continue;
      }
      const wanted = COMMANDS[name];
      const first = command.params[0];
      if (wanted && (!first || !wanted.includes(first.type))) {
        problems.push(`${device.file}: commands.${name}.params[0].type: expected a first param of type ${wanted.join(" or ")}`);
      }
    }
    return problems;
  },
  create(device) {
    return new SimulatedDriver(device, configSchema.parse(device.config));
  },
};
