import { z } from "zod";
import { type ConditionExpr, parseCondition } from "./condition.js";
import { localizedNamesSchema, wbIdSchema } from "./device.js";

export const paramValueSchema = z.union([z.string(), z.number(), z.boolean()]);
export type ParamValue = z.infer<typeof paramValueSchema>;
export type ParamValues = Record<string, ParamValue>;

/** A step condition as written (`source`, shown back by the API) and as parsed (`expr`). */
export interface StepCondition {
  source: string;
  expr: ConditionExpr;
}

// Parsed here, at load, so a malformed condition is a config error naming file and step.
const conditionSchema = z
  .string()
  .max(1000)
  .transform((source, ctx): StepCondition => {
    const parsed = parseCondition(source);
    if (!parsed.ok) {
      ctx.addIssue({ code: "custom", message: parsed.error, input: source });
      return z.NEVER;
    }
    return { source, expr: parsed.expr };
  });

/**
 * A step names its target either directly (`device`) or through the scenario's
 * `roles` (`role`), never both: a role step follows the role if the file is edited.
 */
export const scenarioStepSchema = z
  .object({
    device: wbIdSchema.optional(),
    role: wbIdSchema.optional(),
    action: wbIdSchema,
    params: z.record(z.string(), paramValueSchema).optional(),
    condition: conditionSchema.optional(),
    delay_after_ms: z.number().int().min(0).max(600_000).optional(),
  })
  .strict()
  .superRefine((step, ctx) => {
    if ((step.device === undefined) === (step.role === undefined)) {
      ctx.addIssue({ code: "custom", message: 'expected exactly one of "device" or "role"' });
    }
  });

const stepListSchema = z.array(scenarioStepSchema).default([]);

export const scenarioConfigSchema = z
  .object({
    scenario_id: wbIdSchema,
    name: z.string().min(1).max(200),
    /** Titles per language for the WB UI; `name` is the default. */
    names: localizedNamesSchema.optional(),
    description: z.string().max(2000).optional(),
    room: z.string().optional(),
    // Role names become WB control names (`<role>_<action>`), hence the id rules.
    roles: z.record(wbIdSchema, wbIdSchema).default({}),
    devices: z.array(wbIdSchema).min(1),
    startup: stepListSchema,
    shutdown: stepListSchema,
  })
  .strict()
  .superRefine((scenario, ctx) => {
    for (const list of ["startup", "shutdown"] as const) {
      scenario[list].forEach((step, i) => {
        if (step.role !== undefined && !Object.hasOwn(scenario.roles, step.role)) {
          const known = Object.keys(scenario.roles).join(", ") || "none";
          ctx.addIssue({ code: "custom", path: [list, i, "role"], message: `unknown role "${step.role}" (known: ${known})` });
        }
      });
    }
  })
  // Runs only when everything above passed: every role step resolves to its device.
  .transform((scenario) => ({
    ...scenario,
    startup: scenario.startup.map((step) => resolveStep(step, scenario.roles)),
    shutdown: scenario.shutdown.map((step) => resolveStep(step, scenario.roles)),
  }));

type RawStep = z.infer<typeof scenarioStepSchema>;

/** A step as the manager runs it: the device is always known; `role` says how it was named. */
export type ScenarioStep = Omit<RawStep, "device"> & { device: string };

function resolveStep(step: RawStep, roles: Record<string, string>): ScenarioStep {
  const device = step.device ?? roles[step.role as string];
  return { ...step, device: device as string };
}

export type ScenarioConfig = z.infer<typeof scenarioConfigSchema>;
export type ScenarioDefinition = ScenarioConfig & { file: string };
export type StepList = "startup" | "shutdown";
