import type { Logger } from "pino";
import type { ParamValues, ScenarioDefinition } from "../config/scenario.js";
import { NO_SCENARIO, roleButtonActions, roleControlId, SCENARIO_CONTROL, SCENARIO_DEVICE_ID } from "../config/scenario-wb-names.js";
import type { DeviceManager } from "../devices/manager.js";
import type { InboundMessage, MqttGateway } from "../mqtt/gateway.js";
import { parseControlOnTopic, wbTopics } from "../mqtt/topics.js";
import { encodeWbValue, type WbControlMeta, type WbTitle } from "../mqtt/wb-values.js";
import { AppError, errorMessage } from "../shared/errors.js";
import type { ScenarioChangeResult } from "./state.js";

/** What the device does when someone writes to it; the ScenarioManager provides it. */
export interface ScenarioCommands {
  has(id: string): boolean;
  switch(id: string, options: { graceful: boolean }): Promise<ScenarioChangeResult>;
  shutdownActive(): Promise<ScenarioChangeResult>;
  roleAction(role: string, action: string, params: ParamValues): Promise<unknown>;
}

export interface ScenarioWbDeviceDeps {
  mqtt: Pick<MqttGateway, "publish" | "subscribe" | "onEveryConnection">;
  scenarios: readonly ScenarioDefinition[];
  devices: Pick<DeviceManager, "get">;
  commands: ScenarioCommands;
  log: Logger;
}

interface RoleButton {
  role: string;
  action: string;
  meta: WbControlMeta;
}

const ID = SCENARIO_DEVICE_ID;
const CONTROLS_PREFIX = `/devices/${ID}/controls/`;

/**
 * `/devices/scenarios`: the scenario system as a Wiren Board virtual device. A writable
 * text control `scenario` holds the active id (`none` when none); writing an id
 * switches gracefully, writing `none` shuts down. The active scenario's roles appear as
 * pushbuttons `<role>_<action>` and are deleted (empty retained meta and value, the WB
 * convention) when the scenario changes. Retained `/on` messages are never executed.
 */
export class ScenarioWbDevice {
  private active: ScenarioDefinition | null = null;
  private buttons = new Map<string, RoleButton>();
  /** Controls whose `meta/error` is `w` now, so a success clears exactly those. */
  private readonly failed = new Set<string>();
  private readonly removers: Array<() => void | Promise<void>> = [];
  private running = false;

  constructor(private readonly deps: ScenarioWbDeviceDeps) {}

