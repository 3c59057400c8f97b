import { z } from "zod";
import { jsonObjectSchema } from "../shared/json.js";

export const SCENARIO_LAST_KEY = "scenario:last";

export const failedStepSchema = z
  .object({
    phase: z.enum(["startup", "shutdown"]),
    index: z.number().int().min(0),
    device: z.string(),
    action: z.string(),
    error: z.string(),
  })
  .strict();

/** What `scenario:last` holds: the active scenario and the device states it left behind. */
export const scenarioStateSchema = z
  .object({
    scenario_id: z.string().min(1),
    devices: z.record(z.string(), jsonObjectSchema),
    switched_at: z.string(),
    failed_steps: z.array(failedStepSchema).default([]),
  })
  .strict();

export type ScenarioState = z.infer<typeof scenarioStateSchema>;
export type FailedStep = z.infer<typeof failedStepSchema>;

export interface ScenarioSwitchedEvent {
  from: string | null;
  to: string;
  state: ScenarioState;
}
