import type { ActionFailedEvent, DeviceStateEvent } from "../devices/events.js";
import type { ScenarioShutdownEvent, ScenarioSwitchedEvent } from "../scenarios/state.js";
import type { EventSource } from "../shared/event-bus.js";
import type { BackupResult } from "../state/backups.js";
import type { CacheEvent } from "../state/redis-cache.js";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "./prom.js";
import { SeriesCounter, SeriesHistogram } from "./series.js";

/** What DeviceManager reports after each action it accepted (known device and action). */
export interface ActionInfo {
  device: string;
  action: string;
  source: string;
  ok: boolean;
  ms: number;
}

/** What the SQLite store reports after each group commit. */
export interface CommitInfo {
  writes: number;
  ops: number;
  durationMs: number;
  ok: boolean;
}

export type StateOp = "get" | "list" | "write" | "history" | "prune_history" | "sweep_expired" | "count";

/** The bus events the metrics count (a subset of the bridge's events). */
export interface MetricEvents extends Record<string, unknown> {
  "scenario.switched": ScenarioSwitchedEvent;
  "scenario.shutdown": ScenarioShutdownEvent;
  "device.state": DeviceStateEvent;
  "action.failed": ActionFailedEvent;
}

/** Live values read at scrape time, so a gauge never drifts from the thing it shows. */
export interface MetricSources {
  mqttConnected?: () => boolean;
  ready?: () => boolean;
  sseClients?: () => number;
}

const NAMESPACE_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
/** Distinct namespace label values kept; any beyond become `other`, so a client cannot grow the series without bound. */
export const MAX_NAMESPACES = 64;

const FAST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const ACTION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
const BACKUP_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * The bridge's metrics, in a registry of its own (never prom-client's global one), so
 * two apps in one process (tests) never share or clash. Labels are bounded: namespaces
 * (the part of a key before `:`, capped at MAX_NAMESPACES), device ids, action and
 * scenario names from the configuration, fixed enums; never keys or values.
 */
export class BridgeMetrics {
  readonly registry = new Registry();
  private readonly namespaces = new Set<string>();
  private sources: MetricSources = {};

