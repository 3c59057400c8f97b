import type { Logger } from "pino";
import { conditionFields } from "../config/condition.js";
import type { ParamValues, ScenarioDefinition } from "../config/scenario.js";
import type { DeviceManager } from "../devices/manager.js";
import type { MqttGateway } from "../mqtt/gateway.js";
import { BadRequestError, ConflictError, errorMessage, NotFoundError, ServiceUnavailableError } from "../shared/errors.js";
import type { EventSink } from "../shared/event-bus.js";
import type { JsonObject } from "../shared/json.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import { realSleep, type Sleep } from "../shared/sleep.js";
import type { StateService } from "../state/service.js";
import { runEveryStep, runSteps, type StepLog, type StepRunnerDeps, sharedDevices, skipSharedDevices, skipSharedPower } from "./runner.js";
import {
  SCENARIO_LAST_KEY,
  type ScenarioChangeResult,
  type ScenarioShutdownEvent,
  type ScenarioState,
  type ScenarioSwitchedEvent,
  scenarioStateSchema,
} from "./state.js";
import { type ScenarioCommands, ScenarioWbDevice } from "./wb-device.js";

export interface ScenarioEvents extends Record<string, unknown> {
  "scenario.switched": ScenarioSwitchedEvent;
  "scenario.shutdown": ScenarioShutdownEvent;
}

export interface ScenarioManagerDeps {
  scenarios: readonly ScenarioDefinition[];
  devices: DeviceManager;
  state: StateService;
  bus: EventSink<ScenarioEvents>;
  log: Logger;
  /** For the scenario system's WB virtual device; without it (unit tests) there is none. */
  mqtt?: Pick<MqttGateway, "publish" | "subscribe" | "onEveryConnection">;
  sleep?: Sleep;
  now?: () => Date;
}

export interface SwitchOptions {
  /**
   * Default true: the outgoing scenario's shutdown runs only for devices the incoming
   * one does not use. False runs the whole outgoing shutdown, except power steps for
   * shared devices (those are never power-cycled).
   */
  graceful?: boolean;
}

export interface RoleActionResult {
  scenario_id: string;
  role: string;
  device: string;
  action: string;
  state: JsonObject;
  updated_at: string | null;
}

export class ScenarioNotFoundError extends NotFoundError {
  constructor(id: string) {
    super("scenario_not_found", `unknown scenario "${id}"`);
  }
}

export class NoActiveScenarioError extends NotFoundError {
  constructor() {
    super("no_active_scenario", "no scenario is active");
  }
}

export class ScenarioActiveError extends ConflictError {
  constructor(id: string) {
    super("scenario_active", `scenario "${id}" is active; switch to another or shut it down first`, { active: id });
  }
}

export class RoleNotFoundError extends NotFoundError {
  constructor(scenario: ScenarioDefinition, role: string) {
    const known = Object.keys(scenario.roles).join(", ") || "none";
    super("role_not_found", `the active scenario "${scenario.scenario_id}" has no role "${role}" (known: ${known})`);
  }
}

/**
 * Runs scenarios the way a universal remote does: a switch keeps the devices both
 * scenarios use (never power-cycled), shuts the others down and runs the incoming
 * startup. One change at a time; each is persisted as `scenario:last`, and step
 * failures are collected into the result, never thrown.
 */
export class ScenarioManager implements ScenarioCommands {
  private readonly byId: Map<string, ScenarioDefinition>;
  private readonly queue = new KeyedQueue();
  private readonly log: Logger;
  private readonly runner: StepRunnerDeps;
  private readonly now: () => Date;
  private readonly wb: ScenarioWbDevice | null;
  private current: ScenarioState | null = null;
  private accepting = false;
  /** Why switches are refused while this bridge is a standby; null otherwise. */
  private refusal: string | null = null;
  private stopFollowing: (() => void) | null = null;

  constructor(private readonly deps: ScenarioManagerDeps) {
    this.byId = new Map(deps.scenarios.map((s) => [s.scenario_id, s]));
    this.log = deps.log.child({ module: "scenarios" });
    this.runner = { devices: deps.devices, sleep: deps.sleep ?? realSleep, log: this.log };
    this.now = deps.now ?? (() => new Date());
    // Without scenarios there is nothing to show on MQTT.
    this.wb =
      deps.mqtt && deps.scenarios.length > 0
        ? new ScenarioWbDevice({
            mqtt: deps.mqtt,
            scenarios: deps.scenarios,
            devices: deps.devices,
            commands: this,
            log: this.log.child({ part: "wb-device" }),
          })
        : null;
  }

