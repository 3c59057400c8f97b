import type { JsonObject } from "../shared/json.js";
import { StoreClosedError, type ListedEntry, type StateStore } from "./store.js";

interface Row {
  text: string;
  updatedAt: number;
}

/**
 * In-memory store for unit tests of other layers. Values are kept as JSON text so a
 * caller can never mutate stored state through a reference, exactly as with SQLite.
 */
export class MemoryStateStore implements StateStore {
  private readonly rows = new Map<string, Row>();
  private open = false;

  async initialize(): Promise<void> {
    this.open = true;
  }

  async close(): Promise<void> {
    this.open = false;
  }

  async get(key: string): Promise<JsonObject | null> {
    this.assertOpen();
    const row = this.rows.get(key);
    return row ? (JSON.parse(row.text) as JsonObject) : null;
  }

  async set(key: string, value: JsonObject): Promise<void> {
    this.assertOpen();
    this.rows.set(key, { text: JSON.stringify(value), updatedAt: Date.now() });
  }

  async delete(key: string): Promise<void> {
    this.assertOpen();
    this.rows.delete(key);
  }

  async list(prefix: string): Promise<ListedEntry[]> {
    this.assertOpen();
    return [...this.rows.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, row]) => ({ key, value: JSON.parse(row.text) as JsonObject, updatedAt: row.updatedAt }));
  }

  private assertOpen(): void {
    if (!this.open) throw new StoreClosedError("state store is not open");
  }
}
