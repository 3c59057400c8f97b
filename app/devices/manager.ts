import { performance } from "node:perf_hooks";
import type { Logger } from "pino";
import type { z } from "zod";
import type { DeviceDefinition, ParamSpec } from "../config/device.js";
import { paramsSchema } from "../config/params.js";
import type { ParamValues } from "../config/scenario.js";
import type { MqttGateway } from "../mqtt/gateway.js";
import { AppError, BadRequestError, ConflictError, errorMessage, NotFoundError, ServiceUnavailableError } from "../shared/errors.js";
import type { EventSink } from "../shared/event-bus.js";
import { type JsonObject, sameJson } from "../shared/json.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import type { ReadResult, StateService } from "../state/service.js";
import { type DeviceControl, deriveControls } from "./controls.js";
import { type DeviceDriver, DeviceUnreachableError, type DriverContext, type DriverMqtt, type DriverRegistry } from "./driver.js";
import type { ActionFailedEvent, ChangeSource, DeviceReachabilityEvent, DeviceStateEvent } from "./events.js";
import { type DeviceRecord, deviceKey, deviceRecordSchema, storedDeviceRecordSchema } from "./record.js";

export interface DeviceEvents extends Record<string, unknown> {
  "device.state": DeviceStateEvent;
  "device.reachability": DeviceReachabilityEvent;
  "action.failed": ActionFailedEvent;
}

export interface DeviceManagerDeps {
  devices: readonly DeviceDefinition[];
  drivers: DriverRegistry;
  state: StateService;
  /** Handed to drivers for their hardware topics; the manager itself publishes nothing. */
  mqtt: MqttGateway;
  bus: EventSink<DeviceEvents>;
  log: Logger;
  /** Observability: after each action on a known device and action, committed or failed. Must not throw. */
  onAction?: (info: { device: string; action: string; source: ChangeSource; ok: boolean; ms: number }) => void;
}

export interface DeviceStateView {
  id: string;
  state: JsonObject;
  updated_at: string | null;
  reachable: boolean;
  /** The state came from the database at start and no action or device report has confirmed it since. */
  restored: boolean;
}

/** What the WB adapter needs to present one device. */
export interface DeviceSnapshot {
  definition: DeviceDefinition;
  controls: readonly DeviceControl[];
  state: JsonObject;
  reachable: boolean;
  publishesWbDevice: boolean;
}

interface ManagedDevice {
  definition: DeviceDefinition;
  driver: DeviceDriver;
  controls: DeviceControl[];
  /** Each command's params schema, compiled once at start rather than per action. */
  params: Map<string, z.ZodType<ParamValues>>;
  state: JsonObject;
  updatedAt: number | null;
  reachable: boolean;
  /** See DeviceStateView.restored. */
  restored: boolean;
  /** The stored row was written by a newer bridge: actions are refused rather than overwrite it. */
  storedByNewer: boolean;
}

export class DeviceNotFoundError extends NotFoundError {
  constructor(id: string) {
    super("device_not_found", `unknown device "${id}"`);
  }
}

/**
 * Owns every device's state: restores it at start, runs actions and hardware feedback
 * one at a time per device, commits each new state before acknowledging it, then
 * emits it. Presenting devices on MQTT is the WB adapter's job, driven by the events.
 */
export class DeviceManager {
  private readonly devices = new Map<string, ManagedDevice>();
  private readonly queue = new KeyedQueue();
  private readonly log: Logger;
  private accepting = false;
  private timings: { restoreMs: number } | null = null;
  private stopStateListener: (() => void) | null = null;
  /** Why actions are refused while this bridge is a standby; null otherwise. */
  private refusal: string | null = null;
  /** Nothing in it depends on the device, so all drivers share one instead of 10,000 copies. */
  private readonly driverMqtt: DriverMqtt = {
    publish: (topic, payload, options) => this.deps.mqtt.publish(topic, payload, options),
    subscribe: (filter, handler) => this.deps.mqtt.subscribe(filter, handler),
  };

  constructor(private readonly deps: DeviceManagerDeps) {
    this.log = deps.log.child({ module: "devices" });
  }

