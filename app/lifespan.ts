import type { Logger } from "pino";
import type { AppConfig, Env } from "./config/loader.js";
import type { DriverFactory } from "./devices/driver.js";
import { DriverRegistry } from "./devices/driver.js";
import { mqttJsonDriverFactory } from "./devices/drivers/mqtt-json.js";
import { simulatedDriverFactory } from "./devices/drivers/simulated.js";
import { wbIrDriverFactory } from "./devices/drivers/wb-ir.js";
import { wbRelayDriverFactory } from "./devices/drivers/wb-relay.js";
import { type DeviceEvents, DeviceManager } from "./devices/manager.js";
import { WbDeviceAdapter } from "./devices/wb-adapter.js";
import { BridgeDevice, bridgeWill } from "./mqtt/bridge-device.js";
import { type EmbeddedBroker, startEmbeddedBroker } from "./mqtt/broker.js";
import { MqttGateway } from "./mqtt/gateway.js";
import { createStateService } from "./namespaces.js";
import { InstrumentedStateStore } from "./observability/instrumented-store.js";
import { BridgeMetrics } from "./observability/metrics.js";
import { type ScenarioEvents, ScenarioManager } from "./scenarios/manager.js";
import { ConfigError, errorMessage } from "./shared/errors.js";
import { EventBus } from "./shared/event-bus.js";
import type { Sleep } from "./shared/sleep.js";
import { redactUrl } from "./shared/urls.js";
import { createStateBackend, customBackend, loadStateEngines, NO_ENGINES, type StateBackend, type StateEngines } from "./state/backend.js";
import type { BackupManager } from "./state/backups.js";
import { plainCodec, type ValueCodec } from "./state/codec.js";
import { FernetCodec, parseKeyList } from "./state/fernet-codec.js";
import type { DbLock, Lease, LeaseStatus } from "./state/lock.js";
import { RecoveryPoints } from "./state/recovery.js";
import type { StateService } from "./state/service.js";
import { type StateStore, StoreCorruptError, type WriteFailure } from "./state/store.js";

export type BridgeEvents = DeviceEvents & ScenarioEvents;

/** `standby`: one of an active/standby pair, serving reads while the other drives the devices. */
export type Phase = "created" | "starting" | "standby" | "ready" | "stopping" | "stopped" | "failed";

export interface BridgeOverrides {
  /** Replaces the configured backend's store (unit tests of other layers use MemoryStateStore). */
  store?: StateStore;
  /** Extra driver factories, added to the built-in ones. */
  drivers?: readonly DriverFactory[];
  sleep?: Sleep;
  /** Credentials are read from here by the names the config gives; defaults to process.env. */
  env?: Env;
  /** How long start waits for the first broker connection before going on without it. */
  mqttConnectWaitMs?: number;
  /** Keep a history entry per change (default true); the bench measures the cost. */
  history?: boolean;
}

/** Storage that refuses writes: the last commit failed, and since when commits have been failing. */
export interface StorageFailure {
  failure: WriteFailure;
  since: string;
}

export interface StartupRestore {
  backup: string;
  backup_created_at: string;
  quarantined_to: string;
  at: string;
}

/** The codec for the configured key list: none means plain JSON at rest. */
export function codecFromKeys(keyList: string | null): ValueCodec {
  if (keyList === null) return plainCodec;
  try {
    return FernetCodec.fromKeys(parseKeyList(keyList));
  } catch (err) {
    // The message names the key's position, never its text.
    throw new ConfigError([`encryption key: ${errorMessage(err)}`]);
  }
}

export const builtinDrivers: readonly DriverFactory[] = [
  simulatedDriverFactory,
  wbIrDriverFactory,
  wbRelayDriverFactory,
  mqttJsonDriverFactory,
];

/**
 * Every long-lived part of the bridge and the one place that orders their start and
 * stop (DESIGN §1). Constructing it does no I/O.
 */