  /**
   * Restores `scenario:last` as tracking only: no device command is sent (the devices
   * restored their own state). Then the WB device is published.
   */
  async initialize(): Promise<void> {
    if (this.accepting) return;
    this.stopFollowing?.();
    this.stopFollowing = null;
    this.refusal = null;
    await this.restoreLast(true);
    this.warnAboutConditionFields();
    this.accepting = true;
    await this.wb?.start(this.activeScenario());
  }

  /**
   * A standby's view: `scenario:last` as the active bridge of the pair commits it, with
   * every switch refused with `refusal`. initialize() later takes over from the store.
   */
  async follow(refusal: string): Promise<void> {
    if (this.accepting) return;
    this.refusal = refusal;
    await this.restoreLast(false);
    this.stopFollowing?.();
    const stopChanges = this.deps.state.subscribe(SCENARIO_LAST_KEY, (change) => {
      if (change.external) return this.restoreLast(false);
    });
    const stopGaps = this.deps.state.onGap(() => void this.restoreLast(false).catch(() => undefined));
    this.stopFollowing = () => {
      stopChanges();
      stopGaps();
    };
  }

  private async restoreLast(report: boolean): Promise<void> {
    const stored = await this.deps.state.read(SCENARIO_LAST_KEY, scenarioStateSchema);
    if (stored.status === "ok") {
      const id = stored.value.scenario_id;
      if (id === null || this.byId.has(id)) {
        this.current = stored.value;
        if (report) this.log.info({ scenario: id }, id === null ? "no scenario was active" : "last scenario restored");
      } else if (report) {
        this.log.warn({ key: SCENARIO_LAST_KEY, scenario: id }, "last scenario is no longer configured");
      }
    } else if (stored.status === "invalid" && report) {
      this.log.warn({ key: SCENARIO_LAST_KEY }, "stored scenario state is unreadable; no scenario active (row kept)");
    }
  }

  /** Stops accepting changes, waits for a running one to finish, removes the WB device's hooks. */
  async shutdown(): Promise<void> {
    this.accepting = false;
    this.stopFollowing?.();
    this.stopFollowing = null;
    await this.queue.drain();
    await this.wb?.stop();
  }

