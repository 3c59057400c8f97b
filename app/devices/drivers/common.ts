import { z } from "zod";
import type { DeviceDefinition } from "../../config/device.js";
import { describeIssues } from "../../config/issues.js";
import { errorMessage } from "../../shared/errors.js";
import { DeviceUnreachableError, type DriverMqtt } from "../driver.js";

/**
 * Pieces every MQTT hardware driver (wb_ir, wb_relay, mqtt_json) needs: config checks
 * that name file and field, names of peers' topic levels, and sending a command.
 */

/** One MQTT topic level as other programs name them: WB ids and control names ("Play from ROM1", "K1"). */
export const topicLevelSchema = z
  .string()
  .min(1)
  .max(200)
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what a topic must not hold (MQTT 5 §1.5.4).
  .regex(/^[^/+#\u0000]+$/, "expected one MQTT topic level (no '/', '+', '#')");

/** A topic without wildcards, e.g. a Zigbee2MQTT base topic `zigbee2mqtt/living_lamp`. */
export const topicPathSchema = z
  .string()
  .min(1)
  .max(1000)
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what a topic must not hold (MQTT 5 §1.5.4).
  .regex(/^[^+#\u0000]+$/, "expected an MQTT topic without wildcards ('+', '#')")
  .refine((t) => !t.endsWith("/") && !t.includes("//"), "expected no empty topic levels (no trailing or doubled '/')");

export type Checked<T> = { ok: true; data: T } | { ok: false; problems: string[] };

/** Parses `value` with `schema`; problems read `<file>: <prefix.path>: <message>`. */
export function checkPart<S extends z.ZodType>(
  schema: S,
  value: unknown,
  file: string,
  prefix: readonly PropertyKey[],
): Checked<z.output<S>> {
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, data: result.data };
  return { ok: false, problems: describeIssues(file, result.error.issues, prefix) };
}

/**
 * A driver's parsed `config` plus its own fields of every command, or every problem.
 * `commandSchema` sees the whole command object (description and params included) so
 * a strict schema catches misspelled driver fields.
 */
export function checkDevice<C extends z.ZodType, K extends z.ZodType>(
  device: DeviceDefinition,
  configSchema: C,
  commandSchema: K,
): Checked<{ config: z.output<C>; commands: Map<string, z.output<K>> }> {
  const problems: string[] = [];
  const config = checkPart(configSchema, device.config, device.file, ["config"]);
  if (!config.ok) problems.push(...config.problems);
  const commands = new Map<string, z.output<K>>();
  for (const [name, command] of Object.entries(device.commands)) {
    const parsed = checkPart(commandSchema, command, device.file, ["commands", name]);
    if (parsed.ok) commands.set(name, parsed.data);
    else problems.push(...parsed.problems);
  }
  if (!config.ok || problems.length > 0) return { ok: false, problems };
  return { ok: true, data: { config: config.data, commands } };
}

/** Builds a driver from a config that validate() accepted; a bug if it does not parse. */
export function requireValid<T>(checked: Checked<T>): T {
  if (!checked.ok) throw new Error(`device config was not validated: ${checked.problems.join("; ")}`);
  return checked.data;
}

export const COMMAND_PUBLISH_TIMEOUT_MS = 5000;

/**
 * Sends a command to hardware: QoS 1, never retained (a stale command must not replay
 * when the peer reconnects). A publish that fails or is not acknowledged in time means
 * the hardware cannot be reached: DeviceUnreachableError (WB error `r`, state kept).
 */
export async function sendCommand(mqtt: DriverMqtt, topic: string, payload: string, timeoutMs = COMMAND_PUBLISH_TIMEOUT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no acknowledgement within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([mqtt.publish(topic, payload, { qos: 1, retain: false }), timeout]);
  } catch (err) {
    // The topic names hardware, not a value: safe in a message that reaches the logs.
    throw new DeviceUnreachableError(`cannot send to ${topic}: ${errorMessage(err)}`);
  } finally {
    clearTimeout(timer);
  }
}
