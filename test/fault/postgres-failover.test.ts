import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { type BridgeChild, setVolume, startBridge } from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";

const ready = await requirePostgres();

const DEVICES = ["tv", "amp", "projector", "light"];
const READY_TOPIC = "/devices/wb_bridge/controls/ready";

interface HealthBody {
  phase: string;
  lease: { role: string; epoch: number | null; active_holder: string | null } | null;
}

async function health(url: string): Promise<HealthBody> {
  return (await (await fetch(`${url}/health`)).json()) as HealthBody;
}

/**
 * A pair of real bridge processes on one PostgreSQL schema and one broker: the active one
 * is killed with SIGKILL while clients keep sending actions; the standby must take over
 * within 5 s with every acknowledged action, and drive the devices from then on.
 */
describe.runIf(ready)("active/standby failover after kill -9 (real processes, PostgreSQL, MQTT)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let schema: string;
  let env: Record<string, string>;
  const bridges: BridgeChild[] = [];

  beforeAll(async () => {
    dir = await tempDir("wb-bridge-pair-");
    broker = await startTestBroker();
    schema = uniqueSchema("failover");
    const configDir = await writeConfigDir(dir.path, {
      system: {
        persistence: { backend: "postgres", postgres: { schema, pair: true } },
        mqtt: { reconnect_min_ms: 100 },
        rate_limit: { max: 0 },
      },
      devices: DEVICES.map((id) => simulatedDevice(id)),
    });
    env = { CONFIG_DIR: configDir, MQTT_URL: broker.url, STATE_DATABASE_URL: TEST_POSTGRES_URL, STATE_PATH: `${dir.path}/unused.db` };
  });

  afterAll(async () => {
    for (const b of bridges) if (b.proc.exitCode === null && b.proc.signalCode === null) b.proc.kill("SIGKILL");
    await Promise.all(bridges.map((b) => b.exited));
    await broker?.close();
    if (schema) await dropSchema(schema);
    await dir?.remove();
  });

  async function start(): Promise<BridgeChild> {
    const bridge = await startBridge(env);
    bridges.push(bridge);
    return bridge;
  }

  it("the standby takes over within 5 s of the active one's kill -9, under load, with every acknowledged action", async () => {
    const active = await start();
    expect((await health(active.url)).lease).toMatchObject({ role: "active", epoch: 1 });
    const standby = await start();
    expect(await health(standby.url)).toMatchObject({ phase: "standby", lease: { role: "standby" } });

    const watcher = await TestMqttClient.connect(broker.url);
    await watcher.subscribe(READY_TOPIC);
    // The active bridge's "1" arrives retained; the standby's, once it takes over, live.
    await watcher.waitFor(READY_TOPIC, (m) => m.retain && m.payload === "1");

    const acked = new Map<string, number>();
    const inFlight = new Map<string, number>();
    let total = 0;
    let killedAt = 0;
    const killed = new Promise<void>((resolve) => {
      const load = async (device: string, offset: number) => {
        for (let n = 0; ; n++) {
          const level = ((n + offset) % 100) + 1;
          inFlight.set(device, level);
          try {
            await setVolume(active.url, device, level);
          } catch {
            return; // the bridge is gone: this action was never acknowledged
          }
          acked.set(device, level);
          if (++total === 400 && killedAt === 0) {
            killedAt = performance.now();
            active.proc.kill("SIGKILL");
            resolve();
          }
        }
      };
      for (const [i, device] of DEVICES.entries()) void load(device, i * 25);
    });
    await killed;
    const takenOver = await watcher.waitFor(READY_TOPIC, (m) => !m.retain && m.payload === "1", 5000);
    const takeoverMs = performance.now() - killedAt;
    expect(takenOver.payload).toBe("1");
    console.log(`standby took over ${takeoverMs.toFixed(0)} ms after kill -9 (${total} actions acknowledged before)`);
    expect(takeoverMs).toBeLessThan(5000);
    await active.exited;

    expect((await health(standby.url)).lease).toMatchObject({ role: "active", epoch: 2 });
    for (const device of DEVICES) {
      const state = (await (await fetch(`${standby.url}/devices/${device}/state`)).json()) as { state: { volume: number } };
      // The last acknowledged level, or the one that was in flight at the kill (committed, not acknowledged).
      expect([acked.get(device), inFlight.get(device)], device).toContain(state.state.volume);
    }
    // It drives the devices now: actions run and reach MQTT.
    await watcher.subscribe("/devices/tv/controls/volume");
    await setVolume(standby.url, "tv", 7);
    await watcher.waitFor("/devices/tv/controls/volume", (m) => m.payload === "7");
    await watcher.client.endAsync();
  }, 90_000);

  it("1,000 concurrent partial updates from both processes to the same keys: none is lost", async () => {
    // The previous test left its standby active; a new process stands by beside it.
    const live = bridges.filter((b) => b.proc.exitCode === null && b.proc.signalCode === null);
    const first = live[0] ?? (await start());
    const second = await start();
    expect((await health(second.url)).lease).toMatchObject({ role: "standby" });
    const urls = [first.url, second.url];
    const keys = ["test:pair-a", "test:pair-b"];
    const N = 1000;
    let next = 0;
    const failures: string[] = [];
    const worker = async () => {
      for (let i = next++; i < N; i = next++) {
        const res = await fetch(`${urls[i % 2]}/state/${keys[Math.floor(i / 2) % 2]}`, {
          method: "PATCH",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ fields: { [`f${i}`]: i } }),
        });
        if (res.status !== 200) failures.push(`${i}: ${res.status} ${await res.text()}`);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    expect(failures).toEqual([]);
    const fields: Record<string, number> = {};
    for (const key of keys) {
      const body = (await (await fetch(`${second.url}/state/${key}`)).json()) as { value: { fields: Record<string, number> } };
      Object.assign(fields, body.value.fields);
    }
    expect(Object.keys(fields)).toHaveLength(N);
    for (let i = 0; i < N; i++) expect(fields[`f${i}`]).toBe(i);
  }, 90_000);
});