  /** Restores every `device:<id>`, then sets drivers up with their restored state. Publishes nothing. */
  async initialize(): Promise<void> {
    if (this.accepting) return;
    const started = performance.now();
    this.stopStateListener?.();
    const restoredCount = await this.load();
    for (const [id, device] of this.devices) {
      if (!device.driver.setup) continue;
      try {
        await device.driver.setup(device.state);
      } catch (err) {
        this.log.error({ device: id, err: errorMessage(err) }, "driver setup failed");
      }
    }
    // Recovery points and backup restores rewrite device:<id>; apply them like any change.
    this.stopStateListener = this.deps.state.subscribe("device:", (change) => {
      if (change.transition === "restore") this.applyStored(change.key.slice("device:".length), change.new, "restore");
    });
    this.refusal = null;
    this.timings = { restoreMs: performance.now() - started };
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

  /**
   * A standby's view: every device's stored state, kept current from the changes the
   * active bridge commits, with no driver set up and every action refused with `refusal`.
   * initialize() later takes over from the store as it is then.
   */
  async follow(refusal: string): Promise<void> {
    if (this.accepting) return;
    this.refusal = refusal;
    await this.load();
    this.stopStateListener?.();
    const stopChanges = this.deps.state.subscribe("device:", (change) => {
      if (change.external || change.transition === "restore") {
        this.applyStored(change.key.slice("device:".length), change.new, change.external ? "peer" : "restore");
      }
    });
    const stopGaps = this.deps.state.onGap(() => void this.reread());
    this.stopStateListener = () => {
      stopChanges();
      stopGaps();
    };
  }

  /** Every device's stored value again, applied like a peer's change (after notifications were missed). */
  private async reread(): Promise<void> {
    try {
      for (const [key, result] of await this.deps.state.readAll("device:", storedDeviceRecordSchema)) {
        if (result.status === "ok") this.applyStored(key.slice("device:".length), result.value, "peer");
      }
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, "cannot re-read device states");
    }
  }

  /** Every configured device with its driver built and its stored state (or its default); returns how many were restored. */
  private async load(): Promise<number> {
    const stored = await this.deps.state.readAll("device:", storedDeviceRecordSchema);
    // Building a zod schema costs far more than using one, and devices of a kind declare
    // the same params: one immutable schema per distinct declaration serves them all.
    const compiled = new Map<string, z.ZodType<ParamValues>>();
    const schemaFor = (specs: readonly ParamSpec[]): z.ZodType<ParamValues> => {
      const signature = JSON.stringify(specs);
      let schema = compiled.get(signature);
      if (!schema) {
        schema = paramsSchema(specs);
        compiled.set(signature, schema);
      }
      return schema;
    };
    let restoredCount = 0;
    for (const definition of this.deps.devices) {
      const id = definition.device_id;
      const factory = this.deps.drivers.get(definition.driver);
      if (!factory) throw new Error(`no driver "${definition.driver}" for device ${id}`);
      const driver = factory.create(definition, this.driverContext(id));
      const key = deviceKey(id);
      const restored = this.restoreState(key, definition, driver, stored.get(key));
      if (restored) restoredCount += 1;
      this.devices.set(id, {
        definition,
        driver,
        controls: deriveControls(definition, driver.controls()),
        params: new Map(Object.entries(definition.commands).map(([name, c]) => [name, schemaFor(c.params)])),
        state: restored?.state ?? driver.defaultState(),
        updatedAt: restored?.updatedAt ?? null,
        reachable: true,
        restored: restored !== null,
        storedByNewer: storedByNewer(stored.get(key), driver),
      });
    }
    return restoredCount;
  }

  /** Stops accepting actions, lets queued ones finish and commit, then shuts drivers down. */
  async shutdown(): Promise<void> {
    this.accepting = false;
    this.stopStateListener?.();
    this.stopStateListener = null;
    await this.queue.drain();
    for (const [id, device] of this.devices) {
      await device.driver.shutdown?.().catch((err: unknown) => {
        this.log.error({ device: id, err: errorMessage(err) }, "driver shutdown failed");
      });
    }
  }

