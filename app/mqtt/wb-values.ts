import type { JsonValue } from "../shared/json.js";

/** Wiren Board control types this bridge publishes (wirenboard/conventions). */
export type WbControlType = "switch" | "alarm" | "pushbutton" | "range" | "value" | "text";

export interface WbControlMeta {
  type: WbControlType;
  readonly: boolean;
  order: number;
  min?: number;
  max?: number;
  units?: string;
  title?: { en: string };
}

/**
 * A state value as the text WB expects on the control's value topic, or null when
 * there is nothing to publish (an empty retained payload would delete the control).
 */
export function encodeWbValue(type: WbControlType, value: JsonValue | undefined): string | null {
  if (value === undefined || value === null) return null;
  switch (type) {
    case "switch":
    case "alarm":
      return value === true || value === 1 || value === "1" ? "1" : "0";
    case "range":
    case "value":
      return typeof value === "number" ? String(value) : null;
    case "text":
      if (typeof value === "string") return value === "" ? null : value;
      return JSON.stringify(value);
    case "pushbutton":
      return null;
  }
}
