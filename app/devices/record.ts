import { z } from "zod";
import { jsonObjectSchema } from "../shared/json.js";

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

export const deviceKey = (id: string) => `device:${id}`;
