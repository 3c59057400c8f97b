import { z } from "zod";
import type { DeviceDefinition } from "../../config/device.js";
import { formatPath } from "../../config/issues.js";
import type { ParamValues } from "../../config/scenario.js";
import type { InboundMessage } from "../../mqtt/gateway.js";
import { BadRequestError, errorMessage } from "../../shared/errors.js";
import { isJsonObject, type JsonObject, type JsonValue, jsonValueSchema } from "../../shared/json.js";
import { type DeviceDriver, DeviceUnreachableError, type DriverContext, type DriverFactory, type StateControl } from "../driver.js";
import { checkDevice, requireValid, sendCommand, topicPathSchema } from "./common.js";
import {
  checkFieldSpec,
  decodeField,
  type FieldType,
  type FieldValueSpec,
  fieldControl,
  fieldStateSchema,
  fieldTypeSchema,
  fieldValueShape,
  typeOfMapValues,
} from "./fields.js";

/**
 * `mqtt_json`: a device speaking JSON on MQTT the way Zigbee2MQTT does. Commands publish
 * a JSON object to `<base>/set`; state comes from the JSON objects the device publishes
 * on `<base>`, availability from `<base>/availability`.
 */

/** The state field the driver adds; no configured field may take this name. */
const AVAILABLE = "available";

const jsonPathSchema = z
  .string()
  .min(1)
  .max(500)
  .regex(/^[^.]+(\.[^.]+)*$/, "expected member names separated by dots, e.g. sensors.temp");

const stateFieldSchema = z
  .object({
    /** Where the value is in the device's JSON message: `brightness`, `sensors.temp`, `list.0`. */
    path: jsonPathSchema,
    /** Defaults to what `map`'s values are, or `auto` (any JSON scalar, shown as text). */
    type: fieldTypeSchema.optional(),
    ...fieldValueShape,
  })
  .strict()
  .superRefine((spec, ctx) => {
    const type = resolvedType(spec);
    if (type === null) {
      ctx.addIssue({ code: "custom", path: ["type"], message: "required when map values are of mixed types" });
      return;
    }
    checkFieldSpec({ ...spec, type }, ctx);
  });

