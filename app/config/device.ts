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

export const deviceConfigSchema = z
  .object({
    device_id: wbIdSchema,
    device_name: z.string().min(1).max(200),
    driver: z.string().min(1),
    room: z.string().optional(),
    /** Driver-specific settings, validated by the driver's own schema. */
    config: z.record(z.string(), z.unknown()).default({}),
    commands: z.record(wbIdSchema, commandSpecSchema).default({}),
  })
  .strict();

export type ParamSpec = z.infer<typeof paramSpecSchema>;
export type CommandSpec = z.infer<typeof commandSpecSchema>;
export type DeviceConfig = z.infer<typeof deviceConfigSchema>;
/** A device as loaded: its config plus the file it came from, for error messages. */
export type DeviceDefinition = DeviceConfig & { file: string };
