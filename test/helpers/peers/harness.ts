import { join } from "node:path";
import type { AppConfig } from "../../../app/config/loader.js";
import type { EmbeddedBroker } from "../../../app/mqtt/broker.js";
import { startEmbeddedBroker } from "../../../app/mqtt/broker.js";
import { createLogger } from "../../../app/observability/logger.js";
import type { JsonObject } from "../../../app/shared/json.js";
import { type RunningApp, startApp } from "../app.js";
import { type ConfigFiles, tempDir, testConfig } from "../fixtures.js";
import { startTestBroker, TestMqttClient } from "../mqtt.js";

/**
 * One test's world for driver tests: a temp directory, an aedes broker on a random port,
 * the bridge (started, stopped, restarted on the same database) and the peers around it.
 * Everything started through it is closed by close(), newest first.
 */
export class DriverHarness {
  private readonly closers: Array<() => Promise<void>> = [];
  private current: RunningApp | null = null;
  private config: AppConfig | null = null;

  private constructor(
    readonly dir: { path: string; remove: () => Promise<void> },
    public broker: EmbeddedBroker,
  ) {}

  static async create(): Promise<DriverHarness> {
    return new DriverHarness(await tempDir(), await startTestBroker());
  }

  get dbPath(): string {
    return join(this.dir.path, "state.db");
  }

  get running(): RunningApp {
    if (!this.current) throw new Error("the bridge is not running");
    return this.current;
  }

  /** Writes the config (once) and starts the bridge. */
  async start(files?: ConfigFiles): Promise<RunningApp> {
    if (files || !this.config) this.config = await testConfig(this.dir.path, this.broker.url, files);
    this.current = await startApp(this.config);
    return this.current;
  }

  async stop(): Promise<void> {
    const app = this.current;
    this.current = null;
    await app?.app.close();
  }

  async restart(): Promise<RunningApp> {
    await this.stop();
    return this.start();
  }

  /** Stops the broker (every client is cut off) and returns a function that starts a fresh one on the same port. */
  async stopBroker(): Promise<() => Promise<void>> {
    const port = this.broker.port;
    await this.broker.close();
    return async () => {
      this.broker = await startEmbeddedBroker({ host: "127.0.0.1", port, log: createLogger("silent") });
    };
  }

  /** Registers something to close at the end (a peer, a client). */
  own<T extends { close(): Promise<void> }>(thing: T): T {
    this.closers.push(() => thing.close());
    return thing;
  }

  async client(): Promise<TestMqttClient> {
    return this.own(await TestMqttClient.connect(this.broker.url));
  }

  /** The device's state once it satisfies `pred`: checked now, then on every state event (no polling). */
  waitForState(id: string, pred: (state: JsonObject) => boolean, timeoutMs = 5000): Promise<JsonObject> {
    const { app } = this.running;
    const now = app.bridge.devices.getState(id).state;
    if (pred(now)) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(
          new Error(
            `${id}: state did not reach the expected value within ${timeoutMs} ms: ${JSON.stringify(app.bridge.devices.getState(id).state)}`,
          ),
        );
      }, timeoutMs);
      const off = app.bridge.bus.on("device.state", (e) => {
        if (e.deviceId !== id || !pred(e.state)) return;
        clearTimeout(timer);
        off();
        resolve(e.state);
      });
    });
  }

  /** Resolves when the DeviceManager's reachability of the device becomes `reachable`. */
  waitForReachable(id: string, reachable: boolean, timeoutMs = 5000): Promise<void> {
    const { app } = this.running;
    if (app.bridge.devices.getState(id).reachable === reachable) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${id}: reachable did not become ${reachable} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = app.bridge.bus.on("device.reachability", (e) => {
        if (e.deviceId !== id || e.reachable !== reachable) return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const close of this.closers.splice(0).reverse()) await close().catch(() => undefined);
    await this.stop();
    await this.broker.close();
    await this.dir.remove();
  }
}