  async start(active: ScenarioDefinition | null): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.setActive(active);
    const { mqtt } = this.deps;
    this.removers.push(await mqtt.subscribe(wbTopics.controlOn(ID, "+"), (m) => this.onCommand(m)));
    // Retained control metas the broker still holds from an earlier run (a renamed role,
    // a deletion lost while disconnected) are stale unless they belong to the active scenario.
    this.removers.push(await mqtt.subscribe(wbTopics.controlMeta(ID, "+"), (m) => this.onRetainedMeta(m)));
    this.removers.push(await mqtt.onEveryConnection(() => this.publishAll()));
  }

  /** Removes exactly what start() added and marks the device offline (`r`), as WB devices do. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const remove of this.removers.splice(0).reverse()) {
      await Promise.resolve(remove()).catch((err: unknown) => this.deps.log.warn({ err: errorMessage(err) }, "unsubscribe failed"));
    }
    await this.publish(wbTopics.deviceError(ID), "r");
  }

  /** The active scenario changed: new value, old role buttons deleted, new ones published. */
  async show(active: ScenarioDefinition | null): Promise<void> {
    const old = this.buttons;
    this.setActive(active);
    if (!this.running) return;
    const out: Array<Promise<void>> = [this.publish(wbTopics.control(ID, SCENARIO_CONTROL), this.value())];
    for (const control of old.keys()) {
      if (!this.buttons.has(control)) out.push(...this.deleteControl(control));
    }
    for (const [control, button] of this.buttons) {
      if (!old.has(control)) out.push(this.publish(wbTopics.controlMeta(ID, control), JSON.stringify(button.meta)));
    }
    await Promise.all(out);
  }

  private setActive(active: ScenarioDefinition | null): void {
    this.active = active;
    this.buttons = active ? this.roleButtons(active) : new Map();
  }

  private roleButtons(scenario: ScenarioDefinition): Map<string, RoleButton> {
    const buttons = new Map<string, RoleButton>();
    for (const [role, deviceId] of Object.entries(scenario.roles)) {
      const device = this.deps.devices.get(deviceId);
      for (const action of roleButtonActions(device)) {
        const description = device.commands[action]?.description ?? action;
        buttons.set(roleControlId(role, action), {
          role,
          action,
          meta: { type: "pushbutton", readonly: false, order: buttons.size + 2, title: { en: `${role}: ${description}` } },
        });
      }
    }
    return buttons;
  }

  private value(): string {
    return encodeWbValue({ type: "text" }, this.active?.scenario_id ?? NO_SCENARIO) ?? NO_SCENARIO;
  }

  private scenarioMeta(): WbControlMeta {
    const choices: Record<string, WbTitle> = { [NO_SCENARIO]: { en: "None", ru: "Нет" } };
    for (const s of this.deps.scenarios) choices[s.scenario_id] = title(s);
    return { type: "text", readonly: false, order: 1, title: { en: "Scenario", ru: "Сценарий" }, enum: choices };
  }

  /** Everything, retained; at start and after every (re)connect. */
  private async publishAll(): Promise<void> {
    const messages: Array<[string, string]> = [
      [wbTopics.deviceMeta(ID), JSON.stringify({ driver: "wb-bridge", title: { en: "Scenarios" } })],
      [wbTopics.deviceMetaName(ID), "Scenarios"],
      [wbTopics.deviceError(ID), ""],
      [wbTopics.controlMeta(ID, SCENARIO_CONTROL), JSON.stringify(this.scenarioMeta())],
      [wbTopics.control(ID, SCENARIO_CONTROL), this.value()],
      [wbTopics.controlError(ID, SCENARIO_CONTROL), this.failed.has(SCENARIO_CONTROL) ? "w" : ""],
    ];
    for (const [control, button] of this.buttons) {
      messages.push([wbTopics.controlMeta(ID, control), JSON.stringify(button.meta)]);
      messages.push([wbTopics.controlError(ID, control), this.failed.has(control) ? "w" : ""]);
    }
    await Promise.all(messages.map(([topic, payload]) => this.publish(topic, payload)));
  }

  private onCommand(message: InboundMessage): void {
    const target = parseControlOnTopic(message.topic);
    if (!target || target.device !== ID) return;
    if (message.retain) {
      // A stale command must not replay after a restart (DESIGN §5).
      this.deps.log.debug({ device: ID, control: target.control }, "ignoring retained command");
      return;
    }
    const payload = message.payload.toString("utf8").trim();
    // An empty payload is how MQTT clients clear a topic, not a command.
    if (payload === "") return;
    if (target.control === SCENARIO_CONTROL) void this.onScenarioWrite(payload);
    else void this.onButton(target.control);
  }

  private async onScenarioWrite(payload: string): Promise<void> {
    const { commands, log } = this.deps;
    let ok: boolean;
    try {
      if (payload === NO_SCENARIO) {
        ok = (await commands.shutdownActive()).success;
      } else if (!commands.has(payload)) {
        log.warn({ device: ID, control: SCENARIO_CONTROL }, "MQTT command rejected: unknown scenario");
        ok = false;
      } else {
        ok = (await commands.switch(payload, { graceful: true })).success;
      }
    } catch (err) {
      // `none` while none is active is already the wanted state.
      ok = err instanceof AppError && err.code === "no_active_scenario";
      if (!ok) log.warn({ device: ID, control: SCENARIO_CONTROL, err: errorMessage(err) }, "MQTT scenario command failed");
    }
    // WB clients expect an answer on the value topic for every command, even a refused one.
    await Promise.all([this.setFailed(SCENARIO_CONTROL, !ok), this.publish(wbTopics.control(ID, SCENARIO_CONTROL), this.value())]);
  }

  private async onButton(control: string): Promise<void> {
    const button = this.buttons.get(control);
    if (!button) {
      // No error flag: publishing one would create a retained topic for a control that does not exist.
      this.deps.log.warn({ device: ID, control }, "MQTT command for a role control the active scenario does not have");
      return;
    }
    try {
      await this.deps.commands.roleAction(button.role, button.action, {});
      await Promise.all([this.setFailed(control, false), this.publish(wbTopics.control(ID, control), "1", false)]);
    } catch (err) {
      this.deps.log.warn({ device: ID, control, err: errorMessage(err) }, "MQTT role action failed");
      if (this.buttons.has(control)) await this.setFailed(control, true);
    }
  }

  private onRetainedMeta(message: InboundMessage): void {
    if (!message.retain || message.payload.length === 0) return;
    const control = message.topic.slice(CONTROLS_PREFIX.length, -"/meta".length);
    if (control === SCENARIO_CONTROL || this.buttons.has(control)) return;
    this.deps.log.info({ device: ID, control }, "deleting a stale role control");
    void Promise.all(this.deleteControl(control));
  }

  /** WB convention: an empty retained payload deletes a topic. */
  private deleteControl(control: string): Array<Promise<void>> {
    this.failed.delete(control);
    return [
      this.publish(wbTopics.controlMeta(ID, control), ""),
      this.publish(wbTopics.control(ID, control), ""),
      // A flag left by an earlier run would otherwise outlive its control.
      this.publish(wbTopics.controlError(ID, control), ""),
    ];
  }

  private async setFailed(control: string, failed: boolean): Promise<void> {
    const changed = failed ? !this.failed.has(control) : this.failed.has(control);
    if (failed) this.failed.add(control);
    else this.failed.delete(control);
    // A refused write is flagged again even if already flagged: the writer gets an answer.
    if (changed || failed) await this.publish(wbTopics.controlError(ID, control), failed ? "w" : "");
  }

  /** Never rejects: the change is committed already, and a reconnect republishes everything. */
  private async publish(topic: string, payload: string, retain = true): Promise<void> {
    try {
      await this.deps.mqtt.publish(topic, payload, { retain, qos: 1 });
    } catch (err) {
      this.deps.log.debug({ topic, err: errorMessage(err) }, "scenario device publish skipped");
    }
  }
}

function title(s: ScenarioDefinition): WbTitle {
  return { en: s.names?.en ?? s.name, ...(s.names?.ru ? { ru: s.names.ru } : {}) };
}