export class Bridge {
  readonly store: StateStore;
  /** Which engine keeps the state, with its lock and backups. */
  readonly backend: StateBackend;
  readonly state: StateService;
  readonly bus: EventBus<BridgeEvents>;
  readonly mqtt: MqttGateway;
  readonly devices: DeviceManager;
  readonly scenarios: ScenarioManager;
  readonly bridgeDevice: BridgeDevice;
  readonly wb: WbDeviceAdapter;
  readonly recovery: RecoveryPoints;
  readonly backups: BackupManager | null;
  readonly codec: ValueCodec;
  readonly metrics: BridgeMetrics;
  readonly startedAt = Date.now();
  private broker: EmbeddedBroker | null = null;
  private lock: DbLock | null = null;
  /** Set for one of an active/standby pair. */
  private pairLease: Lease | null = null;
  private restored: StartupRestore | null = null;
  private storeOpen = false;
  private writeFailure: StorageFailure | null = null;
  /** Read-only or I/O failures in a row, and when the first of them happened. */
  private ioFailures: { first: number; count: number } | null = null;
  private fatalRaised = false;
  /** Successful commits since start; scheduled backups skip when it has not moved. */
  private committed = 0;
  private readonly fatalListeners = new Set<(reason: string) => void>();
  private markDriving: () => void = () => undefined;
  /** Resolves once this bridge drives the devices (at start, or when a standby takes over). */
  readonly driving: Promise<void> = new Promise((resolve) => {
    this.markDriving = resolve;
  });
  private currentPhase: Phase = "created";
  private readonly log: Logger;

  /** The bridge with the state engines its configuration names loaded first (see `loadStateEngines`). */
  static async create(config: AppConfig, log: Logger, version: string, overrides: BridgeOverrides = {}): Promise<Bridge> {
    const engines = overrides.store ? NO_ENGINES : await loadStateEngines(config.system.persistence);
    return new Bridge(config, log, version, overrides, engines);
  }

  constructor(
    readonly config: AppConfig,
    log: Logger,
    readonly version: string,
    private readonly overrides: BridgeOverrides = {},
    engines: StateEngines = NO_ENGINES,
  ) {
    this.log = log.child({ module: "lifespan" });
    const registry = new DriverRegistry([...builtinDrivers, ...(overrides.drivers ?? [])]);
    const problems = registry.validate(config.devices, log);
    if (problems.length > 0) throw new ConfigError(problems);

    const { system } = config;
    const persistence = system.persistence;
    this.codec = codecFromKeys(config.secrets.encryptionKeys);
    // Process metrics only when served; the bridge's own counters are always kept (cheap).
    const metrics = new BridgeMetrics({ version, defaultMetrics: system.metrics.enabled });
    this.metrics = metrics;
    this.backend = overrides.store
      ? customBackend(overrides.store)
      : createStateBackend(
          {
            persistence,
            paths: config.paths,
            databaseUrl: config.secrets.databaseUrl,
            cacheRedisUrl: config.secrets.cacheRedisUrl,
            codec: this.codec,
            history: overrides.history ?? persistence.history.enabled,
            log,
            onCommit: (info) => {
              metrics.observeCommit(info);
              // Health shows failing storage from the first failed commit until one succeeds again.
              // A stale key lock refuses one write; storage itself is fine.
              if (info.error?.failure === "stale_lock") return;
              this.writeFailure = info.error
                ? { failure: info.error.failure, since: this.writeFailure?.since ?? new Date().toISOString() }
                : null;
              this.watchStorage(info.error?.failure ?? null);
              if (!info.error) this.committed += 1;
            },
            onBackup: (result) => metrics.observeBackup(result),
            onCache: (event) => metrics.observeCache(event),
            changeCount: () => this.committed,
            onLockLost: (reason) => this.raiseFatal(reason),
          },
          engines,
        );
    this.store = new InstrumentedStateStore(this.backend.store, metrics);
    this.backups = this.backend.backups;
    this.state = createStateService(this.store, log.child({ module: "state" }), persistence);
    this.recovery = new RecoveryPoints(this.state);
    this.bus = new EventBus<BridgeEvents>(log.child({ module: "events" }));
    const env = overrides.env ?? process.env;
    const mqttConfig = system.mqtt;
    this.mqtt = new MqttGateway({
      // The real URL is known once the embedded broker listens; start() fills it in.
      url: mqttConfig.url ?? "mqtt://127.0.0.1:1883",
      clientId: mqttConfig.client_id,
      username: mqttConfig.username_env ? env[mqttConfig.username_env] : undefined,
      password: mqttConfig.password_env ? env[mqttConfig.password_env] : undefined,
      keepaliveS: mqttConfig.keepalive_s,
      reconnectMinMs: mqttConfig.reconnect_min_ms,
      reconnectMaxMs: mqttConfig.reconnect_max_ms,
      will: bridgeWill,
      log: log.child({ module: "mqtt" }),
      onMessage: (direction) => metrics.observeMqttMessage(direction),
    });
    this.mqtt.onConnect(() => metrics.observeMqttConnect(this.mqtt.connectCount));
    this.mqtt.onDisconnect(() => metrics.observeMqttDisconnect());
    this.devices = new DeviceManager({
      devices: config.devices,
      drivers: registry,
      state: this.state,
      mqtt: this.mqtt,
      bus: this.bus,
      log,
      onAction: (info) => metrics.observeAction(info),
    });
    this.scenarios = new ScenarioManager({
      scenarios: config.scenarios,
      devices: this.devices,
      state: this.state,
      bus: this.bus,
      log,
      mqtt: this.mqtt,
      sleep: overrides.sleep,
    });
    this.wb = new WbDeviceAdapter({ devices: this.devices, mqtt: this.mqtt, bus: this.bus, log });
    this.bridgeDevice = new BridgeDevice(this.mqtt, version, log.child({ module: "bridge-device" }));
    metrics.listen(this.bus);
    if (this.backend.openLease) {
      metrics.registerLease(() => ({ active: this.pairLease?.status.role === "active", epoch: this.pairLease?.status.epoch ?? null }));
    }
    metrics.setSources({ ready: () => this.currentPhase === "ready", mqttConnected: () => this.mqtt.connected });
  }

