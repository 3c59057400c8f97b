import { z } from "zod";
import type { DeviceDefinition } from "../../config/device.js";
import type { ParamValues } from "../../config/scenario.js";
import type { InboundMessage } from "../../mqtt/gateway.js";
import { wbTopics } from "../../mqtt/topics.js";
import { BadRequestError, errorMessage } from "../../shared/errors.js";
import type { JsonObject } from "../../shared/json.js";
import { type DeviceDriver, DeviceUnreachableError, type DriverContext, type DriverFactory, type StateControl } from "../driver.js";
import { checkDevice, requireValid, sendCommand, topicLevelSchema } from "./common.js";
import {
  checkFieldSpec,
  decodeField,
  encodeField,
  type FieldValueSpec,
  fieldControl,
  fieldStateSchema,
  fieldTypeSchema,
  fieldValueShape,
  type Scalar,
  scalarSchema,
  writableProblem,
} from "./fields.js";

/**
 * `wb_relay`: a passthrough to controls of a device that already is a WB device (a
 * wb-mqtt-serial relay module, a dimmer, ...). Commands write the control's `/on`
 * topic; state follows the control's value topic and its `meta/error` flags. The
 * bridge publishes no second virtual device for the same hardware.
 */

/** State fields the driver adds; no configured field may take these names. */
const RESERVED = ["reachable", "error"];

const fieldSchema = z
  .object({
    /** The WB device id of the peer, e.g. `wb-mr6c_45`; defaults to `config.device`. */
    device: topicLevelSchema.optional(),
    control: topicLevelSchema,
    type: fieldTypeSchema,
    ...fieldValueShape,
  })
  .strict()
  .superRefine((spec, ctx) => checkFieldSpec(spec, ctx));

const configSchema = z
  .object({
    device: topicLevelSchema.optional(),
    fields: z.record(z.string(), fieldSchema),
  })
  .strict()
  .superRefine((config, ctx) => {
    const names = Object.keys(config.fields);
    if (names.length === 0) ctx.addIssue({ code: "custom", path: ["fields"], message: "expected at least one field" });
    for (const name of names) {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
        ctx.addIssue({ code: "custom", path: ["fields", name], message: "expected a name of letters, digits, '_' or '-'" });
      } else if (RESERVED.includes(name)) {
        ctx.addIssue({ code: "custom", path: ["fields", name], message: `"${name}" is a state field of the driver itself` });
      }
      if (!config.fields[name]?.device && !config.device) {
        ctx.addIssue({ code: "custom", path: ["fields", name, "device"], message: "required when config.device is not set" });
      }
    }
  });

const commandSchema = z
  .object({
    description: z.string().optional(),
    params: z.array(z.object({ name: z.string(), type: z.string(), enum: z.array(z.string()).optional() }).loose()).default([]),
    /** The configured field this command writes. */
    field: z.string(),
    /** A fixed value to write (canonical, e.g. true or "auto"); without it, the command's one param is written. */
    value: scalarSchema.optional(),
  })
  .strict();

type RelayConfig = z.infer<typeof configSchema>;
type RelayCommandSpec = z.infer<typeof commandSchema>;

interface RelayField extends FieldValueSpec {
  name: string;
  device: string;
  control: string;
}

interface RelayCommand {
  field: RelayField;
  value?: Scalar;
  /** Name of the param whose value is written, when there is no fixed value. */
  param?: string;
}

/** Param types that can carry a value of each field type. */
const PARAM_TYPES: Record<string, string[]> = {
  bool: ["boolean"],
  int: ["integer"],
  float: ["integer", "number"],
  str: ["string"],
  enum: ["string"],
};

function fieldsOf(config: RelayConfig): Map<string, RelayField> {
  const fields = new Map<string, RelayField>();
  for (const [name, spec] of Object.entries(config.fields)) {
    fields.set(name, { ...spec, name, device: (spec.device ?? config.device) as string });
  }
  return fields;
}

function commandProblems(device: DeviceDefinition, fields: Map<string, RelayField>, commands: Map<string, RelayCommandSpec>): string[] {
  const problems: string[] = [];
  for (const [name, spec] of commands) {
    const at = (path: string) => `${device.file}: commands.${name}.${path}`;
    const field = fields.get(spec.field);
    if (!field) {
      problems.push(`${at("field")}: no field "${spec.field}" in config.fields (known: ${[...fields.keys()].join(", ")})`);
      continue;
    }
    if (spec.value !== undefined) {
      const problem = writableProblem(field, spec.value);
      if (problem) problems.push(`${at("value")}: ${problem} for field "${field.name}"`);
      if (spec.params.length > 0) problems.push(`${at("params")}: a command with a fixed value takes no params`);
      continue;
    }
    const param = spec.params[0];
    if (spec.params.length !== 1 || !param) {
      problems.push(`${at("params")}: expected exactly one param (its value is written to field "${field.name}"), or a fixed "value"`);
      continue;
    }
    const types = PARAM_TYPES[field.type] ?? [];
    if (!types.includes(param.type)) {
      problems.push(`${at("params[0].type")}: field "${field.name}" is ${field.type}; expected a param of type ${types.join(" or ")}`);
    } else if (field.type === "enum" && param.enum) {
      const names = new Set(Object.values(field.map ?? {}).map(String));
      const unknown = param.enum.filter((v) => !names.has(v));
      if (unknown.length > 0) problems.push(`${at("params[0].enum")}: not values of field "${field.name}": ${unknown.join(", ")}`);
    }
  }
  return problems;
}

