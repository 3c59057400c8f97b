import type { Logger } from "pino";
import { evaluateCondition } from "../config/condition.js";
import type { ScenarioStep } from "../config/scenario.js";
import type { DeviceManager } from "../devices/manager.js";
import { errorMessage } from "../shared/errors.js";
import type { Sleep } from "../shared/sleep.js";
import type { FailedStep, SkippedStep, SkipReason, StepPhase } from "./state.js";

/**
 * Actions that power a device on or off. A device two scenarios share is never
 * power-cycled by a switch between them: these steps are skipped for it.
 */
export const POWER_ACTIONS: ReadonlySet<string> = new Set(["power_on", "power_off", "power", "power_toggle"]);

/** What a run collected; shared by the phases of one switch. */
export interface StepLog {
  failed: FailedStep[];
  skipped: SkippedStep[];
}

export interface StepRunnerDeps {
  devices: Pick<DeviceManager, "performAction" | "getState">;
  sleep: Sleep;
  log: Logger;
}

/** Decides, before the condition, whether a step is left out of this run. */
export type StepFilter = (step: ScenarioStep) => SkipReason | null;

export const runEveryStep: StepFilter = () => null;

/**
 * Runs steps in order. A failing step is recorded and the run goes on; a step whose
 * condition is false is skipped (not a failure); a condition that cannot be evaluated
 * (it reads a field the device does not have) is a failure of that step.
 */
export async function runSteps(
  deps: StepRunnerDeps,
  phase: StepPhase,
  steps: readonly ScenarioStep[],
  filter: StepFilter,
  out: StepLog,
): Promise<void> {
  for (const [index, step] of steps.entries()) {
    const where = { phase, index, device: step.device, action: step.action };
    const excluded = filter(step);
    if (excluded) {
      out.skipped.push({ ...where, reason: excluded });
      continue;
    }
    if (step.condition) {
      let holds: boolean;
      try {
        // Evaluated right before the step, against the state earlier steps left.
        holds = evaluateCondition(step.condition.expr, deps.devices.getState(step.device).state);
      } catch (err) {
        deps.log.error({ ...where, err: errorMessage(err) }, "scenario step condition failed");
        out.failed.push({ ...where, error: `condition "${step.condition.source}": ${errorMessage(err)}` });
        continue;
      }
      if (!holds) {
        deps.log.debug({ ...where, condition: step.condition.source }, "scenario step skipped: condition is false");
        out.skipped.push({ ...where, reason: "condition" });
        continue;
      }
    }
    try {
      await deps.devices.performAction(step.device, step.action, step.params ?? {}, "scenario");
    } catch (err) {
      // The device may have half-done it, so the step's settle time still applies.
      deps.log.error({ ...where, err: errorMessage(err) }, "scenario step failed");
      out.failed.push({ ...where, error: errorMessage(err) });
    }
    if (step.delay_after_ms) await deps.sleep(step.delay_after_ms);
  }
}

/** Devices both scenarios use: kept running across a switch. */
export function sharedDevices(a: { devices: readonly string[] }, b: { devices: readonly string[] }): ReadonlySet<string> {
  const inB = new Set(b.devices);
  return new Set(a.devices.filter((d) => inB.has(d)));
}

/** Leaves out power steps for shared devices (both phases of a switch). */
export function skipSharedPower(shared: ReadonlySet<string>): StepFilter {
  return (step) => (shared.has(step.device) && POWER_ACTIONS.has(step.action) ? "shared_power" : null);
}

/** Graceful outgoing shutdown: only devices the incoming scenario does not keep. */
export function skipSharedDevices(shared: ReadonlySet<string>): StepFilter {
  return (step) => (shared.has(step.device) ? "shared_device" : null);
}