  // Counted on every action: see series.ts for why these are not prom-client's own.
  private readonly stateOps = new SeriesCounter(
    "wb_bridge_state_operations_total",
    "State store operations by operation, key namespace and result.",
    ["op", "namespace", "result"],
    this.registry,
  );
  private readonly stateOpSeconds = new SeriesHistogram(
    "wb_bridge_state_operation_duration_seconds",
    "Duration of state store operations (a write includes waiting for its group commit).",
    ["op", "namespace", "result"],
    FAST_BUCKETS,
    this.registry,
  );
  private readonly commits = new Counter({
    name: "wb_bridge_state_commits_total",
    help: "Group-commit transactions by result.",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  private readonly commitBatch = new Histogram({
    name: "wb_bridge_state_commit_batch_writes",
    help: "Writes (callers) carried by one group-commit transaction.",
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  });
  private readonly commitSeconds = new Histogram({
    name: "wb_bridge_state_commit_duration_seconds",
    help: "Duration of one group-commit transaction, including its fsync.",
    labelNames: ["result"] as const,
    buckets: FAST_BUCKETS,
    registers: [this.registry],
  });
  private readonly cacheReads = { hit: 0, miss: 0, bypass: 0 };
  private readonly cacheEvents = new Counter({
    name: "wb_bridge_state_cache_total",
    help: "Redis state cache: reads by result (hit, miss, bypass while the cache is off) and failed Redis commands (error).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  private readonly backups = new Counter({
    name: "wb_bridge_backups_total",
    help: "Backup attempts by reason and result.",
    labelNames: ["reason", "result"] as const,
    registers: [this.registry],
  });
  private readonly backupSeconds = new Histogram({
    name: "wb_bridge_backup_duration_seconds",
    help: "Duration of backups (snapshot, verification and rotation).",
    labelNames: ["reason", "result"] as const,
    buckets: BACKUP_BUCKETS,
    registers: [this.registry],
  });
  private readonly lastBackup = new Gauge({
    name: "wb_bridge_last_backup_timestamp_seconds",
    help: "When the last backup attempt finished, by result (Unix time).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  private readonly mqttMessages = new SeriesCounter(
    "wb_bridge_mqtt_messages_total",
    "MQTT messages received (in) and published (out) by the bridge.",
    ["direction"],
    this.registry,
  );
  private readonly mqttReconnects = new Counter({
    name: "wb_bridge_mqtt_reconnects_total",
    help: "Connections to the broker established after the first one.",
    registers: [this.registry],
  });
  private readonly mqttDisconnects = new Counter({
    name: "wb_bridge_mqtt_disconnects_total",
    help: "Connections to the broker lost (not counting a clean shutdown).",
    registers: [this.registry],
  });
  private readonly deviceActions = new SeriesCounter(
    "wb_bridge_device_actions_total",
    "Device actions by device, action, source (http, mqtt, scenario) and result.",
    ["device", "action", "source", "result"],
    this.registry,
  );
  private readonly deviceActionSeconds = new SeriesHistogram(
    "wb_bridge_device_action_duration_seconds",
    "Device action latency until committed (or failed), including waiting for earlier actions on the device.",
    ["device", "action", "result"],
    ACTION_BUCKETS,
    this.registry,
  );
  private readonly deviceStateChanges = new SeriesCounter(
    "wb_bridge_device_state_changes_total",
    "Committed device state changes by source (including hardware feedback).",
    ["source"],
    this.registry,
  );
  private readonly scenarioChanges = new Counter({
    name: "wb_bridge_scenario_switches_total",
    help: "Scenario switches, starts and shutdowns by scenario, operation and result.",
    labelNames: ["scenario", "operation", "result"] as const,
    registers: [this.registry],
  });

  constructor(options: { version: string; defaultMetrics?: boolean }) {
    const info = new Gauge({
      name: "wb_bridge_info",
      help: "Always 1; the bridge version as a label.",
      labelNames: ["version"] as const,
      registers: [this.registry],
    });
    info.set({ version: options.version }, 1);
    const sources = () => this.sources;
    new Gauge({
      name: "wb_bridge_ready",
      help: "1 once the bridge is ready (state restored, broker connected), else 0.",
      registers: [this.registry],
      collect() {
        this.set(sources().ready?.() ? 1 : 0);
      },
    });
    new Gauge({
      name: "wb_bridge_mqtt_connected",
      help: "1 while the bridge is connected to the broker, else 0.",
      registers: [this.registry],
      collect() {
        this.set(sources().mqttConnected?.() ? 1 : 0);
      },
    });
    new Gauge({
      name: "wb_bridge_sse_clients",
      help: "Clients connected to GET /events.",
      registers: [this.registry],
      collect() {
        this.set(sources().sseClients?.() ?? 0);
      },
    });
    // Process metrics and event-loop lag (nodejs_eventloop_lag_*), into this registry only.
    if (options.defaultMetrics ?? true) collectDefaultMetrics(this.registry);
  }

  /** Adds (or replaces) live sources read at scrape time. */
  /** Only a bridge of an active/standby pair has a lease: the gauges exist only there, never as a misleading 0. */
  registerLease(lease: () => { active: boolean; epoch: number | null }): void {
    new Gauge({
      name: "wb_bridge_lease_active",
      help: "1 while this bridge of an active/standby pair holds the lease (drives the devices), 0 while it stands by.",
      registers: [this.registry],
      collect() {
        this.set(lease().active ? 1 : 0);
      },
    });
    new Gauge({
      name: "wb_bridge_lease_epoch",
      help: "The lease epoch (fencing token) this bridge of a pair holds; 0 while it stands by.",
      registers: [this.registry],
      collect() {
        this.set(lease().epoch ?? 0);
      },
    });
  }

  setSources(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** The Prometheus text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The namespace label for a key or prefix: the part before `:`, bounded. */
  namespaceLabel(keyOrPrefix: string | undefined): string {
    if (keyOrPrefix === undefined || keyOrPrefix === "") return "*";
    const at = keyOrPrefix.indexOf(":");
    if (at < 0) return "*";
    const ns = keyOrPrefix.slice(0, at);
    if (!NAMESPACE_PATTERN.test(ns)) return "other";
    if (this.namespaces.has(ns)) return ns;
    if (this.namespaces.size >= MAX_NAMESPACES) return "other";
    this.namespaces.add(ns);
    return ns;
  }

  observeStateOp(op: StateOp, namespace: string, ok: boolean, ms: number): void {
    const labels = { op, namespace, result: ok ? "ok" : "error" };
    this.stateOps.inc(labels);
    this.stateOpSeconds.observe(labels, ms / 1000);
  }

  observeCommit(info: CommitInfo): void {
    const result = info.ok ? "ok" : "error";
    this.commits.inc({ result });
    this.commitSeconds.observe({ result }, info.durationMs / 1000);
    if (info.ok) this.commitBatch.observe(info.writes);
  }

  observeCache(event: CacheEvent): void {
    this.cacheEvents.inc({ result: event });
    if (event !== "error") this.cacheReads[event] += 1;
  }

  /** Cached reads answered from Redis since start, of all reads the cache saw; null before the first. */
  cacheHitRate(): number | null {
    const { hit, miss, bypass } = this.cacheReads;
    const total = hit + miss + bypass;
    return total === 0 ? null : hit / total;
  }

  observeBackup(result: BackupResult): void {
    const labels = { reason: result.reason, result: result.ok ? "ok" : "error" };
    this.backups.inc(labels);
    this.backupSeconds.observe(labels, result.duration_ms / 1000);
    const at = Date.parse(result.at);
    this.lastBackup.set({ result: labels.result }, Number.isFinite(at) ? at / 1000 : Date.now() / 1000);
  }

  observeMqttMessage(direction: "in" | "out"): void {
    this.mqttMessages.inc({ direction });
  }

  /** `connects` is the gateway's count of established connections, 1 for the first. */
  observeMqttConnect(connects: number): void {
    if (connects > 1) this.mqttReconnects.inc();
  }

  observeMqttDisconnect(): void {
    this.mqttDisconnects.inc();
  }

  observeAction(info: ActionInfo): void {
    const result = info.ok ? "ok" : "error";
    this.deviceActions.inc({ device: info.device, action: info.action, source: info.source, result });
    this.deviceActionSeconds.observe({ device: info.device, action: info.action, result }, info.ms / 1000);
  }

  /** Counts state changes and scenario changes from the bus; returns a remover. */
  listen(bus: EventSource<MetricEvents>): () => void {
    const removers = [
      bus.on("device.state", (e) => {
        if (e.source !== "restore" && !e.restored) this.deviceStateChanges.inc({ source: e.source });
      }),
      bus.on("scenario.switched", (e) => {
        this.scenarioChanges.inc({ scenario: e.to, operation: e.operation, result: e.success ? "ok" : "error" });
      }),
      bus.on("scenario.shutdown", (e) => {
        this.scenarioChanges.inc({ scenario: e.scenario_id, operation: "shutdown", result: e.success ? "ok" : "error" });
      }),
    ];
    return () => {
      for (const remove of removers) remove();
    };
  }
}
