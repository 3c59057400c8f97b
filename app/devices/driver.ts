import type { Logger } from "pino";
import type { z } from "zod";
import type { DeviceDefinition } from "../config/device.js";
import type { ParamValues } from "../config/scenario.js";
import type { MessageHandler, PublishOptions } from "../mqtt/gateway.js";
import type { WbControlType } from "../mqtt/wb-values.js";
import { AppError } from "../shared/errors.js";
import type { JsonObject } from "../shared/json.js";
import { unknownControlOverrides } from "./controls.js";

/** A state field shown as a Wiren Board control. */
export interface StateControl {
  field: string;
  type: WbControlType;
  min?: number;
  max?: number;
  precision?: number;
  units?: string;
  title?: string;
  /** Allowed values of a text control, shown as a choice in the WB UI. */
  enum?: string[];
  /** Shown but never writable, even when a command of the same name exists. */
  readonly?: boolean;
}

/**
 * What a driver may do on MQTT: publish to hardware topics and listen for feedback.
 * It never publishes the WB virtual device of its own device (DeviceManager does).
 */
export interface DriverMqtt {
  publish(topic: string, payload: string, options?: PublishOptions): Promise<void>;
  /** The filter is renewed after every reconnect; returns the unsubscribe. */
  subscribe(filter: string, handler: MessageHandler): Promise<() => Promise<void>>;
}

export interface DriverContext<S extends JsonObject = JsonObject> {
  log: Logger;
  mqtt: DriverMqtt;
  /**
   * Hardware reported a change (feedback topic, availability). DeviceManager merges,
   * validates, commits, publishes and emits it like an action's change, in order with
   * the device's actions.
   */
  report(change: Partial<S>): void;
  /** Reachability of the hardware: unreachable marks the WB controls with error `r`. */
  setReachable(reachable: boolean): void;
}

/**
 * One device's driver instance. It computes state changes; DeviceManager owns the
 * state: drivers never write the store or publish WB meta themselves.
 */
export interface DeviceDriver<S extends JsonObject = JsonObject> {
  readonly stateSchema: z.ZodType<S>;
  /** Schema version of the state this driver produces; stored with every value. */
  readonly stateVersion: number;
  /**
   * False for drivers that front a device that already is a WB device (wb_relay):
   * the bridge then publishes no second virtual device for the same hardware.
   */
  readonly publishesWbDevice?: boolean;
  defaultState(): S;
  /** State fields published as WB controls, in display order. */
  controls(): StateControl[];
  /**
   * Performs the action; returns the fields that changed. Throw DeviceUnreachableError
   * when the hardware cannot be reached (WB error `r`), any other error for a failed
   * write (WB error `w`).
   */
  handleAction(action: string, params: ParamValues, state: Readonly<S>): Promise<Partial<S>>;
  /** Called once after restore, with the restored state; subscribe to feedback here. */
  setup?(state: Readonly<S>): Promise<void>;
  /** Removes exactly what setup() added. */
  shutdown?(): Promise<void>;
}

export interface DriverFactory {
  readonly name: string;
  /** Driver-specific checks of a device config; each problem names file and field. */
  validate(device: DeviceDefinition): string[];
  create(device: DeviceDefinition, context: DriverContext): DeviceDriver;
}

/** The hardware did not answer or is marked unavailable; the last good state is kept. */
export class DeviceUnreachableError extends AppError {
  constructor(message: string) {
    super(503, "device_unreachable", message);
  }
}

function inertContext(log: Logger): DriverContext {
  return {
    log,
    mqtt: {
      publish: () => Promise.reject(new Error("not started")),
      subscribe: () => Promise.reject(new Error("not started")),
    },
    report: () => undefined,
    setReachable: () => undefined,
  };
}

export class DriverRegistry {
  private readonly factories = new Map<string, DriverFactory>();

  constructor(factories: readonly DriverFactory[]) {
    for (const f of factories) this.factories.set(f.name, f);
  }

  get(name: string): DriverFactory | undefined {
    return this.factories.get(name);
  }

  names(): string[] {
    return [...this.factories.keys()];
  }

  /**
   * Problems across all devices; empty when every device's driver exists, accepts its
   * config, and every control override names one of the device's controls.
   */
  validate(devices: readonly DeviceDefinition[], log: Logger): string[] {
    const problems: string[] = [];
    for (const device of devices) {
      const factory = this.factories.get(device.driver);
      if (!factory) {
        problems.push(`${device.file}: driver: unknown driver "${device.driver}" (known: ${this.names().join(", ")})`);
        continue;
      }
      const own = factory.validate(device);
      problems.push(...own);
      if (own.length === 0 && Object.keys(device.controls).length > 0) {
        // Constructing a driver does no I/O, so an inert context is enough to ask for its controls.
        const driver = factory.create(device, inertContext(log));
        problems.push(...unknownControlOverrides(device, driver.controls()));
      }
    }
    return problems;
  }
}
