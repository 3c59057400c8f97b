import type { Logger } from "pino";
import type { z } from "zod";
import type { DeviceDefinition } from "../config/device.js";
import type { ParamValues } from "../config/scenario.js";
import type { WbControlType } from "../mqtt/wb-values.js";
import type { JsonObject } from "../shared/json.js";

/** A state field shown as a Wiren Board control. */
export interface StateControl {
  field: string;
  type: WbControlType;
  min?: number;
  max?: number;
  units?: string;
  title?: string;
}

/**
 * One device's driver instance. It computes state changes; DeviceManager owns the
 * state: drivers never write the store or publish WB meta themselves.
 */
export interface DeviceDriver<S extends JsonObject = JsonObject> {
  readonly stateSchema: z.ZodType<S>;
  /** Schema version of the state this driver produces; stored with every value. */
  readonly stateVersion: number;
  defaultState(): S;
  /** State fields published as WB controls, in display order. */
  controls(): StateControl[];
  /** Performs the action; returns the fields that changed. */
  handleAction(action: string, params: ParamValues, state: Readonly<S>): Promise<Partial<S>>;
  setup?(state: Readonly<S>): Promise<void>;
  shutdown?(): Promise<void>;
}

export interface DriverContext {
  log: Logger;
}

export interface DriverFactory {
  readonly name: string;
  /** Driver-specific checks of a device config; each problem names file and field. */
  validate(device: DeviceDefinition): string[];
  create(device: DeviceDefinition, context: DriverContext): DeviceDriver;
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

  /** Problems across all devices; empty when every device's driver exists and accepts its config. */
  validate(devices: readonly DeviceDefinition[]): string[] {
    const problems: string[] = [];
    for (const device of devices) {
      const factory = this.factories.get(device.driver);
      if (!factory) {
        problems.push(`${device.file}: driver: unknown driver "${device.driver}" (known: ${this.names().join(", ")})`);
      } else {
        problems.push(...factory.validate(device));
      }
    }
    return problems;
  }
}
