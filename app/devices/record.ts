import { z } from "zod";
import { jsonObjectSchema } from "../shared/json.js";

/** What `device:<id>` holds: the driver's state with the driver and its schema version. */
export const deviceRecordSchema = z
  .object({
    driver: z.string().min(1),
    version: z.number().int().min(1),
    state: jsonObjectSchema,
  })
  .strict();

export type DeviceRecord = z.infer<typeof deviceRecordSchema>;

export const deviceKey = (id: string) => `device:${id}`;
