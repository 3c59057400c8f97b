import { performance } from "node:perf_hooks";
import type { JsonObject } from "../shared/json.js";
import type {
  HistoryEntry,
  HistoryQuery,
  HistoryRetention,
  ListedEntry,
  ListOptions,
  StateStore,
  StoredEntry,
  WriteOp,
} from "../state/store.js";
import type { BridgeMetrics, StateOp } from "./metrics.js";

/**
 * A StateStore that times every call of the one it wraps and counts it by operation,
 * key namespace and result. Everything else passes through unchanged, errors included.
 */
export class InstrumentedStateStore implements StateStore {
  constructor(
    readonly inner: StateStore,
    private readonly metrics: BridgeMetrics,
  ) {
    const count = inner.count?.bind(inner);
    if (count) this.count = (prefix) => this.timed("count", prefix, () => count(prefix));
    this.watch = inner.watch?.bind(inner);
    this.lockKey = inner.lockKey?.bind(inner);
  }

  /** Present when the wrapped store has it. */
  readonly count?: (prefix?: string) => Promise<number>;
  readonly watch?: StateStore["watch"];
  readonly lockKey?: StateStore["lockKey"];

  private async timed<T>(op: StateOp, keyOrPrefix: string | undefined, run: () => Promise<T>): Promise<T> {
    const namespace = this.metrics.namespaceLabel(keyOrPrefix);
    const started = performance.now();
    try {
      const result = await run();
      this.metrics.observeStateOp(op, namespace, true, performance.now() - started);
      return result;
    } catch (err) {
      this.metrics.observeStateOp(op, namespace, false, performance.now() - started);
      throw err;
    }
  }

  initialize(): Promise<void> {
    return this.inner.initialize();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  get(key: string): Promise<JsonObject | null> {
    return this.timed("get", key, () => this.inner.get(key));
  }

  set(key: string, value: JsonObject): Promise<void> {
    return this.timed("write", key, () => this.inner.set(key, value));
  }

  delete(key: string): Promise<void> {
    return this.timed("write", key, () => this.inner.delete(key));
  }

  getEntry(key: string): Promise<StoredEntry | null> {
    return this.timed("get", key, () => this.inner.getEntry(key));
  }

  list(prefix: string, options?: ListOptions): Promise<ListedEntry[]> {
    return this.timed("list", prefix, () => this.inner.list(prefix, options));
  }

  write(ops: readonly WriteOp[]): Promise<void> {
    // A batch spanning namespaces is labelled by its first key (restores and imports only).
    return this.timed("write", ops[0]?.key, () => this.inner.write(ops));
  }

  history(query: HistoryQuery): Promise<HistoryEntry[]> {
    return this.timed("history", query.key, () => this.inner.history(query));
  }

  pruneHistory(retention: HistoryRetention, now: number): Promise<number> {
    return this.timed("prune_history", undefined, () => this.inner.pruneHistory(retention, now));
  }

  sweepExpired(now: number): Promise<Array<{ key: string; old: JsonObject | null }>> {
    return this.timed("sweep_expired", undefined, () => this.inner.sweepExpired(now));
  }
}
