import { z } from "zod";
import { type JsonObject, jsonObjectSchema } from "../shared/json.js";

/** What `device:<id>` holds: the driver's state with the driver and its schema version. */
export const deviceRecordSchema = z
  .object({
    driver: z.string().min(1),
    version: z.number().int().min(1),
    state: jsonObjectSchema,
    /** When the change was made (ISO 8601); written with the state so a restore reports it exactly. */
    updated_at: z.string().optional(),
  })
  .strict();

export type DeviceRecord = z.infer<typeof deviceRecordSchema>;

/**
 * deviceRecordSchema for a value read back from a store at start. Stores hand values
 * back JSON-parsed, so every leaf already is a JSON value: the recursive JSON check of
 * `state` could only confirm that again, and it was a large part of restoring
 * 10,000 devices. The restore validates `state` with the driver's own schema instead.
 * Same verdicts and messages as deviceRecordSchema on JSON-parsed input.
 */
export const storedDeviceRecordSchema = deviceRecordSchema.extend({
  state: z.record(z.string(), z.unknown()) as z.ZodType<JsonObject>,
});

export const deviceKey = (id: string) => `device:${id}`;