  get phase(): Phase {
    return this.currentPhase;
  }

  get isStoreOpen(): boolean {
    return this.storeOpen;
  }

  /** Set while the last commit to the database failed (disk full, read-only, I/O error). */
  get storageFailure(): StorageFailure | null {
    return this.writeFailure;
  }

  /**
   * Called once when storage has failed for good (DESIGN §3: repeated I/O failure is
   * fatal). The entry point stops the process with exit 1 so the supervisor restarts it;
   * the bridge itself only reports.
   */
  onFatal(listener: (reason: string) => void): void {
    this.fatalListeners.add(listener);
  }

  private watchStorage(failure: WriteFailure | null): void {
    if (failure !== "io" && failure !== "read_only") {
      // A full disk clears by itself once space is freed; it is never fatal.
      this.ioFailures = null;
      return;
    }
    const now = Date.now();
    this.ioFailures = { first: this.ioFailures?.first ?? now, count: (this.ioFailures?.count ?? 0) + 1 };
    const limitMs = this.config.system.persistence.io_failure_exit_ms;
    if (this.fatalRaised || limitMs === 0 || this.ioFailures.count < 3 || now - this.ioFailures.first < limitMs) return;
    this.log.fatal(
      { failure, failed_commits: this.ioFailures.count, since: new Date(this.ioFailures.first).toISOString() },
      "storage keeps failing: stopping",
    );
    this.raiseFatal(
      `state store: every commit failed (${failure}) for ${now - this.ioFailures.first} ms, ${this.ioFailures.count} in a row`,
    );
  }

  private raiseFatal(reason: string): void {
    if (this.fatalRaised) return;
    this.fatalRaised = true;
    this.log.fatal({ reason }, "stopping");
    for (const listener of this.fatalListeners) listener(reason);
  }

  get embeddedBroker(): EmbeddedBroker | null {
    return this.broker;
  }

  /** Set when the database was found damaged at start and a backup was restored. */
  get restoredFromBackup(): StartupRestore | null {
    return this.restored;
  }

  /**
   * Opens the store. A damaged file has been moved aside by the store; the newest good
   * backup then takes its place, loudly, and the start goes on. Without one it stops.
   */
  private async openStore(): Promise<void> {
    this.lock = await this.backend.lock();
    try {
      await this.store.initialize();
    } catch (err) {
      if (!(err instanceof StoreCorruptError)) throw err;
      const backup = await this.backend.restoreAfterCorruption();
      if (!backup) throw err;
      this.restored = {
        backup: backup.file,
        backup_created_at: backup.created_at,
        quarantined_to: err.quarantinedTo,
        at: new Date().toISOString(),
      };
      await this.store.initialize();
    }
  }

  /** The lease of a pair and where this bridge stands in it; null for a bridge without a pair. */
  get lease(): LeaseStatus | null {
    return this.pairLease?.status ?? null;
  }

