import { z } from "zod";

/** Wiren Board device and control ids: no MQTT wildcards, no slashes, no spaces. */
export const wbIdSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "expected letters, digits, '_' or '-' (an MQTT topic level without wildcards)");

export const paramTypeSchema = z.enum(["string", "integer", "number", "boolean"]);

export const paramSpecSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an identifier"),
    type: paramTypeSchema,
    description: z.string().optional(),
    required: z.boolean().default(true),
    min: z.number().optional(),
    max: z.number().optional(),
    enum: z.array(z.string()).min(1).optional(),
    default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.min !== undefined || p.max !== undefined) && p.type !== "integer" && p.type !== "number") {
      ctx.addIssue({ code: "custom", path: ["min"], message: "min/max apply only to integer or number params" });
    }
    if (p.min !== undefined && p.max !== undefined && p.min > p.max) {
      ctx.addIssue({ code: "custom", path: ["min"], message: "min is greater than max" });
    }
    if (p.enum && p.type !== "string") {
      ctx.addIssue({ code: "custom", path: ["enum"], message: "enum applies only to string params" });
    }
  });

/** Drivers add their own fields to a command (e.g. an IR ROM position); they check those. */
export const commandSpecSchema = z.looseObject({
  description: z.string().optional(),
  params: z.array(paramSpecSchema).default([]),
});

export const localizedNamesSchema = z
  .object({ en: z.string().min(1).max(200).optional(), ru: z.string().min(1).max(200).optional() })
  .strict();

/** Per-control overrides of what the driver and commands derive (WB control meta). */
export const controlOverrideSchema = z
  .object({
    type: z.enum(["switch", "alarm", "pushbutton", "range", "rgb", "value", "text"]).optional(),
    title: localizedNamesSchema.optional(),
    readonly: z.boolean().optional(),
    order: z.number().int().min(1).max(10_000).optional(),
    min: z.number().optional(),
    max: z.number().optional(),
    precision: z.number().positive().optional(),
    units: z
      .string()
      .regex(/^[\x20-\x7e]{1,16}$/, "expected a short ASCII unit such as W or deg C")
      .optional(),
  })
  .strict();

export const deviceConfigSchema = z
  .object({
    device_id: wbIdSchema,
    device_name: z.string().min(1).max(200),
    /** Titles per language for the WB UI; `device_name` is the English default. */
    names: localizedNamesSchema.optional(),
    driver: z.string().min(1),
    room: z.string().optional(),
    /** Driver-specific settings, validated by the driver's own schema. */
    config: z.record(z.string(), z.unknown()).default({}),
    commands: z.record(wbIdSchema, commandSpecSchema).default({}),
    controls: z.record(wbIdSchema, controlOverrideSchema).default({}),
  })
  .strict();

export type ParamSpec = z.infer<typeof paramSpecSchema>;
export type CommandSpec = z.infer<typeof commandSpecSchema>;
export type DeviceConfig = z.infer<typeof deviceConfigSchema>;
export type ControlOverride = z.infer<typeof controlOverrideSchema>;
export type LocalizedNames = z.infer<typeof localizedNamesSchema>;
/** A device as loaded: its config plus the file it came from, for error messages. */
export type DeviceDefinition = DeviceConfig & { file: string };
