import type { JsonValue } from "../shared/json.js";

/** Wiren Board control types this bridge publishes (wirenboard/conventions). */
export type WbControlType = "switch" | "alarm" | "pushbutton" | "range" | "rgb" | "value" | "text";

export type WbTitle = { en: string; ru?: string };

export interface WbControlMeta {
  type: WbControlType;
  readonly: boolean;
  order: number;
  min?: number;
  max?: number;
  precision?: number;
  units?: string;
  title?: WbTitle;
  /** Allowed values of a text control: value -> its title. */
  enum?: Record<string, WbTitle>;
}

function roundTo(value: number, precision: number | undefined): string {
  if (!precision) return String(value);
  const decimals = Math.max(0, -Math.floor(Math.log10(precision)));
  return (Math.round(value / precision) * precision).toFixed(decimals);
}

function rgb(value: JsonValue): string | null {
  const parts =
    typeof value === "string"
      ? value.split(";").map(Number)
      : Array.isArray(value)
        ? value.map(Number)
        : value && typeof value === "object"
          ? [value.r, value.g, value.b].map(Number)
          : [];
  if (parts.length !== 3 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return null;
  return parts.join(";");
}

/**
 * A state value as the text WB expects on the control's value topic, or null when
 * there is nothing to publish (an empty retained payload would delete the control).
 */
export function encodeWbValue(meta: Pick<WbControlMeta, "type" | "precision">, value: JsonValue | undefined): string | null {
  if (value === undefined || value === null) return null;
  switch (meta.type) {
    case "switch":
    case "alarm":
      return value === true || value === 1 || value === "1" ? "1" : "0";
    case "range":
    case "value":
      return typeof value === "number" && Number.isFinite(value) ? roundTo(value, meta.precision) : null;
    case "rgb":
      return rgb(value);
    case "text":
      if (typeof value === "string") return value === "" ? null : value;
      return JSON.stringify(value);
    case "pushbutton":
      return null;
  }
}

/** Error flags of a control or device: `r` read, `w` write, `p` period miss; "" clears. */
export function encodeWbError(flags: ReadonlySet<"r" | "w" | "p">): string {
  return ["r", "w", "p"].filter((f) => flags.has(f as "r" | "w" | "p")).join("");
}
