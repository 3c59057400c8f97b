import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import type { CommandSpec, DeviceDefinition } from "../config/device.js";
import { parsePayload, paramsSchema } from "../config/params.js";
import type { ParamValues } from "../config/scenario.js";
import type { InboundMessage, MqttGateway } from "../mqtt/gateway.js";
import { parseControlOnTopic, wbTopics } from "../mqtt/topics.js";
import { encodeWbValue } from "../mqtt/wb-values.js";
import type { EventSink } from "../shared/event-bus.js";
import { AppError, BadRequestError, errorMessage, NotFoundError, ServiceUnavailableError } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import type { StateService } from "../state/service.js";
import { deriveControls, type DeviceControl } from "./controls.js";
import type { DeviceDriver, DriverRegistry } from "./driver.js";
import type { ChangeSource, DeviceStateEvent } from "./events.js";
import { deviceKey, deviceRecordSchema } from "./record.js";

export interface DeviceEvents extends Record<string, unknown> {
  "device.state": DeviceStateEvent;
}

export interface DeviceManagerDeps {
  devices: readonly DeviceDefinition[];
  drivers: DriverRegistry;
  state: StateService;
  mqtt: MqttGateway;
  bus: EventSink<DeviceEvents>;
  log: Logger;
}

export interface DeviceStateView {
  id: string;
  state: JsonObject;
  updated_at: string | null;
}

interface ManagedDevice {
  definition: DeviceDefinition;
  driver: DeviceDriver;
  controls: DeviceControl[];
  state: JsonObject;
  updatedAt: number | null;
  /** Controls whose `meta/error` is currently set, so a success clears exactly those. */
  failedControls: Set<string>;
}

export class DeviceNotFoundError extends NotFoundError {
  constructor(id: string) {
    super("device_not_found", `unknown device "${id}"`);
  }
}

/**
 * Owns every device's state: restores it at start, runs actions one at a time per
 * device, commits each new state before acknowledging it, then publishes it.
 */
export class DeviceManager {
  private readonly devices = new Map<string, ManagedDevice>();
  private readonly queue = new KeyedQueue();
  private readonly log: Logger;
  private accepting = false;
  private stopCommands: (() => Promise<void>) | null = null;
  private stopConnectHook: (() => void) | null = null;
  private timings: { restoreMs: number; publishMs: number } | null = null;

  constructor(private readonly deps: DeviceManagerDeps) {
    this.log = deps.log.child({ module: "devices" });
  }

  /** Restores every `device:<id>`, sets drivers up, then publishes; nothing is published before restore. */
  async initialize(): Promise<void> {
    if (this.accepting) return;
    const started = performance.now();
    const stored = await this.deps.state.readAll("device:", deviceRecordSchema);
    let restoredCount = 0;
    for (const definition of this.deps.devices) {
      const factory = this.deps.drivers.get(definition.driver);
      if (!factory) throw new Error(`no driver "${definition.driver}" for device ${definition.device_id}`);
      const driver = factory.create(definition, { log: this.log.child({ device: definition.device_id }) });
      const key = deviceKey(definition.device_id);
      const restored = this.restoreState(key, definition, driver, stored.get(key));
      if (restored) restoredCount += 1;
      this.devices.set(definition.device_id, {
        definition,
        driver,
        controls: deriveControls(definition, driver.controls()),
        state: restored?.state ?? driver.defaultState(),
        updatedAt: restored?.updatedAt ?? null,
        failedControls: new Set(),
      });
    }
    for (const device of this.devices.values()) {
      try {
        await device.driver.setup?.(device.state);
      } catch (err) {
        this.log.error({ device: device.definition.device_id, err: errorMessage(err) }, "driver setup failed");
      }
    }
    const restored = performance.now();

    this.stopCommands = await this.deps.mqtt.subscribe(wbTopics.allControlCommands, (m) => this.onCommand(m));
    this.stopConnectHook = this.deps.mqtt.onConnect(() => this.publishAll());
    if (this.deps.mqtt.connected) await this.publishAll();
    this.timings = { restoreMs: restored - started, publishMs: performance.now() - restored };
    this.log.info({ devices: this.devices.size, restored: restoredCount, ...this.timings }, "device states restored");
    this.accepting = true;
    for (const [id, device] of this.devices) {
      this.deps.bus.emit("device.state", {
        deviceId: id,
        state: device.state,
        changed: Object.keys(device.state),
        restored: true,
        source: "restore",
      });
    }
  }

