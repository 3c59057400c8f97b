import { z } from "zod";
import type { ParamSpec } from "./device.js";
import type { ParamValue, ParamValues } from "./scenario.js";

function paramValue(spec: ParamSpec): z.ZodType<ParamValue> {
  switch (spec.type) {
    case "boolean":
      return z.boolean();
    case "string":
      return spec.enum ? z.enum(spec.enum as [string, ...string[]]) : z.string().max(4096);
    case "integer":
    case "number": {
      let n = spec.type === "integer" ? z.number().int() : z.number();
      if (spec.min !== undefined) n = n.min(spec.min);
      if (spec.max !== undefined) n = n.max(spec.max);
      return n;
    }
  }
}

/** The zod schema of a command's params object, built from its declaration. */
export function paramsSchema(specs: readonly ParamSpec[]): z.ZodType<ParamValues> {
  const shape: Record<string, z.ZodType<ParamValue | undefined>> = {};
  for (const spec of specs) {
    const value = paramValue(spec);
    shape[spec.name] = spec.default !== undefined ? value.default(spec.default) : spec.required ? value : value.optional();
  }
  return z.object(shape).strict() as unknown as z.ZodType<ParamValues>;
}

/**
 * A decimal number as text. The digits before the point are not optional-point-then-
 * optional-digits (`\d+\.?\d*`): that form backtracks quadratically, so one long run
 * of digits in an MQTT payload blocked the event loop for minutes. This one is linear.
 */
export const DECIMAL_NUMBER = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * Turns a Wiren Board `/on` payload (always text) into the value of a param:
 * switches send `0`/`1`, ranges send numbers.
 */
export function parsePayload(spec: ParamSpec, payload: string): ParamValue | undefined {
  const text = payload.trim();
  switch (spec.type) {
    case "boolean":
      if (text === "1" || text === "true") return true;
      if (text === "0" || text === "false") return false;
      return undefined;
    case "integer":
    case "number": {
      if (text === "" || !DECIMAL_NUMBER.test(text)) return undefined;
      return Number(text);
    }
    case "string":
      return payload;
  }
}
