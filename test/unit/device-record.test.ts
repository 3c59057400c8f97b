import { describe, expect, it } from "vitest";
import { deviceRecordSchema, storedDeviceRecordSchema } from "../../app/devices/record.js";

const issues = (result: { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } }) =>
  result.success ? [] : (result.error?.issues ?? []).map((i) => `${i.path.join(".")}: ${i.message}`);

describe("storedDeviceRecordSchema", () => {
  // Restore reads values that a store JSON-parsed; on those both schemas must agree, messages included.
  const samples = [
    { driver: "simulated", version: 1, state: { power: true, volume: 12, nested: { list: [1, "a", null, { x: false }] } } },
    { driver: "simulated", version: 1, state: {}, updated_at: "2024-05-01T10:00:00.000Z" },
    { driver: "simulated", version: 1, state: [] },
    { driver: "simulated", version: 1, state: "on" },
    { driver: "simulated", version: 1, state: null },
    { driver: "simulated", version: 1 },
    { driver: "", version: 1, state: {} },
    { driver: "simulated", version: 0, state: {} },
    { driver: "simulated", version: 1.5, state: {} },
    { driver: "simulated", version: 1, state: {}, extra: true },
    { driver: "simulated", version: 1, state: {}, updated_at: 5 },
  ];

  it.each(samples.map((s) => [JSON.stringify(s), JSON.parse(JSON.stringify(s)) as unknown]))(
    "gives the same verdict and issues as deviceRecordSchema for %s",
    (_label, value) => {
      const full = deviceRecordSchema.safeParse(value);
      const stored = storedDeviceRecordSchema.safeParse(value);
      expect(stored.success).toBe(full.success);
      expect(issues(stored)).toEqual(issues(full));
      if (full.success && stored.success) expect(stored.data).toEqual(full.data);
    },
  );
});
