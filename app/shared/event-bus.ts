import type { Logger } from "pino";

/** The emitting side only: what a producer of events needs. */
export interface EventSink<Events> {
  emit<K extends keyof Events>(event: K, payload: Events[K]): void;
}

/** The listening side only: what a consumer of events needs. */
export interface EventSource<Events> {
  on<K extends keyof Events>(event: K, listener: (payload: Events[K]) => void | Promise<void>): () => void;
}

type Listener<P> = (payload: P) => void | Promise<void>;

/**
 * Typed event bus. A listener's failure (thrown or rejected) is logged and never
 * reaches the emitter: a broken SSE client or metric must not fail a device action.
 */
export class EventBus<Events extends Record<string, unknown>> implements EventSink<Events>, EventSource<Events> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  constructor(private readonly log: Logger) {}

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => {
      set.delete(listener as Listener<never>);
    };
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of set) {
      try {
        const result = (listener as Listener<Events[K]>)(payload);
        if (result instanceof Promise) {
          result.catch((err: unknown) => this.log.error({ err, event: String(event) }, "event listener failed"));
        }
      } catch (err) {
        this.log.error({ err, event: String(event) }, "event listener failed");
      }
    }
  }

  listenerCount(event: keyof Events): number {
    return this.listeners.get(event)?.size ?? 0;
  }
}
