import { z } from "zod";
import { paramSpecSchema, wbIdSchema } from "../config/device.js";
import { jsonObjectSchema } from "../shared/json.js";

export const errorResponseSchema = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
});

export const idParamsSchema = z.object({ id: wbIdSchema });

export const deviceSummarySchema = z.object({
  id: z.string(),
  name: z.string(),
  driver: z.string(),
  room: z.string().nullable(),
  actions: z.array(z.string()),
});

export const deviceDetailSchema = deviceSummarySchema.extend({
  file: z.string(),
  commands: z.record(z.string(), z.object({ description: z.string().nullable(), params: z.array(paramSpecSchema) })),
  controls: z.array(z.object({ id: z.string(), type: z.string(), readonly: z.boolean(), order: z.number() })),
});

export const deviceStateSchema = z.object({
  id: z.string(),
  state: jsonObjectSchema,
  updated_at: z.string().nullable(),
  /** False while the hardware does not answer; `state` then holds the last good values. */
  reachable: z.boolean(),
  restored: z
    .boolean()
    .describe(
      "true while `state` is what the database held at start, not yet confirmed by a successful action or a report from the device",
    ),
});

export const actionBodySchema = z
  .object({
    action: wbIdSchema,
    params: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  })
  .strict();
