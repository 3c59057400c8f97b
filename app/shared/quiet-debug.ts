import { createRequire } from "node:module";

/** What the `debug` package's instances and factory offer that its users (mqtt-packet, ioredis, ...) touch. */
interface DebugInstance {
  (...args: unknown[]): void;
  enabled: boolean;
  namespace: string;
  extend(suffix: string, delimiter?: string): DebugInstance;
  log?: (...args: unknown[]) => void;
  destroy(): boolean;
}

interface DebugFactory {
  (namespace: string): DebugInstance;
  enabled(namespace: string): boolean;
  default?: DebugFactory;
  debug?: DebugFactory;
}

/** Does nothing, takes nothing: a call allocates no arguments array, unlike `debug`'s `(...args)`. */
function silent(namespace: string): DebugInstance {
  const instance = Object.assign(() => {}, {
    enabled: false,
    namespace,
    extend: (suffix: string, delimiter = ":") => silent(`${namespace}${delimiter}${suffix}`),
    destroy: () => false,
  });
  return instance;
}

/**
 * Makes the `debug` package hand out a no-op for every namespace that `DEBUG` does not
 * enable, for the modules that load it after this call. Why: mqtt-packet (used by both the
 * MQTT client and the embedded broker) calls `debug()` dozens of times per packet, and each
 * call allocates its rest-arguments array before it finds itself disabled. Measured against
 * mosquitto at 64 clients, that was about 12 µs of the bridge's main-thread CPU per action
 * and an eighth of everything it allocated. Enabled namespaces get the real instance, so
 * `DEBUG=mqtt-packet:*` still prints; enabling one later from code (`debug.enable()`) does
 * not reach instances made before. Returns false (and changes nothing) if `debug` is not
 * installed where `from` resolves it.
 *
 * It swaps the module's exports in Node's require cache (a documented, process-wide
 * table), so it belongs to the entry point, before the MQTT modules load.
 */
export function silenceDisabledDebug(from: string = import.meta.url): boolean {
  const requireModule = createRequire(from);
  let path: string;
  try {
    path = requireModule.resolve("debug");
  } catch {
    return false;
  }
  const real = requireModule(path) as DebugFactory;
  const cached = requireModule.cache[path];
  if (!cached || typeof real !== "function" || typeof real.enabled !== "function") return false;
  const quietDebug = (namespace: string) => (real.enabled(namespace) ? real(namespace) : silent(namespace));
  const quiet = Object.assign(quietDebug, real);
  quiet.default = quiet;
  quiet.debug = quiet;
  cached.exports = quiet;
  return true;
}