  /**
   * lock + store (backup restored if damaged) -> embedded broker -> MQTT -> devices (restore) -> WB devices -> scenarios (restore) -> ready.
   * One of a pair opens the store first, then the lease; while another bridge holds it,
   * start ends in `standby` and the rest runs when the lease comes (takeOver).
   */
  async start(): Promise<void> {
    this.currentPhase = "starting";
    try {
      if (this.backend.openLease) {
        await this.store.initialize();
        this.storeOpen = true;
        this.log.info({ db: this.backend.description }, "state store open");
        const lease = await this.backend.openLease();
        this.pairLease = lease;
        this.lock = lease;
        if (lease.status.role === "standby") {
          await this.standBy(lease);
          return;
        }
      } else {
        await this.openStore();
        this.storeOpen = true;
        this.log.info({ db: this.backend.description }, "state store open");
      }
      await this.drive();
    } catch (err) {
      this.currentPhase = "failed";
      this.log.error({ err: errorMessage(err) }, "start failed");
      await this.stop();
      this.currentPhase = "failed";
      throw err;
    }
  }

  /** Follows the active bridge's commits (reads stay current; actions are refused) until the lease comes. */
  private async standBy(lease: Lease): Promise<void> {
    const refusal = `this bridge is the standby of a pair; ${lease.status.activeHolder ?? "the other bridge"} is active and runs actions`;
    this.state.watchOthers();
    await this.devices.follow(refusal);
    await this.scenarios.follow(refusal);
    this.currentPhase = "standby";
    this.log.info({ active: lease.status.activeHolder }, "bridge standing by");
    void lease.whenActive().then(() => this.takeOver());
  }

  private async takeOver(): Promise<void> {
    if (this.currentPhase !== "standby") return;
    this.currentPhase = "starting";
    this.log.info({ epoch: this.pairLease?.status.epoch }, "taking over from the active bridge");
    try {
      await this.drive();
    } catch (err) {
      this.currentPhase = "failed";
      this.log.error({ err: errorMessage(err) }, "take-over failed");
      this.raiseFatal(`taking over as the active bridge failed: ${errorMessage(err)}`);
    }
  }

  /** Everything after the store: the part of a start that only the active bridge of a pair runs. */
  private async drive(): Promise<void> {
    this.state.start();
    this.backups?.start();
    const embedded = this.config.system.mqtt.embedded;
    if (embedded.enabled) {
      this.broker = await startEmbeddedBroker({ host: embedded.host, port: embedded.port, log: this.log });
      const broker = this.broker;
      // The bridge's own client reaches its embedded broker in-process, not over loopback.
      this.mqtt.setUrl(broker.url, () => broker.connectInProcess());
    }
    this.log.info({ url: redactUrl(this.mqtt.url) }, "connecting to MQTT broker");
    await this.mqtt.start(this.overrides.mqttConnectWaitMs);
    await this.bridgeDevice.start();

    await this.devices.initialize();
    // Restore is complete: only now is anything about devices published.
    await this.wb.start();
    await this.scenarios.initialize();
    await this.bridgeDevice.setReady(true);
    this.currentPhase = "ready";
    this.markDriving();
    this.log.info("bridge ready");
  }

  /**
   * Stop accepting -> scenarios and devices finish in-flight work -> WB offline ->
   * MQTT disconnect -> store flushed and closed -> embedded broker closed.
   * Each part's failure is logged and the rest still stop.
   */
  async stop(): Promise<void> {
    if (this.currentPhase === "stopped" || this.currentPhase === "stopping") return;
    this.currentPhase = "stopping";
    const step = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        this.log.error({ err: errorMessage(err), part: name }, "shutdown step failed");
      }
    };
    await step("scenarios", () => this.scenarios.shutdown());
    await step("devices", () => this.devices.shutdown());
    // A standby never published: its "offline" would be the active bridge's topics.
    if (this.pairLease?.status.role !== "standby") {
      await step("wb-devices", () => this.wb.stop());
      await step("bridge-device", () => this.bridgeDevice.stop());
    }
    await step("mqtt", () => this.mqtt.stop());
    await step("backups", async () => this.backups?.stop());
    this.state.stop();
    if (this.storeOpen) {
      await step("store", () => this.store.close());
      this.storeOpen = false;
    }
    if (this.lock) {
      const lock = this.lock;
      this.lock = null;
      await step("lock", () => lock.release());
    }
    this.pairLease = null;
    if (this.broker) {
      const broker = this.broker;
      this.broker = null;
      await step("broker", () => broker.close());
    }
    this.currentPhase = "stopped";
    this.log.info("bridge stopped");
  }
}
