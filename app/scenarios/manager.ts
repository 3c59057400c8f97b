import type { Logger } from "pino";
import type { ScenarioDefinition, ScenarioStep } from "../config/scenario.js";
import type { DeviceManager } from "../devices/manager.js";
import type { MqttGateway } from "../mqtt/gateway.js";
import type { EventSink } from "../shared/event-bus.js";
import { errorMessage, NotFoundError, ServiceUnavailableError } from "../shared/errors.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import { realSleep, type Sleep } from "../shared/sleep.js";
import type { StateService } from "../state/service.js";
import {
  SCENARIO_LAST_KEY,
  scenarioStateSchema,
  type FailedStep,
  type ScenarioState,
  type ScenarioSwitchedEvent,
} from "./state.js";

export interface ScenarioEvents extends Record<string, unknown> {
  "scenario.switched": ScenarioSwitchedEvent;
}

export interface ScenarioManagerDeps {
  scenarios: readonly ScenarioDefinition[];
  devices: DeviceManager;
  state: StateService;
  bus: EventSink<ScenarioEvents>;
  log: Logger;
  /** For the scenario system's WB virtual device. */
  mqtt?: MqttGateway;
  sleep?: Sleep;
  now?: () => Date;
}

export class ScenarioNotFoundError extends NotFoundError {
  constructor(id: string) {
    super("scenario_not_found", `unknown scenario "${id}"`);
  }
}

/**
 * Switches scenarios the way a universal remote does: devices the incoming scenario
 * keeps are left alone, the others are shut down, then the incoming startup runs.
 * One switch at a time; the result is persisted as `scenario:last`.
 */
export class ScenarioManager {
  private readonly byId: Map<string, ScenarioDefinition>;
  private readonly queue = new KeyedQueue();
  private readonly log: Logger;
  private readonly sleep: Sleep;
  private readonly now: () => Date;
  private current: ScenarioState | null = null;
  private accepting = false;

  constructor(private readonly deps: ScenarioManagerDeps) {
    this.byId = new Map(deps.scenarios.map((s) => [s.scenario_id, s]));
    this.log = deps.log.child({ module: "scenarios" });
    this.sleep = deps.sleep ?? realSleep;
    this.now = deps.now ?? (() => new Date());
  }

  /** Restores `scenario:last`. Sends no device command: the devices restored their own state. */
  async initialize(): Promise<void> {
    const stored = await this.deps.state.read(SCENARIO_LAST_KEY, scenarioStateSchema);
    if (stored.status === "ok") {
      if (this.byId.has(stored.value.scenario_id)) {
        this.current = stored.value;
        this.log.info({ scenario: stored.value.scenario_id }, "last scenario restored");
      } else {
        this.log.warn({ key: SCENARIO_LAST_KEY, scenario: stored.value.scenario_id }, "last scenario is no longer configured");
      }
    } else if (stored.status === "invalid") {
      this.log.warn({ key: SCENARIO_LAST_KEY }, "stored scenario state is unreadable; no scenario active (row kept)");
    }
    this.accepting = true;
  }

  /** Stops accepting switches and waits for a running one to finish. */
  async shutdown(): Promise<void> {
    this.accepting = false;
    await this.queue.drain();
  }

  list(): ScenarioDefinition[] {
    return [...this.byId.values()];
  }

  get(id: string): ScenarioDefinition {
    const scenario = this.byId.get(id);
    if (!scenario) throw new ScenarioNotFoundError(id);
    return scenario;
  }

  state(): ScenarioState | null {
    return this.current;
  }

  async switch(id: string): Promise<ScenarioState> {
    const incoming = this.get(id);
    if (!this.accepting) throw new ServiceUnavailableError("not_ready", "the bridge is not accepting scenario switches right now");
    return this.queue.run("switch", () => this.run(incoming));
  }

  private async run(incoming: ScenarioDefinition): Promise<ScenarioState> {
    const from = this.current?.scenario_id ?? null;
    const outgoing = from !== null && from !== incoming.scenario_id ? this.byId.get(from) : undefined;
    const failed: FailedStep[] = [];
    this.log.info({ from, to: incoming.scenario_id }, "switching scenario");

    if (outgoing) {
      const kept = new Set(incoming.devices);
      for (const [index, step] of outgoing.shutdown.entries()) {
        if (!kept.has(step.device)) await this.runStep("shutdown", index, step, failed);
      }
    }
    for (const [index, step] of incoming.startup.entries()) {
      await this.runStep("startup", index, step, failed);
    }

    const state: ScenarioState = {
      scenario_id: incoming.scenario_id,
      devices: Object.fromEntries(incoming.devices.map((d) => [d, this.deps.devices.getState(d).state])),
      switched_at: this.now().toISOString(),
      failed_steps: failed,
    };
    await this.deps.state.write(SCENARIO_LAST_KEY, state, scenarioStateSchema);
    this.current = state;
    this.deps.bus.emit("scenario.switched", { from, to: incoming.scenario_id, state });
    return state;
  }

  /** A failing step is recorded and the switch goes on: one dead device must not leave the room half-switched. */
  private async runStep(phase: FailedStep["phase"], index: number, step: ScenarioStep, failed: FailedStep[]): Promise<void> {
    try {
      await this.deps.devices.performAction(step.device, step.action, step.params ?? {}, "scenario");
    } catch (err) {
      this.log.error({ phase, index, device: step.device, action: step.action, err: errorMessage(err) }, "scenario step failed");
      failed.push({ phase, index, device: step.device, action: step.action, error: errorMessage(err) });
    }
    if (step.delay_after_ms) await this.sleep(step.delay_after_ms);
  }
}