  /** Stops accepting actions, lets queued ones finish and commit, then shuts drivers down. */
  async shutdown(): Promise<void> {
    this.accepting = false;
    await this.queue.drain();
    this.stopConnectHook?.();
    this.stopConnectHook = null;
    await this.stopCommands?.().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, "unsubscribe failed"));
    this.stopCommands = null;
    for (const device of this.devices.values()) {
      await device.driver.shutdown?.().catch((err: unknown) => {
        this.log.error({ device: device.definition.device_id, err: errorMessage(err) }, "driver shutdown failed");
      });
    }
  }

  /** How long initialize() spent restoring (read, validate, driver setup) and publishing. */
  get startupTimings(): { restoreMs: number; publishMs: number } | null {
    return this.timings;
  }

  list(): DeviceDefinition[] {
    return [...this.devices.values()].map((d) => d.definition);
  }

  get(id: string): DeviceDefinition {
    return this.require(id).definition;
  }

  controls(id: string): readonly DeviceControl[] {
    return this.require(id).controls;
  }

  getState(id: string): DeviceStateView {
    return view(id, this.require(id));
  }

  has(id: string): boolean {
    return this.devices.has(id);
  }

  /**
   * Validates, runs the driver, validates the merged state, commits it, and only then
   * publishes and emits. Resolves with the committed state.
   */
  async performAction(id: string, action: string, params: unknown, source: ChangeSource): Promise<DeviceStateView> {
    const device = this.require(id);
    if (!this.accepting) {
      throw new ServiceUnavailableError("not_ready", "the bridge is not accepting actions right now");
    }
    const command = device.definition.commands[action];
    if (!command) {
      const known = Object.keys(device.definition.commands).join(", ") || "none";
      throw new BadRequestError("unknown_action", `device "${id}" has no action "${action}" (known: ${known})`);
    }
    const parsed = paramsSchema(command.params).safeParse(params ?? {});
    if (!parsed.success) {
      const reason = parsed.error.issues.map((i) => `${i.path.join(".") || "params"}: ${i.message}`).join("; ");
      throw new BadRequestError("invalid_params", `invalid params for ${id}.${action}: ${reason}`, parsed.error.issues);
    }
    return this.queue.run(id, () => this.apply(id, device, action, parsed.data, source));
  }

  private async apply(
    id: string,
    device: ManagedDevice,
    action: string,
    params: ParamValues,
    source: ChangeSource,
  ): Promise<DeviceStateView> {
    const change = await device.driver.handleAction(action, params, device.state);
    const next = device.driver.stateSchema.safeParse({ ...device.state, ...change });
    if (!next.success) {
      this.log.error({ device: id, action }, "driver produced a state that fails its schema");
      throw new AppError(500, "invalid_driver_state", `driver ${device.definition.driver} produced an invalid state for ${id}`);
    }
    const updatedAt = new Date();
    await this.deps.state.write(
      deviceKey(id),
      {
        driver: device.definition.driver,
        version: device.driver.stateVersion,
        state: next.data,
        updated_at: updatedAt.toISOString(),
      },
      deviceRecordSchema,
    );
    const previous = device.state;
    device.state = next.data;
    device.updatedAt = updatedAt.getTime();
    const changed = Object.keys(next.data).filter((k) => JSON.stringify(previous[k]) !== JSON.stringify(next.data[k]));
    // The commanded control's value is published even when unchanged: WB clients expect
    // an answer on the value topic for every command they send.
    this.publishValues(id, device, changed.includes(action) ? changed : [...changed, action]);
    this.clearControlError(id, device, action);
    this.deps.bus.emit("device.state", { deviceId: id, state: device.state, changed, restored: false, source });
    return view(id, device);
  }

  private restoreState(
    key: string,
    definition: DeviceDefinition,
    driver: DeviceDriver,
    stored: Awaited<ReturnType<StateService["read"]>> | undefined,
  ): { state: JsonObject; updatedAt: number | null } | null {
    if (!stored || stored.status === "missing") return null;
    if (stored.status === "invalid") {
      this.log.warn({ key }, "stored device state is unreadable; starting from defaults (row kept)");
      return null;
    }
    const record = deviceRecordSchema.parse(stored.value);
    if (record.driver !== definition.driver) {
      this.log.warn({ key, storedDriver: record.driver }, "stored state belongs to another driver; starting from defaults");
      return null;
    }
    if (record.version > driver.stateVersion) {
      this.log.warn({ key, version: record.version }, "stored state is from a newer version; starting from defaults (row kept)");
      return null;
    }
    const parsed = driver.stateSchema.safeParse({ ...driver.defaultState(), ...record.state });
    if (!parsed.success) {
      this.log.warn({ key }, "stored device state fails the driver schema; starting from defaults (row kept)");
      return null;
    }
    const updatedAt = record.updated_at ? Date.parse(record.updated_at) : (stored.updatedAt ?? NaN);
    return { state: parsed.data, updatedAt: Number.isNaN(updatedAt) ? null : updatedAt };
  }

  private onCommand(message: InboundMessage): void {
    const target = parseControlOnTopic(message.topic);
    if (!target) return;
    const device = this.devices.get(target.device);
    // Other devices on the same broker (real WB hardware) are not ours to handle.
    if (!device) return;
    if (message.retain) {
      this.log.debug({ device: target.device, control: target.control }, "ignoring retained command");
      return;
    }
    const control = device.controls.find((c) => c.id === target.control);
    const action = control?.action;
    const command = action ? device.definition.commands[action] : undefined;
    if (!action || !command) {
      this.rejectCommand(target.device, device, target.control, `control "${target.control}" accepts no commands`);
      return;
    }
    const params = payloadParams(command, message.payload.toString("utf8"));
    if (!params.ok) {
      this.rejectCommand(target.device, device, target.control, params.reason);
      return;
    }
    this.performAction(target.device, action, params.value, "mqtt").catch((err: unknown) => {
      const expected = err instanceof AppError && err.statusCode < 500;
      this.rejectCommand(target.device, device, target.control, errorMessage(err), !expected);
    });
  }

  private rejectCommand(id: string, device: ManagedDevice, control: string, reason: string, serverSide = false): void {
    const log = serverSide ? this.log.error.bind(this.log) : this.log.warn.bind(this.log);
    log({ device: id, control, reason }, "MQTT command rejected");
    device.failedControls.add(control);
    void this.publishRetained(wbTopics.controlError(id, control), "w");
  }

  private clearControlError(id: string, device: ManagedDevice, control: string): void {
    if (!device.failedControls.delete(control)) return;
    void this.publishRetained(wbTopics.controlError(id, control), "");
  }

  private publishValues(id: string, device: ManagedDevice, fields: readonly string[]): void {
    for (const [topic, payload] of valueMessages(id, device, fields)) void this.publishRetained(topic, payload);
  }

  /**
   * Every device's meta and current values; runs at start and after every reconnect.
   * Publishes in windows so thousands of devices neither flood the broker nor block
   * the event loop, and resolves once the broker has acknowledged them all.
   */
  private async publishAll(): Promise<void> {
    let window: Promise<void>[] = [];
    for (const [id, device] of this.devices) {
      for (const [topic, payload] of deviceMessages(id, device)) {
        window.push(this.publishRetained(topic, payload));
        if (window.length >= PUBLISH_WINDOW) {
          await Promise.all(window);
          window = [];
        }
      }
    }
    await Promise.all(window);
  }

  /**
   * Never rejects: the state is already committed, and a broker that is away gets
   * everything again from publishAll() when it comes back.
   */
  private publishRetained(topic: string, payload: string): Promise<void> {
    return this.deps.mqtt.publish(topic, payload, { retain: true, qos: 1 }).catch((err: unknown) => {
      this.log.debug({ topic, err: errorMessage(err) }, "publish skipped");
    });
  }

  private require(id: string): ManagedDevice {
    const device = this.devices.get(id);
    if (!device) throw new DeviceNotFoundError(id);
    return device;
  }
}

