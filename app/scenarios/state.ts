import { z } from "zod";
import { jsonObjectSchema } from "../shared/json.js";

export const SCENARIO_LAST_KEY = "scenario:last";

export const stepPhaseSchema = z.enum(["startup", "shutdown"]);

export const failedStepSchema = z
  .object({
    phase: stepPhaseSchema,
    index: z.number().int().min(0),
    device: z.string(),
    action: z.string(),
    error: z.string(),
  })
  .strict();

/**
 * What `scenario:last` holds: the active scenario (null once shut down) and the device
 * states it left behind. Values written before shutdown existed have a string id and
 * still read as they are.
 */
export const scenarioStateSchema = z
  .object({
    scenario_id: z.string().min(1).nullable(),
    devices: z.record(z.string(), jsonObjectSchema),
    switched_at: z.string(),
    failed_steps: z.array(failedStepSchema).default([]),
  })
  .strict();

export type ScenarioState = z.infer<typeof scenarioStateSchema>;
export type FailedStep = z.infer<typeof failedStepSchema>;
export type StepPhase = z.infer<typeof stepPhaseSchema>;

/**
 * Why a step did not run. `shared_device`: a graceful switch leaves a device the
 * incoming scenario keeps alone; `shared_power`: a power step for such a device;
 * `condition`: the step's condition was false.
 */
export const skipReasonSchema = z.enum(["shared_device", "shared_power", "condition"]);

export const skippedStepSchema = z
  .object({
    phase: stepPhaseSchema,
    index: z.number().int().min(0),
    device: z.string(),
    action: z.string(),
    reason: skipReasonSchema,
  })
  .strict();

export type SkipReason = z.infer<typeof skipReasonSchema>;
export type SkippedStep = z.infer<typeof skippedStepSchema>;

/**
 * What a switch, start or shutdown returns (and the HTTP API sends). Step failures are
 * collected here, never thrown: one dead device must not leave the room half-switched.
 * `failed_steps` is named as in the stored state; it is empty for a no-op.
 */
export const scenarioChangeResultSchema = z.object({
  operation: z.enum(["switch", "start", "shutdown"]),
  success: z.boolean(),
  from: z.string().nullable(),
  to: z.string().nullable(),
  /** True when nothing had to be done (switching to the active scenario). */
  noop: z.boolean(),
  failed_steps: z.array(failedStepSchema),
  skipped_steps: z.array(skippedStepSchema),
  state: scenarioStateSchema,
});

export type ScenarioChangeResult = z.infer<typeof scenarioChangeResultSchema>;

/** `scenario.switched`: a switch or start completed (also with failed steps). */
export interface ScenarioSwitchedEvent {
  from: string | null;
  to: string;
  operation: "switch" | "start";
  success: boolean;
  failed_steps: FailedStep[];
  state: ScenarioState;
}

/** `scenario.shutdown`: the active scenario was shut down; no scenario is active now. */
export interface ScenarioShutdownEvent {
  scenario_id: string;
  success: boolean;
  failed_steps: FailedStep[];
  state: ScenarioState;
}
