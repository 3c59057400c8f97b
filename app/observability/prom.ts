/**
 * prom-client, module by module. Its index also loads the Pushgateway (https, zlib), the
 * cluster aggregator (cluster, child_process) and, for the CPU counters' exemplars,
 * @opentelemetry/api: about 5 MB of RSS in a bare process, none of it used here. These are
 * the classes the index re-exports; the default metrics are its own installers, but for
 * the CPU counters, which are written here (same names and help, no exemplars).
 */
import Counter from "prom-client/lib/counter.js";
import Gauge from "prom-client/lib/gauge.js";
import Histogram from "prom-client/lib/histogram.js";
import eventLoopLag from "prom-client/lib/metrics/eventLoopLag.js";
import gc from "prom-client/lib/metrics/gc.js";
import heapSizeAndUsed from "prom-client/lib/metrics/heapSizeAndUsed.js";
import heapSpacesSizeAndUsed from "prom-client/lib/metrics/heapSpacesSizeAndUsed.js";
import osMemoryHeap from "prom-client/lib/metrics/osMemoryHeap.js";
import processHandles from "prom-client/lib/metrics/processHandles.js";
import processMaxFileDescriptors from "prom-client/lib/metrics/processMaxFileDescriptors.js";
import processOpenFileDescriptors from "prom-client/lib/metrics/processOpenFileDescriptors.js";
import processRequests from "prom-client/lib/metrics/processRequests.js";
import processResources from "prom-client/lib/metrics/processResources.js";
import processStartTime from "prom-client/lib/metrics/processStartTime.js";
import version from "prom-client/lib/metrics/version.js";
import Registry from "prom-client/lib/registry.js";

export { Counter, Gauge, Histogram, Registry };

/** prom-client's `collectDefaultMetrics({ register: registry })`, into `registry` only. */
export function collectDefaultMetrics(registry: Registry): void {
  processCpuCounters(registry);
  const config = { eventLoopMonitoringPrecision: 10 };
  for (const install of [
    processStartTime,
    osMemoryHeap,
    processOpenFileDescriptors,
    processMaxFileDescriptors,
    eventLoopLag,
    processResources,
    processHandles,
    processRequests,
    heapSizeAndUsed,
    heapSpacesSizeAndUsed,
    version,
    gc,
  ]) {
    install(registry, config);
  }
}

function processCpuCounters(registry: Registry): void {
  let last = process.cpuUsage();
  const registers = [registry];
  const system = new Counter({ name: "process_cpu_system_seconds_total", help: "Total system CPU time spent in seconds.", registers });
  const total = new Counter({ name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", registers });
  new Counter({
    name: "process_cpu_user_seconds_total",
    help: "Total user CPU time spent in seconds.",
    registers,
    // One read of the process's CPU time sets all three, as prom-client's own do.
    collect() {
      const now = process.cpuUsage();
      const user = (now.user - last.user) / 1e6;
      const sys = (now.system - last.system) / 1e6;
      last = now;
      this.inc(user);
      system.inc(sys);
      total.inc(user + sys);
    },
  });
}
