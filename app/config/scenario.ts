import { z } from "zod";
import { wbIdSchema } from "./device.js";

export const paramValueSchema = z.union([z.string(), z.number(), z.boolean()]);
export type ParamValue = z.infer<typeof paramValueSchema>;
export type ParamValues = Record<string, ParamValue>;

export const scenarioStepSchema = z
  .object({
    device: wbIdSchema,
    action: wbIdSchema,
    params: z.record(z.string(), paramValueSchema).optional(),
    delay_after_ms: z.number().int().min(0).max(600_000).optional(),
  })
  .strict();

export const scenarioConfigSchema = z
  .object({
    scenario_id: wbIdSchema,
    name: z.string().min(1).max(200),
    description: z.string().optional(),
    room: z.string().optional(),
    roles: z.record(z.string(), wbIdSchema).default({}),
    devices: z.array(wbIdSchema).min(1),
    startup: z.array(scenarioStepSchema).default([]),
    shutdown: z.array(scenarioStepSchema).default([]),
  })
  .strict();

export type ScenarioStep = z.infer<typeof scenarioStepSchema>;
export type ScenarioConfig = z.infer<typeof scenarioConfigSchema>;
export type ScenarioDefinition = ScenarioConfig & { file: string };
