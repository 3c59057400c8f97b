import { isJsonObject, type JsonObject, type JsonValue } from "../shared/json.js";

/**
 * JSON merge patch (RFC 7386 semantics): objects merge recursively, arrays and scalars
 * replace, `null` deletes the field.
 */
export function deepMerge(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else if (isJsonObject(value) && isJsonObject(out[key])) {
      out[key] = deepMerge(out[key] as JsonObject, value);
    } else {
      out[key] = stripNulls(value);
    }
  }
  return out;
}

function stripNulls(value: JsonValue): JsonValue {
  if (!isJsonObject(value)) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, v]) => v !== null)
      .map(([k, v]) => [k, stripNulls(v)]),
  );
}

/** The value at a dotted path (`data.status`, `list.0`), or undefined. */
export function getPath(value: JsonValue | undefined, path: string): JsonValue | undefined {
  let current: JsonValue | undefined = value;
  for (const part of path.split(".")) {
    if (current === null || current === undefined || typeof current !== "object") return undefined;
    current = Array.isArray(current) ? current[Number(part)] : current[part];
  }
  return current;
}