const configSchema = z
  .object({
    base_topic: topicPathSchema,
    state: z.record(z.string(), stateFieldSchema).default({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    for (const name of Object.keys(config.state)) {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
        ctx.addIssue({ code: "custom", path: ["state", name], message: "expected a name of letters, digits, '_' or '-'" });
      } else if (name === AVAILABLE) {
        ctx.addIssue({ code: "custom", path: ["state", name], message: `"${AVAILABLE}" is a state field of the driver itself` });
      }
    }
  });

const commandSchema = z
  .object({
    description: z.string().optional(),
    params: z.array(z.object({ name: z.string() }).loose()).default([]),
    /** Published to `<base>/set`; strings may hold `{{param}}` placeholders. */
    payload: z.record(z.string(), jsonValueSchema),
  })
  .strict();

type JsonField = FieldValueSpec & { name: string; path: string[] };
type JsonCommandSpec = z.infer<typeof commandSchema>;

function resolvedType(spec: { type?: FieldType; map?: Record<string, string | number | boolean> }): FieldType | null {
  if (spec.type) return spec.type;
  return spec.map ? typeOfMapValues(spec.map) : "auto";
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;
const EXACT_PLACEHOLDER = /^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$/;

/** Every param name a template refers to, with where (for config problems). */
function placeholders(template: JsonValue, path: PropertyKey[] = []): Array<{ name: string; path: PropertyKey[] }> {
  if (typeof template === "string") return [...template.matchAll(PLACEHOLDER)].map((m) => ({ name: m[1] as string, path }));
  if (Array.isArray(template)) return template.flatMap((v, i) => placeholders(v, [...path, i]));
  if (isJsonObject(template)) return Object.entries(template).flatMap(([k, v]) => placeholders(v, [...path, k]));
  return [];
}

/**
 * Fills a command's payload template with its params:
 * - a string that is exactly `{{name}}` becomes the param's typed value (`"{{level}}"` -> 120);
 * - `{{name}}` inside a longer string is replaced by the value as text (`"scene {{n}}"` -> "scene 2");
 * - a member (or array element) whose placeholder names a param that was not given is left out;
 * - everything else is copied as is.
 */
export function renderTemplate(template: JsonValue, params: ParamValues): JsonValue | undefined {
  if (typeof template === "string") {
    const exact = EXACT_PLACEHOLDER.exec(template);
    if (exact) return params[exact[1] as string];
    let missing = false;
    const text = template.replace(PLACEHOLDER, (_, name: string) => {
      const value = params[name];
      if (value === undefined) missing = true;
      return String(value);
    });
    return missing ? undefined : text;
  }
  if (Array.isArray(template)) {
    return template.map((v) => renderTemplate(v, params)).filter((v): v is JsonValue => v !== undefined);
  }
  if (isJsonObject(template)) {
    const out: JsonObject = {};
    for (const [key, value] of Object.entries(template)) {
      const rendered = renderTemplate(value, params);
      if (rendered !== undefined) out[key] = rendered;
    }
    return out;
  }
  return template;
}

/** The value at a dotted path (`sensors.temp`, `list.0`), or undefined when absent. */
export function getPath(value: JsonValue, path: readonly string[]): JsonValue | undefined {
  let current: JsonValue | undefined = value;
  for (const key of path) {
    if (Array.isArray(current) && /^\d+$/.test(key)) current = current[Number(key)];
    else if (isJsonObject(current) && Object.hasOwn(current, key)) current = current[key];
    else return undefined;
  }
  return current;
}

/** `online`/`offline` as text or as JSON `{"state": "online"}`; undefined for anything else. */
export function parseAvailability(payload: string): boolean | undefined {
  const text = payload.trim();
  const word = (w: unknown) => (w === "online" ? true : w === "offline" ? false : undefined);
  if (!text.startsWith("{")) return word(text);
  try {
    const parsed: unknown = JSON.parse(text);
    return isJsonObject(parsed as JsonValue) ? word((parsed as JsonObject).state) : undefined;
  } catch {
    // Not JSON after all: not an availability message this driver understands.
    return undefined;
  }
}

function commandProblems(device: DeviceDefinition, commands: Map<string, JsonCommandSpec>): string[] {
  const problems: string[] = [];
  for (const [name, spec] of commands) {
    const declared = new Set(spec.params.map((p) => p.name));
    for (const ref of placeholders(spec.payload)) {
      if (!declared.has(ref.name)) {
        problems.push(
          `${device.file}: ${formatPath(["commands", name, "payload", ...ref.path])}: "{{${ref.name}}}" names no param of this command (declared: ${[...declared].join(", ") || "none"})`,
        );
      }
    }
  }
  return problems;
}

function check(device: DeviceDefinition) {
  const checked = checkDevice(device, configSchema, commandSchema);
  if (!checked.ok) return checked;
  const problems = commandProblems(device, checked.data.commands);
  if (problems.length > 0) return { ok: false as const, problems };
  const fields: JsonField[] = Object.entries(checked.data.config.state).map(([name, spec]) => ({
    ...spec,
    type: resolvedType(spec) as FieldType,
    name,
    path: spec.path.split("."),
  }));
  const commands = new Map([...checked.data.commands].map(([name, spec]) => [name, spec.payload]));
  return { ok: true as const, data: { baseTopic: checked.data.config.base_topic, fields, commands } };
}

class MqttJsonDriver implements DeviceDriver {
  readonly stateVersion = 1;
  readonly stateSchema: z.ZodType<JsonObject>;
  private unsubscribes: Array<() => Promise<void>> = [];

  constructor(
    private readonly device: DeviceDefinition,
    private readonly baseTopic: string,
    private readonly fields: readonly JsonField[],
    private readonly commands: ReadonlyMap<string, JsonObject>,
    private readonly context: DriverContext,
  ) {
    const shape: Record<string, z.ZodType> = { [AVAILABLE]: z.boolean() };
    for (const field of fields) shape[field.name] = fieldStateSchema(field);
    this.stateSchema = z.object(shape).strict() as unknown as z.ZodType<JsonObject>;
  }

  defaultState(): JsonObject {
    const state: JsonObject = { [AVAILABLE]: true };
    for (const field of this.fields) state[field.name] = null;
    return state;
  }

  controls(): StateControl[] {
    return [...this.fields.map((f) => fieldControl(f.name, f)), { field: AVAILABLE, type: "switch", title: "Available", readonly: true }];
  }

  async setup(state: Readonly<JsonObject>): Promise<void> {
    // Availability is live: the device's retained availability message, delivered again on
    // subscribe, says whether it is offline; without one it is assumed online.
    if (state[AVAILABLE] !== true) this.context.report({ [AVAILABLE]: true });
    const availability = `${this.baseTopic}/availability`;
    this.unsubscribes.push(await this.context.mqtt.subscribe(this.baseTopic, (m) => this.onState(m)));
    this.unsubscribes.push(await this.context.mqtt.subscribe(availability, (m) => this.onAvailability(m)));
  }

  async shutdown(): Promise<void> {
    for (const unsubscribe of this.unsubscribes.splice(0)) {
      await unsubscribe().catch((err: unknown) => this.context.log.warn({ err: errorMessage(err) }, "unsubscribe failed"));
    }
  }

  async handleAction(action: string, params: ParamValues, state: Readonly<JsonObject>): Promise<JsonObject> {
    const template = this.commands.get(action);
    if (!template) throw new BadRequestError("unknown_action", `mqtt_json device ${this.device.device_id} has no command "${action}"`);
    if (state[AVAILABLE] === false) throw new DeviceUnreachableError(`${this.baseTopic} is offline (availability)`);
    const payload = renderTemplate(template, params) as JsonObject;
    await sendCommand(this.context.mqtt, `${this.baseTopic}/set`, JSON.stringify(payload));
    this.context.setReachable(true);
    // Optimistic: what was asked for, read like a state message; the device's answer confirms it.
    return this.stateFrom(payload, false);
  }

  private onState(message: InboundMessage): void {
    const text = message.payload.toString("utf8");
    if (text.trim() === "") return;
    let parsed: JsonValue;
    try {
      parsed = JSON.parse(text) as JsonValue;
    } catch {
      this.context.log.warn({ topic: message.topic }, "ignoring a state message that is not valid JSON");
      return;
    }
    if (!isJsonObject(parsed)) {
      this.context.log.warn({ topic: message.topic }, "ignoring a state message that is not a JSON object");
      return;
    }
    const change = this.stateFrom(parsed, true);
    if (Object.keys(change).length > 0) this.context.report(change);
  }

  private onAvailability(message: InboundMessage): void {
    const text = message.payload.toString("utf8");
    if (text === "") return;
    const available = parseAvailability(text);
    if (available === undefined) {
      this.context.log.warn({ topic: message.topic }, "ignoring an availability message that is neither online nor offline");
      return;
    }
    this.context.report({ [AVAILABLE]: available });
    this.context.setReachable(available);
  }

  /** The configured fields found in a JSON object; values that do not parse are left out (and logged when `warn`). */
  private stateFrom(message: JsonObject, warn: boolean): JsonObject {
    const change: JsonObject = {};
    for (const field of this.fields) {
      const raw = getPath(message, field.path);
      if (raw === undefined) continue;
      if (raw === null) {
        // JSON null: the device does not know the value (yet).
        change[field.name] = null;
        continue;
      }
      const value = decodeField(field, raw);
      if (value === undefined) {
        if (warn) this.context.log.warn({ field: field.name, path: field.path.join(".") }, "ignoring a value the field cannot parse");
        continue;
      }
      change[field.name] = value;
    }
    return change;
  }
}

export const mqttJsonDriverFactory: DriverFactory = {
  name: "mqtt_json",
  validate(device) {
    const checked = check(device);
    return checked.ok ? [] : checked.problems;
  },
  create(device, context) {
    const { baseTopic, fields, commands } = requireValid(check(device));
    return new MqttJsonDriver(device, baseTopic, fields, commands, context);
  },
};
