import type { JsonObject } from "../shared/json.js";
import {
  type HistoryEntry,
  type HistoryQuery,
  type HistoryRetention,
  type ListedEntry,
  type ListOptions,
  type StateStore,
  StoreClosedError,
  type StoredEntry,
  StoreWriteError,
  type WriteOp,
} from "./store.js";

interface Row {
  text: string;
  updatedAt: number;
  version: number;
  expiresAt: number | null;
}

interface HistoryRow extends Omit<HistoryEntry, "old" | "new"> {
  old: string | null;
  new: string | null;
}

/**
 * In-memory store with the same semantics as SQLite, for unit tests of other layers.
 * Values are kept as JSON text so a caller can never mutate stored state through a reference.
 */
export class MemoryStateStore implements StateStore {
  private readonly rows = new Map<string, Row>();
  private readonly log: HistoryRow[] = [];
  private nextId = 1;
  private open = false;

  constructor(private readonly now: () => number = Date.now) {}

  async initialize(): Promise<void> {
    this.open = true;
  }

  async close(): Promise<void> {
    this.open = false;
  }

  async get(key: string): Promise<JsonObject | null> {
    return (await this.getEntry(key))?.value ?? null;
  }

  async getEntry(key: string): Promise<StoredEntry | null> {
    this.assertOpen();
    const row = this.live(key);
    return row ? toEntry(key, row) : null;
  }

  set(key: string, value: JsonObject): Promise<void> {
    return this.write([{ key, value }]);
  }

  delete(key: string): Promise<void> {
    return this.write([{ key, value: null }]);
  }

  async write(ops: readonly WriteOp[]): Promise<void> {
    this.assertOpen();
    const at = this.now();
    // Every op is encoded before any is applied: a batch is all or nothing, as in SQLite.
    const texts = ops.map((op) => {
      if (op.value === null) return null;
      try {
        return op.json ?? JSON.stringify(op.value);
      } catch (err) {
        throw new StoreWriteError(`value of ${op.key} is not serializable: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
    for (const [i, op] of ops.entries()) {
      const old = this.live(op.key)?.text ?? null;
      const text = texts[i] ?? null;
      if (!(old === null && text === null)) {
        this.log.push({
          id: this.nextId++,
          key: op.key,
          old,
          new: text,
          transition: op.meta?.transition ?? (text === null ? "delete" : old === null ? "create" : "update"),
          source: op.meta?.source ?? "internal",
          actor: op.meta?.actor ?? null,
          at,
        });
      }
      if (text === null) this.rows.delete(op.key);
      else this.rows.set(op.key, { text, updatedAt: at, version: op.version ?? 1, expiresAt: op.expiresAt ?? null });
    }
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListedEntry[]> {
    this.assertOpen();
    const keys = [...this.rows.keys()]
      .filter((key) => key.startsWith(prefix) && (options.after === undefined || key > options.after) && this.live(key))
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return keys.slice(0, options.limit ?? keys.length).map((key) => toEntry(key, this.rows.get(key) as Row));
  }

  async count(prefix = ""): Promise<number> {
    this.assertOpen();
    return [...this.rows.keys()].filter((key) => key.startsWith(prefix) && this.live(key)).length;
  }

  async history(query: HistoryQuery): Promise<HistoryEntry[]> {
    this.assertOpen();
    return this.log
      .filter(
        (h) =>
          (query.key === undefined || h.key === query.key) &&
          (query.transition === undefined || h.transition === query.transition) &&
          (query.beforeId === undefined || h.id < query.beforeId),
      )
      .reverse()
      .slice(0, query.limit)
      .map((h) => ({ ...h, old: h.old === null ? null : parse(h.old), new: h.new === null ? null : parse(h.new) }));
  }

  async pruneHistory(retention: HistoryRetention, now: number): Promise<number> {
    const perKey = new Map<string, number>();
    const newest = this.log.at(-1);
    // The newest entry stays, as in SQLite, where its id would otherwise be reused.
    const keep = [...this.log].reverse().filter((h) => {
      // Counted toward its key's limit like any other, as in SQLite.
      const n = (perKey.get(h.key) ?? 0) + 1;
      perKey.set(h.key, n);
      if (h === newest) return true;
      const tooMany = retention.maxPerKey > 0 && n > retention.maxPerKey;
      const tooOld = retention.maxAgeMs > 0 && h.at < now - retention.maxAgeMs;
      return !tooMany && !tooOld;
    });
    const removed = this.log.length - keep.length;
    this.log.splice(0, this.log.length, ...keep.reverse());
    return removed;
  }

  async sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>> {
    const expired: Array<{ key: string; old: JsonObject | null }> = [];
    for (const [key, row] of this.rows) {
      if (row.expiresAt !== null && row.expiresAt <= now) {
        expired.push({ key, old: parse(row.text) });
        this.log.push({ id: this.nextId++, key, old: row.text, new: null, transition: "expire", source: "ttl", actor: null, at: now });
        this.rows.delete(key);
      }
    }
    return expired;
  }

  private live(key: string): Row | undefined {
    const row = this.rows.get(key);
    return row && (row.expiresAt === null || row.expiresAt > this.now()) ? row : undefined;
  }

  private assertOpen(): void {
    if (!this.open) throw new StoreClosedError("state store is not open");
  }
}

function parse(text: string): JsonObject {
  return JSON.parse(text) as JsonObject;
}

function toEntry(key: string, row: Row): StoredEntry {
  return { key, value: parse(row.text), updatedAt: row.updatedAt, version: row.version, expiresAt: row.expiresAt };
}