const PUBLISH_WINDOW = 512;

function valueMessages(id: string, device: ManagedDevice, fields: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const control of device.controls) {
    if (!control.field || !fields.includes(control.field)) continue;
    const payload = encodeWbValue(control.meta.type, device.state[control.field]);
    if (payload !== null) out.push([wbTopics.control(id, control.id), payload]);
  }
  return out;
}

/** The retained topics that make up a WB virtual device: meta, control metas, values. */
function deviceMessages(id: string, device: ManagedDevice): Array<[string, string]> {
  const name = device.definition.device_name;
  return [
    [wbTopics.deviceMeta(id), JSON.stringify({ driver: "wb-bridge", title: { en: name } })],
    [wbTopics.deviceMetaName(id), name],
    ...device.controls.map((c): [string, string] => [wbTopics.controlMeta(id, c.id), JSON.stringify(c.meta)]),
    ...valueMessages(id, device, Object.keys(device.state)),
  ];
}

function view(id: string, device: ManagedDevice): DeviceStateView {
  return {
    id,
    state: device.state,
    updated_at: device.updatedAt === null ? null : new Date(device.updatedAt).toISOString(),
  };
}

/** The `/on` payload becomes the command's first param; a command without params ignores it. */
function payloadParams(
  command: CommandSpec,
  payload: string,
): { ok: true; value: ParamValues } | { ok: false; reason: string } {
  const first = command.params[0];
  if (!first) return { ok: true, value: {} };
  const value = parsePayload(first, payload);
  if (value === undefined) {
    return { ok: false, reason: `payload is not a valid ${first.type} for param "${first.name}"` };
  }
  return { ok: true, value: { [first.name]: value } };
}