function check(device: DeviceDefinition) {
  const checked = checkDevice(device, configSchema, commandSchema);
  if (!checked.ok) return checked;
  const fields = fieldsOf(checked.data.config);
  const problems = commandProblems(device, fields, checked.data.commands);
  if (problems.length > 0) return { ok: false as const, problems };
  const commands = new Map<string, RelayCommand>();
  for (const [name, spec] of checked.data.commands) {
    const field = fields.get(spec.field) as RelayField;
    commands.set(name, spec.value !== undefined ? { field, value: spec.value } : { field, param: spec.params[0]?.name });
  }
  return { ok: true as const, data: { fields, commands } };
}

/** Flags of a WB error topic kept in the canonical order; "" when none. */
function flagsOf(payload: string): string {
  return ["r", "w", "p"].filter((f) => payload.includes(f)).join("");
}

class WbRelayDriver implements DeviceDriver {
  readonly stateVersion = 1;
  readonly publishesWbDevice = false;
  readonly stateSchema: z.ZodType<JsonObject>;
  /** field -> error flags its control currently reports. */
  private readonly flags = new Map<string, string>();
  private unsubscribes: Array<() => Promise<void>> = [];

  constructor(
    private readonly device: DeviceDefinition,
    private readonly fields: ReadonlyMap<string, RelayField>,
    private readonly commands: ReadonlyMap<string, RelayCommand>,
    private readonly context: DriverContext,
  ) {
    const shape: Record<string, z.ZodType> = { reachable: z.boolean(), error: z.string().nullable() };
    for (const field of fields.values()) shape[field.name] = fieldStateSchema(field);
    this.stateSchema = z.object(shape).strict() as unknown as z.ZodType<JsonObject>;
  }

  defaultState(): JsonObject {
    const state: JsonObject = { reachable: true, error: null };
    for (const name of this.fields.keys()) state[name] = null;
    return state;
  }

  controls(): StateControl[] {
    return [
      ...[...this.fields.values()].map((f) => fieldControl(f.name, f)),
      { field: "reachable", type: "switch", title: "Reachable", readonly: true },
      { field: "error", type: "text", title: "Error", readonly: true },
    ];
  }

  async setup(state: Readonly<JsonObject>): Promise<void> {
    // Error flags are live information held by the peer's retained topics, which are
    // delivered again on subscribe; a flag cleared while the bridge was down would never
    // be reported again, so start clean before subscribing and let the peer say otherwise.
    if (state.reachable !== true || state.error !== null) this.context.report({ reachable: true, error: null });
    for (const field of this.fields.values()) {
      const valueTopic = wbTopics.control(field.device, field.control);
      this.unsubscribes.push(await this.context.mqtt.subscribe(valueTopic, (m) => this.onValue(field, m)));
      const errorTopic = wbTopics.controlError(field.device, field.control);
      this.unsubscribes.push(await this.context.mqtt.subscribe(errorTopic, (m) => this.onError(field, m)));
    }
  }

  async shutdown(): Promise<void> {
    const unsubscribes = this.unsubscribes.splice(0);
    for (const unsubscribe of unsubscribes) {
      await unsubscribe().catch((err: unknown) => this.context.log.warn({ err: errorMessage(err) }, "unsubscribe failed"));
    }
  }

  async handleAction(action: string, params: ParamValues): Promise<JsonObject> {
    const command = this.commands.get(action);
    if (!command) throw new BadRequestError("unknown_action", `wb_relay device ${this.device.device_id} has no command "${action}"`);
    const { field } = command;
    const value = command.value ?? (command.param ? params[command.param] : undefined);
    const problem = writableProblem(field, value);
    const wire = problem === null ? encodeField(field, value as Scalar) : undefined;
    if (problem !== null || wire === undefined) {
      // The value is left out: messages end up in logs.
      throw new BadRequestError(
        "invalid_params",
        `cannot write field "${field.name}" of ${this.device.device_id}: ${problem ?? "no wire value for it"}`,
      );
    }
    if (this.flags.get(field.name)?.includes("r")) {
      throw new DeviceUnreachableError(`${field.device}/${field.control} reports a read error (meta/error "r")`);
    }
    await sendCommand(this.context.mqtt, wbTopics.controlOn(field.device, field.control), wire);
    this.context.setReachable(this.reachable());
    // Optimistic: the peer's value topic then confirms it (or corrects it).
    return { [field.name]: value as Scalar };
  }

  private onValue(field: RelayField, message: InboundMessage): void {
    const payload = message.payload.toString("utf8");
    // An empty retained payload removes the control; there is no value to take from it.
    if (payload === "") return;
    const value = decodeField(field, payload);
    if (value === undefined) {
      this.context.log.warn({ field: field.name, peer: field.device, control: field.control }, "ignoring a value the field cannot parse");
      return;
    }
    this.context.report({ [field.name]: value });
  }

  private onError(field: RelayField, message: InboundMessage): void {
    this.flags.set(field.name, flagsOf(message.payload.toString("utf8")));
    const reachable = this.reachable();
    const union = flagsOf([...this.flags.values()].join(""));
    this.context.report({ reachable, error: union === "" ? null : union });
    this.context.setReachable(reachable);
  }

  private reachable(): boolean {
    return ![...this.flags.values()].some((f) => f.includes("r"));
  }
}

export const wbRelayDriverFactory: DriverFactory = {
  name: "wb_relay",
  validate(device) {
    const checked = check(device);
    return checked.ok ? [] : checked.problems;
  },
  create(device, context) {
    const { fields, commands } = requireValid(check(device));
    return new WbRelayDriver(device, fields, commands, context);
  },
};
