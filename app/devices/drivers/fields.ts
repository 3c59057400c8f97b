import { z } from "zod";
import { DECIMAL_NUMBER } from "../../config/params.js";
import type { JsonValue } from "../../shared/json.js";
import type { StateControl } from "../driver.js";

/**
 * State fields that mirror a value the hardware reports (wb_relay: a WB control's text
 * payload; mqtt_json: a member of a JSON message), with the mapping between the value
 * on the wire and the canonical value kept in state.
 *
 * - `bool`: `1`/`0`, `true`/`false` (text or JSON) <-> true/false; `invert` flips it.
 * - `int`, `float`: numbers (JSON numbers or numeric text).
 * - `str`: text (JSON numbers and booleans are turned into text).
 * - `enum`: `map` is required; state holds the map's values.
 * - `auto` (mqtt_json only, the default there without `map`): any JSON scalar, kept as is.
 * - `map` (any type): wire value -> canonical value; the wire value is looked up as text
 *   (JSON `true` as `"true"`, `1` as `"1"`), and writes use the reverse lookup.
 */
export const fieldTypeSchema = z.enum(["bool", "int", "float", "str", "enum"]);
export type FieldType = z.infer<typeof fieldTypeSchema> | "auto";

export const scalarSchema = z.union([z.string(), z.number(), z.boolean()]);
export type Scalar = z.infer<typeof scalarSchema>;

/** Value mapping and presentation shared by the field specs of wb_relay and mqtt_json. */
export const fieldValueShape = {
  map: z
    .record(z.string(), scalarSchema)
    .refine((m) => Object.keys(m).length > 0, "expected at least one entry")
    .optional(),
  invert: z.boolean().optional(),
  min: z.number().optional(),
  max: z.number().optional(),
  precision: z.number().positive().optional(),
  units: z
    .string()
    .regex(/^[\x20-\x7e]{1,16}$/, "expected a short ASCII unit such as W or deg C")
    .optional(),
  title: z.string().min(1).max(200).optional(),
};

export interface FieldValueSpec {
  type: FieldType;
  map?: Record<string, Scalar>;
  invert?: boolean;
  min?: number;
  max?: number;
  precision?: number;
  units?: string;
  title?: string;
}

/** The type a map's values imply (mqtt_json infers its field type from it), or null when mixed. */
export function typeOfMapValues(map: Record<string, Scalar>): FieldType | null {
  const values = Object.values(map);
  if (values.every((v) => typeof v === "boolean")) return "bool";
  if (values.every((v) => typeof v === "number")) return values.every(Number.isInteger) ? "int" : "float";
  if (values.every((v) => typeof v === "string")) return "enum";
  return null;
}

/** Consistency checks of one field spec, for a superRefine of the driver's config schema. */
export function checkFieldSpec(spec: FieldValueSpec, ctx: z.RefinementCtx): void {
  const { type, map } = spec;
  if (type === "enum" && !map) ctx.addIssue({ code: "custom", path: ["map"], message: "an enum field needs a map (wire value -> name)" });
  if (type === "auto" && map) ctx.addIssue({ code: "custom", path: ["type"], message: "a field with a map needs a type" });
  if (spec.invert !== undefined && type !== "bool") {
    ctx.addIssue({ code: "custom", path: ["invert"], message: "invert applies only to bool fields" });
  }
  const numeric = type === "int" || type === "float";
  for (const key of ["min", "max", "precision"] as const) {
    if (spec[key] !== undefined && !numeric) {
      ctx.addIssue({ code: "custom", path: [key], message: `${key} applies only to int or float fields` });
    }
  }
  if (spec.min !== undefined && spec.max !== undefined && spec.min > spec.max) {
    ctx.addIssue({ code: "custom", path: ["min"], message: "min is greater than max" });
  }
  if (map) {
    const schema = canonicalSchema(type);
    for (const [wire, value] of Object.entries(map)) {
      if (!schema.safeParse(value).success) {
        ctx.addIssue({ code: "custom", path: ["map", wire], message: `expected ${VALUE_OF[type]} for a ${type} field` });
      }
    }
  }
}

const VALUE_OF: Record<FieldType, string> = {
  bool: "a boolean",
  int: "an integer",
  float: "a number",
  str: "a string",
  enum: "a string",
  auto: "a string, number or boolean",
};

