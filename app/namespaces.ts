import type { Logger } from "pino";
import type { SystemConfig } from "./config/system.js";
import { deviceRecordSchema } from "./devices/record.js";
import { scenarioStateSchema } from "./scenarios/state.js";
import { StateService } from "./state/service.js";
import type { StateStore } from "./state/store.js";

/**
 * The StateService as the bridge and the CLI both use it: limits and history retention
 * from config, and the namespaces the bridge itself writes registered with their
 * current schema versions, so `migrate` and every read agree. A migration step
 * `n: (value) => value'` upgrades a stored value from version n to n + 1.
 */
export function createStateService(store: StateStore, log: Logger, persistence: SystemConfig["persistence"]): StateService {
  const state = new StateService(store, log, {
    history: {
      maxPerKey: persistence.history.max_per_key,
      maxAgeMs: persistence.history.max_age_days * 24 * 3600 * 1000,
    },
    maxValueBytes: persistence.max_value_bytes,
  });
  state.registerNamespace("device", { schema: deviceRecordSchema, version: 1, migrations: {} });
  state.registerNamespace("scenario", { schema: scenarioStateSchema, version: 1, migrations: {} });
  return state;
}