  /** How long initialize() spent restoring (read, validate, driver setup). */
  get startupTimings(): { restoreMs: number } | null {
    return this.timings;
  }

  list(): DeviceDefinition[] {
    return [...this.devices.values()].map((d) => d.definition);
  }

  ids(): string[] {
    return [...this.devices.keys()];
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

  snapshot(id: string): DeviceSnapshot {
    const d = this.require(id);
    return {
      definition: d.definition,
      controls: d.controls,
      state: d.state,
      reachable: d.reachable,
      publishesWbDevice: d.driver.publishesWbDevice ?? true,
    };
  }

  has(id: string): boolean {
    return this.devices.has(id);
  }

  /**
   * Validates, runs the driver, validates the merged state, commits it, and only then
   * emits. Resolves with the committed state.
   */
  async performAction(id: string, action: string, params: unknown, source: ChangeSource): Promise<DeviceStateView> {
    const device = this.require(id);
    if (!this.accepting) {
      if (this.refusal) throw new ServiceUnavailableError("standby", this.refusal);
      throw new ServiceUnavailableError("not_ready", "the bridge is not accepting actions right now");
    }
    const schema = device.params.get(action);
    if (!schema) {
      const known = Object.keys(device.definition.commands).join(", ") || "none";
      throw new BadRequestError("unknown_action", `device "${id}" has no action "${action}" (known: ${known})`);
    }
    const started = performance.now();
    const observe = (ok: boolean) => this.deps.onAction?.({ device: id, action, source, ok, ms: performance.now() - started });
    const parsed = schema.safeParse(params ?? {});
    if (!parsed.success) {
      const reason = parsed.error.issues.map((i) => `${i.path.join(".") || "params"}: ${i.message}`).join("; ");
      const err = new BadRequestError("invalid_params", `invalid params for ${id}.${action}: ${reason}`, parsed.error.issues);
      this.failed(id, action, source, err);
      observe(false);
      throw err;
    }
    return this.queue.run(id, async () => {
      let result: DeviceStateView;
      try {
        // Checked before the driver acts: the hardware must not change when the state cannot be kept.
        if (device.storedByNewer) {
          throw new ConflictError(
            "state_version_unsupported",
            `the stored state of ${id} was written by a newer version of the bridge; actions are refused so it is not overwritten (upgrade the bridge, or delete device:${id} to start from defaults)`,
          );
        }
        const change = await device.driver.handleAction(action, parsed.data, device.state);
        result = await this.commit(id, device, change, source, action);
      } catch (err) {
        this.failed(id, action, source, err);
        observe(false);
        throw err;
      }
      observe(true);
      return result;
    });
  }

  private async commit(
    id: string,
    device: ManagedDevice,
    change: Partial<JsonObject>,
    source: ChangeSource,
    action?: string,
  ): Promise<DeviceStateView> {
    const next = device.driver.stateSchema.safeParse({ ...device.state, ...change });
    if (!next.success) {
      this.log.error({ device: id, action }, "driver produced a state that fails its schema");
      throw new AppError(500, "invalid_driver_state", `driver ${device.definition.driver} produced an invalid state for ${id}`);
    }
    const previous = device.state;
    const changed = Object.keys(next.data).filter((k) => !sameJson(previous[k], next.data[k]));
    // Feedback that repeats what is known is not a change: no write, no event. It still
    // confirms a restored state.
    if (!action && changed.length === 0) {
      device.restored = false;
      return view(id, device);
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
      { source },
    );
    device.state = next.data;
    device.updatedAt = updatedAt.getTime();
    device.restored = false;
    this.deps.bus.emit("device.state", { deviceId: id, state: device.state, changed, restored: false, source, action });
    return view(id, device);
  }

  /**
   * A `device:<id>` value written outside this manager (a recovery point, a backup
   * restore, the active bridge of a pair) becomes the device's state, in order with its actions.
   */
  private applyStored(id: string, value: JsonObject | null, source: "restore" | "peer"): void {
    const device = this.devices.get(id);
    if (!device) return;
    void this.queue.run(id, async () => {
      const record = value === null ? null : deviceRecordSchema.safeParse(value);
      const state = record?.success ? device.driver.stateSchema.safeParse({ ...device.driver.defaultState(), ...record.data.state }) : null;
      if (value !== null && !state?.success) {
        this.log.warn({ key: deviceKey(id) }, "restored device state fails the driver schema; kept the current state");
        return;
      }
      const next = state?.success ? state.data : device.driver.defaultState();
      // A re-read after missed notifications finds most devices as they were.
      if (source === "peer" && sameJson(next, device.state)) return;
      device.state = next;
      device.updatedAt = Date.now();
      device.storedByNewer = false;
      // A peer's change is routine (one per action it runs); only restores are news.
      if (source === "restore") this.log.info({ device: id }, "device state restored from a recovery point or backup");
      this.deps.bus.emit("device.state", {
        deviceId: id,
        state: device.state,
        changed: Object.keys(device.state),
        restored: false,
        source,
      });
    });
  }

  private failed(id: string, action: string, source: ChangeSource, err: unknown): void {
    const unreachable = err instanceof DeviceUnreachableError;
    if (unreachable) this.setReachable(id, false);
    const code = err instanceof AppError ? err.code : "action_failed";
    this.log.warn({ device: id, action, source, code }, "action failed");
    this.deps.bus.emit("action.failed", { deviceId: id, action, source, code, message: errorMessage(err), unreachable });
  }

  /**
   * One context per device, built at start for every device: its methods forward to
   * functions the manager makes once, so a context costs one small object. (Under tsx,
   * each arrow function stored in a property also costs an Object.defineProperty.)
   */
  private driverContext(id: string): DriverContext {
    const parent = this.log;
    const applyFeedback = this.applyFeedback;
    const markReachable = this.markReachable;
    let log: Logger | null = null;
    return {
      // Made on first use: a pino child per device is a large part of a 10,000-device
      // start, and most drivers never log.
      get log() {
        log ??= parent.child({ device: id });
        return log;
      },
      mqtt: this.driverMqtt,
      report(change) {
        applyFeedback(id, change);
      },
      setReachable(reachable) {
        markReachable(id, reachable);
      },
    };
  }

  private readonly applyFeedback = (id: string, change: Partial<JsonObject>): void => {
    const device = this.devices.get(id);
    if (!device) return;
    this.queue
      .run(id, () => this.commit(id, device, change, "device"))
      .catch((err: unknown) => {
        this.log.error({ device: id, err: errorMessage(err) }, "device feedback could not be applied");
      });
  };

  private readonly markReachable = (id: string, reachable: boolean): void => this.setReachable(id, reachable);

  private setReachable(id: string, reachable: boolean): void {
    const device = this.devices.get(id);
    if (!device || device.reachable === reachable) return;
    device.reachable = reachable;
    this.log.info({ device: id, reachable }, "device reachability changed");
    this.deps.bus.emit("device.reachability", { deviceId: id, reachable });
  }

  private restoreState(
    key: string,
    definition: DeviceDefinition,
    driver: DeviceDriver,
    stored: ReadResult<DeviceRecord> | undefined,
  ): { state: JsonObject; updatedAt: number | null } | null {
    if (!stored || stored.status === "missing") return null;
    if (stored.status === "invalid") {
      this.log.warn({ key }, "stored device state is unreadable; starting from defaults (row kept)");
      return null;
    }
    // Already checked against the record schema by readAll; not parsed a second time.
    const record = stored.value;
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

  private require(id: string): ManagedDevice {
    const device = this.devices.get(id);
    if (!device) throw new DeviceNotFoundError(id);
    return device;
  }
}

function storedByNewer(stored: ReadResult<DeviceRecord> | undefined, driver: DeviceDriver): boolean {
  if (stored?.status === "invalid") return stored.newer === true;
  return stored?.status === "ok" && stored.value.version > driver.stateVersion;
}

function view(id: string, device: ManagedDevice): DeviceStateView {
  return {
    id,
    state: device.state,
    updated_at: device.updatedAt === null ? null : new Date(device.updatedAt).toISOString(),
    reachable: device.reachable,
    restored: device.restored,
  };
}