/** The schema of a field's canonical (non-null) value. */
export function canonicalSchema(type: FieldType): z.ZodType<Scalar> {
  switch (type) {
    case "bool":
      return z.boolean();
    case "int":
      return z.number().int();
    case "float":
      return z.number();
    case "str":
    case "enum":
      return z.string();
    case "auto":
      return scalarSchema;
  }
}

/** State schema member of a field: its canonical value, or null until the hardware first reports it. */
export function fieldStateSchema(spec: FieldValueSpec): z.ZodType<Scalar | null> {
  if (spec.type === "enum" && spec.map) {
    const names = [...new Set(Object.values(spec.map).map(String))] as [string, ...string[]];
    return z.enum(names).nullable();
  }
  return canonicalSchema(spec.type).nullable();
}

/**
 * A value about to be written: must fit the field's type, its enum names and min/max.
 * Returns the reason when it does not (the value itself is left out: messages reach the logs).
 */
export function writableProblem(spec: FieldValueSpec, value: unknown): string | null {
  if (!fieldStateSchema(spec).safeParse(value).success || value === null) {
    return spec.type === "enum" && spec.map
      ? `expected one of ${[...new Set(Object.values(spec.map).map(String))].join(", ")}`
      : `expected ${VALUE_OF[spec.type]}`;
  }
  if (typeof value === "number") {
    if (spec.min !== undefined && value < spec.min) return `expected at least ${spec.min}`;
    if (spec.max !== undefined && value > spec.max) return `expected at most ${spec.max}`;
  }
  return null;
}

const INTEGER = /^[-+]?\d+$/;

/** Wire value (WB text payload or JSON member) -> canonical value; undefined when it does not parse. */
export function decodeField(spec: FieldValueSpec, wire: JsonValue): Scalar | undefined {
  if (wire === null || typeof wire === "object") return undefined;
  if (spec.map) {
    const key = typeof wire === "string" ? wire.trim() : String(wire);
    if (!Object.hasOwn(spec.map, key)) return undefined;
    return invert(spec, spec.map[key] as Scalar);
  }
  const text = typeof wire === "string" ? wire.trim() : null;
  switch (spec.type) {
    case "bool":
      if (wire === true || wire === 1 || text === "1" || text === "true") return invert(spec, true);
      if (wire === false || wire === 0 || text === "0" || text === "false") return invert(spec, false);
      return undefined;
    case "int":
      if (typeof wire === "number") return Number.isInteger(wire) ? wire : undefined;
      return text !== null && INTEGER.test(text) ? Number(text) : undefined;
    case "float":
      if (typeof wire === "number") return Number.isFinite(wire) ? wire : undefined;
      return text !== null && DECIMAL_NUMBER.test(text) ? Number(text) : undefined;
    case "str":
      return typeof wire === "string" ? wire : String(wire);
    case "enum":
      return undefined;
    case "auto":
      return wire;
  }
}

/** Canonical value -> the text a WB control's `/on` topic takes; undefined when it has no wire form. */
export function encodeField(spec: FieldValueSpec, value: Scalar): string | undefined {
  const v = invert(spec, value);
  if (spec.map) {
    const entry = Object.entries(spec.map).find(([, mapped]) => mapped === v);
    return entry?.[0];
  }
  if (typeof v === "boolean") return v ? "1" : "0";
  return String(v);
}

function invert(spec: FieldValueSpec, value: Scalar): Scalar {
  return spec.invert && typeof value === "boolean" ? !value : value;
}

/** The WB control showing a field: switch, range/value (with min/max), or text (enum names as choices). */
export function fieldControl(field: string, spec: FieldValueSpec): StateControl {
  const common = { field, ...(spec.title ? { title: spec.title } : {}) };
  switch (spec.type) {
    case "bool":
      return { ...common, type: "switch" };
    case "int":
    case "float":
      return {
        ...common,
        type: spec.min !== undefined && spec.max !== undefined ? "range" : "value",
        min: spec.min,
        max: spec.max,
        precision: spec.precision ?? (spec.type === "int" ? 1 : undefined),
        units: spec.units,
      };
    case "enum":
      return { ...common, type: "text", enum: spec.map ? [...new Set(Object.values(spec.map).map(String))] : undefined };
    case "str":
    case "auto":
      return { ...common, type: "text" };
  }
}