  list(): ScenarioDefinition[] {
    return [...this.byId.values()];
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  get(id: string): ScenarioDefinition {
    const scenario = this.byId.get(id);
    if (!scenario) throw new ScenarioNotFoundError(id);
    return scenario;
  }

  /** The last change (null before the first one ever); `scenario_id` null when none is active. */
  state(): ScenarioState | null {
    return this.current;
  }

  activeScenario(): ScenarioDefinition | null {
    const id = this.current?.scenario_id;
    return id ? (this.byId.get(id) ?? null) : null;
  }

  /** Switches to `id`; starting it when none is active, a no-op when it already is. */
  async switch(id: string, options: SwitchOptions = {}): Promise<ScenarioChangeResult> {
    const incoming = this.get(id);
    this.assertAccepting();
    return this.queue.run("change", () => this.runSwitch(incoming, options.graceful ?? true));
  }

  /** Runs the startup of `id`; 409 when a scenario is already active (use switch). */
  async start(id: string): Promise<ScenarioChangeResult> {
    const incoming = this.get(id);
    this.assertAccepting();
    return this.queue.run("change", async () => {
      const active = this.activeScenario();
      if (active) throw new ScenarioActiveError(active.scenario_id);
      const log: StepLog = { failed: [], skipped: [] };
      this.log.info({ to: id }, "starting scenario");
      await runSteps(this.runner, "startup", incoming.startup, runEveryStep, log);
      const result = await this.commit("start", null, incoming, log);
      this.emitSwitched(result, "start", incoming.scenario_id);
      return result;
    });
  }

  /** Runs the active scenario's shutdown; afterwards none is active. 404 when none is. */
  async shutdownActive(): Promise<ScenarioChangeResult> {
    this.assertAccepting();
    return this.queue.run("change", async () => {
      const active = this.activeScenario();
      if (!active) throw new NoActiveScenarioError();
      const log: StepLog = { failed: [], skipped: [] };
      this.log.info({ from: active.scenario_id }, "shutting scenario down");
      await runSteps(this.runner, "shutdown", active.shutdown, runEveryStep, log);
      const result = await this.commit("shutdown", active.scenario_id, null, log);
      this.deps.bus.emit("scenario.shutdown", {
        scenario_id: active.scenario_id,
        success: result.success,
        failed_steps: result.failed_steps,
        state: result.state,
      });
      return result;
    });
  }

  /**
   * Performs `action` on the device behind `role` in the active scenario. Queued with
   * switches, so a press during a switch applies to the scenario that results.
   */
  async roleAction(role: string, action: string, params: ParamValues = {}): Promise<RoleActionResult> {
    this.assertAccepting();
    return this.queue.run("change", async () => {
      const active = this.activeScenario();
      if (!active) throw new NoActiveScenarioError();
      const deviceId = active.roles[role];
      if (deviceId === undefined) throw new RoleNotFoundError(active, role);
      const commands = this.deps.devices.get(deviceId).commands;
      if (!Object.hasOwn(commands, action)) {
        const known = Object.keys(commands).join(", ") || "none";
        throw new BadRequestError("unknown_action", `role "${role}" (device "${deviceId}") has no action "${action}" (known: ${known})`);
      }
      const view = await this.deps.devices.performAction(deviceId, action, params, "scenario");
      return { scenario_id: active.scenario_id, role, device: deviceId, action, state: view.state, updated_at: view.updated_at };
    });
  }

  private async runSwitch(incoming: ScenarioDefinition, graceful: boolean): Promise<ScenarioChangeResult> {
    const outgoing = this.activeScenario();
    if (outgoing?.scenario_id === incoming.scenario_id && this.current) {
      return noop(incoming.scenario_id, this.current);
    }
    const log: StepLog = { failed: [], skipped: [] };
    const from = outgoing?.scenario_id ?? null;
    this.log.info({ from, to: incoming.scenario_id, graceful }, "switching scenario");
    const shared = outgoing ? sharedDevices(outgoing, incoming) : new Set<string>();
    if (outgoing) {
      const filter = graceful ? skipSharedDevices(shared) : skipSharedPower(shared);
      await runSteps(this.runner, "shutdown", outgoing.shutdown, filter, log);
    }
    await runSteps(this.runner, "startup", incoming.startup, skipSharedPower(shared), log);
    const result = await this.commit("switch", from, incoming, log);
    this.emitSwitched(result, "switch", incoming.scenario_id);
    return result;
  }

  /**
   * Persists the outcome. Tracking follows what the devices did even when the write
   * fails (the next switch must diff against reality); the caller then gets the error.
   */
  private async commit(
    operation: ScenarioChangeResult["operation"],
    from: string | null,
    to: ScenarioDefinition | null,
    log: StepLog,
  ): Promise<ScenarioChangeResult> {
    const state: ScenarioState = {
      scenario_id: to?.scenario_id ?? null,
      devices: to ? Object.fromEntries(to.devices.map((d) => [d, this.deps.devices.getState(d).state])) : {},
      switched_at: this.now().toISOString(),
      failed_steps: log.failed,
    };
    let writeError: unknown = null;
    try {
      await this.deps.state.write(SCENARIO_LAST_KEY, state, scenarioStateSchema, { source: "scenario" });
    } catch (err) {
      writeError = err;
      this.log.error({ key: SCENARIO_LAST_KEY, err: errorMessage(err) }, "scenario state could not be persisted");
    }
    this.current = state;
    await this.wb?.show(to);
    if (writeError !== null) throw writeError;
    return {
      operation,
      success: log.failed.length === 0,
      from,
      to: state.scenario_id,
      noop: false,
      failed_steps: log.failed,
      skipped_steps: log.skipped,
      state,
    };
  }

  private emitSwitched(result: ScenarioChangeResult, operation: "switch" | "start", to: string): void {
    this.deps.bus.emit("scenario.switched", {
      from: result.from,
      to,
      operation,
      success: result.success,
      failed_steps: result.failed_steps,
      state: result.state,
    });
  }

  private assertAccepting(): void {
    if (!this.accepting) {
      if (this.refusal) throw new ServiceUnavailableError("standby", this.refusal);
      throw new ServiceUnavailableError("not_ready", "the bridge is not accepting scenario changes right now");
    }
  }

  /** Field names are the driver's, unknown at config load: checked here, once devices are restored. */
  private warnAboutConditionFields(): void {
    for (const scenario of this.byId.values()) {
      for (const phase of ["startup", "shutdown"] as const) {
        scenario[phase].forEach((step, index) => {
          if (!step.condition) return;
          const state = this.deps.devices.getState(step.device).state;
          for (const field of conditionFields(step.condition.expr)) {
            if (!Object.hasOwn(state, field)) {
              this.log.warn(
                { scenario: scenario.scenario_id, phase, index, device: step.device, field },
                "scenario condition reads a state field the device does not have; the step will fail",
              );
            }
          }
        });
      }
    }
  }
}

function noop(id: string, state: ScenarioState): ScenarioChangeResult {
  return { operation: "switch", success: true, from: id, to: id, noop: true, failed_steps: [], skipped_steps: [], state };
}
