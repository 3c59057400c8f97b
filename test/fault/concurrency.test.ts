/**
 * Concurrency faults: HTTP and MQTT clients acting on the same devices and keys at once,
 * interleaved with scenario changes and state patches, over real sockets.
 *
 * The checks are the ones a lost or reordered update would break:
 * - read-modify-write (`volume_up`) from many clients: every acknowledged increment is in
 *   the final value, every commit adds exactly one step, and each ack saw its own value;
 * - merge patches of distinct fields: every response contains all earlier patches;
 * - If-Match writers holding one ETag: exactly one wins per version;
 * - a mixed run: per device field, the final value is the value of an operation that was
 *   acknowledged last (allowing, as linearizability does, any of the operations still in
 *   flight when the last one started), commits match acknowledgements one to one, and
 *   unique values are committed in an order that respects which ack came first.
 * Every final value is checked over HTTP, in SQLite (own connection), and as the last
 * value the bridge published on MQTT.
 *
 * The operation mix is seeded: `FUZZ_SEED=<n> npx vitest run test/fault/concurrency.test.ts`.
 */

import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import type { JsonObject } from "../../app/shared/json.js";
import { startApp } from "../helpers/app.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { mulberry32, type Rng, seedFromEnv } from "../helpers/seeded.js";
import { readStoredValue } from "../helpers/sqlite.js";

// ---------------------------------------------------------------- seeded randomness

const SEED = seedFromEnv("FUZZ_SEED");
const REPRODUCE = `FUZZ_SEED=${SEED} npx vitest run test/fault/concurrency.test.ts`;

const int = (r: Rng, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
function pick<T>(r: Rng, items: readonly T[]): T {
  return items[Math.floor(r() * items.length)] as T;
}
function shuffle<T>(r: Rng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = int(r, 0, i);
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

// ---------------------------------------------------------------- the bridge under test

const DEVICES = ["tv", "amp"] as const;
type DeviceId = (typeof DEVICES)[number];
const INPUTS = ["hdmi1", "hdmi2", "tv"];
type Field = "power" | "volume" | "input";
type Value = boolean | number | string;

interface Step {
  device: DeviceId;
  action: string;
  params?: Record<string, Value>;
}

/** Scenario volumes stay below 10: the values 10..100 are each written by one operation only. */
const SCENARIOS: Record<string, { devices: DeviceId[]; startup: Step[]; shutdown: Step[] }> = {
  movie: {
    devices: ["tv", "amp"],
    startup: [
      { device: "tv", action: "power_on" },
      { device: "tv", action: "input", params: { input: "hdmi1" } },
      { device: "amp", action: "power_on" },
      { device: "amp", action: "volume", params: { level: 5 } },
    ],
    shutdown: [
      { device: "tv", action: "power_off" },
      { device: "amp", action: "power_off" },
    ],
  },
  music: {
    devices: ["amp"],
    startup: [
      { device: "amp", action: "power_on" },
      { device: "amp", action: "input", params: { input: "hdmi2" } },
      { device: "amp", action: "volume", params: { level: 7 } },
    ],
    shutdown: [{ device: "amp", action: "power_off" }],
  },
  news: {
    devices: ["tv"],
    startup: [
      { device: "tv", action: "power_on" },
      { device: "tv", action: "input", params: { input: "tv" } },
      { device: "tv", action: "volume", params: { level: 3 } },
    ],
    shutdown: [{ device: "tv", action: "power_off" }],
  },
};

/** What an action writes (the simulated driver's semantics). */
function effect(action: string, params: Record<string, Value> = {}): Partial<Record<Field, Value>> {
  switch (action) {
    case "power":
      return { power: params.on as boolean };
    case "power_on":
      return { power: true };
    case "power_off":
      return { power: false };
    case "volume":
      return { volume: params.level as number };
    case "input":
      return { input: params.input as string };
    default:
      throw new Error(`no effect known for ${action}`);
  }
}

/** A field's value as the bridge publishes it on the control's WB topic. */
function wbValue(field: Field, value: Value): string {
  if (field === "power") return value === true ? "1" : "0";
  return String(value);
}

// ---------------------------------------------------------------- observation

/**
 * Every live message the observer gets, indexed, with waits on conditions instead of
 * sleeps. Retained replays are left out: the broker sends them for a new subscription
 * whenever it gets to them, possibly after newer live values, so they say nothing about
 * the order in which the bridge published.
 */
class MqttTap {
  private readonly topics = new Map<string, string[]>();
  /** What the subscription's retained replay said, for topics with no live message since. */
  private readonly retained = new Map<string, string>();
  private readonly firstAt = new Map<string, number[]>();
  private count = 0;
  private readonly waiters = new Set<{ check: () => boolean; resolve: () => void }>();

  constructor(client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      const text = payload.toString("utf8");
      if (packet.retain) {
        this.retained.set(topic, text);
        return;
      }
      const position = this.count++;
      let list = this.topics.get(topic);
      if (!list) {
        list = [];
        this.topics.set(topic, list);
      }
      list.push(text);
      const key = `${topic}\u0000${text}`;
      const at = this.firstAt.get(key) ?? [];
      at.push(position);
      this.firstAt.set(key, at);
      for (const w of this.waiters) {
        if (w.check()) {
          this.waiters.delete(w);
          w.resolve();
        }
      }
    });
  }

  mark(): number {
    return this.count;
  }

  /** Whether `payload` arrived on `topic` at or after `mark`. */
  seen(topic: string, payload: string, mark: number): boolean {
    return (this.firstAt.get(`${topic}\u0000${payload}`) ?? []).some((p) => p >= mark);
  }

  payloads(topic: string): readonly string[] {
    return this.topics.get(topic) ?? [];
  }

  /** The bridge's latest value on a topic: its last live publish, else the retained one. */
  last(topic: string): string | undefined {
    return this.topics.get(topic)?.at(-1) ?? this.retained.get(topic);
  }

  until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`MQTT: ${what} did not happen within ${timeoutMs} ms (${REPRODUCE})`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }
}

interface HistoryItem {
  id: number;
  key: string;
  old: JsonObject | null;
  new: JsonObject | null;
  source: string;
}

/** JSON with sorted keys: equal values, equal text. */
function canon(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canon).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

async function runPool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

// ---------------------------------------------------------------- the tests

describe(`concurrency: HTTP, MQTT, scenarios and state patches on the same devices (seed ${SEED})`, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance;
  let base = "";
  let dbPath = "";
  let observer: TestMqttClient;
  let tap: MqttTap;
  const commanders: TestMqttClient[] = [];

  async function api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, etag: res.headers.get("etag"), json: (text === "" ? null : JSON.parse(text)) as Record<string, unknown> };
  }

  async function action(device: DeviceId, name: string, params?: Record<string, Value>) {
    return api("POST", `/devices/${device}/action`, { action: name, ...(params ? { params } : {}) });
  }

  async function deviceState(device: DeviceId): Promise<JsonObject> {
    const res = await api("GET", `/devices/${device}/state`);
    expect(res.status).toBe(200);
    return res.json.state as JsonObject;
  }

  async function lastHistoryId(): Promise<number> {
    const res = await api("GET", "/history?limit=1");
    expect(res.status).toBe(200);
    return ((res.json.items as HistoryItem[])[0]?.id ?? 0) as number;
  }

  /** Every change of `key` after history entry `afterId`, oldest first. */
  async function historySince(key: string, afterId: number): Promise<HistoryItem[]> {
    const items: HistoryItem[] = [];
    let cursor: string | null = null;
    do {
      const res = await api("GET", `/state/${key}/history?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
      expect(res.status).toBe(200);
      const page = res.json.items as HistoryItem[];
      items.push(...page.filter((h) => h.id > afterId));
      cursor = page.some((h) => h.id <= afterId) ? null : (res.json.next_cursor as string | null);
    } while (cursor !== null);
    return items.reverse();
  }

  /** The state as persisted, read by a second SQLite connection. */
  async function storedState(device: DeviceId): Promise<JsonObject> {
    const record = (await readStoredValue(dbPath, `device:${device}`)) as { state: JsonObject };
    return record.state;
  }

  /**
   * Waits until the bridge's earlier publishes have reached the observer: a command to the
   * read-only `muted` control is refused with a "w" flag, published on the same connection
   * after everything before it.
   */
  async function flushBridgePublishes(device: DeviceId): Promise<void> {
    const mark = tap.mark();
    await (commanders[0] as TestMqttClient).publish(`/devices/${device}/controls/muted/on`, "1");
    await tap.until(() => tap.seen(`/devices/${device}/controls/muted/meta/error`, "w", mark), `the flush flag of ${device}`);
  }

  /** HTTP (GET), SQLite and the last MQTT-published WB values agree on a device's state. */
  async function expectConsistent(device: DeviceId): Promise<JsonObject> {
    await flushBridgePublishes(device);
    const http = await deviceState(device);
    expect(await storedState(device), `${device}: SQLite = HTTP (${REPRODUCE})`).toEqual(http);
    for (const field of ["power", "volume", "input"] as const) {
      expect(tap.last(`/devices/${device}/controls/${field}`), `${device}.${field}: last WB value = HTTP (${REPRODUCE})`).toBe(
        wbValue(field, http[field] as Value),
      );
    }
    return http;
  }

  beforeAll(async () => {
    console.log(`concurrency seed ${SEED}; reproduce with: ${REPRODUCE}`);
    dir = await tempDir("wb-concurrency-");
    broker = await startTestBroker();
    dbPath = join(dir.path, "state.db");
    const device = (id: string) => simulatedDevice(id, { config: { inputs: INPUTS, volume_step: 1 } });
    const config = await testConfig(dir.path, broker.url, {
      system: {
        mqtt: { client_id: `bridge-${SEED}`, reconnect_min_ms: 100 },
        persistence: { db_path: dbPath, history: { max_per_key: 100_000 }, backups: { interval_s: 0 } },
        logging: { level: "silent" },
        rate_limit: { max: 0 },
      },
      devices: DEVICES.map(device),
      scenarios: Object.entries(SCENARIOS).map(([id, s]) => ({ scenario_id: id, name: id, ...s })),
    });
    app = (await startApp(config)).app;
    await app.listen({ host: "127.0.0.1", port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    observer = await TestMqttClient.connect(broker.url);
    tap = new MqttTap(observer.client);
    await observer.subscribe("/devices/#");
    for (let i = 0; i < 3; i++) commanders.push(await TestMqttClient.connect(broker.url));
  }, 30_000);

  afterAll(async () => {
    for (const c of commanders) await c.close();
    await observer?.close();
    await app?.close();
    await broker?.close();
    await dir?.remove();
  }, 30_000);

  it("volume_up from 8 HTTP clients and 3 MQTT clients at once: no increment lost, each ack sees its own", async () => {
    const HTTP_CLIENTS = 8;
    const PER_CLIENT = 6;
    const MQTT_PRESSES = [14, 14, 14];
    const total = HTTP_CLIENTS * PER_CLIENT + MQTT_PRESSES.reduce((a, b) => a + b, 0);
    expect((await action("tv", "volume", { level: 0 })).status).toBe(200);
    const startId = await lastHistoryId();
    const presses = () => tap.payloads("/devices/tv/controls/volume_up").length;
    const pressesBefore = presses();

    const acked: number[] = [];
    const http = Array.from({ length: HTTP_CLIENTS }, async () => {
      for (let n = 0; n < PER_CLIENT; n++) {
        const res = await action("tv", "volume_up");
        expect(res.status, JSON.stringify(res.json)).toBe(200);
        acked.push((res.json.state as { volume: number }).volume);
      }
    });
    // Pipelined publishes from three connections; each press is answered with a non-retained "1".
    const mqtt = MQTT_PRESSES.map((count, c) =>
      Promise.all(Array.from({ length: count }, () => (commanders[c] as TestMqttClient).publish("/devices/tv/controls/volume_up/on", "1"))),
    );
    await Promise.all([...http, ...mqtt]);
    await tap.until(() => presses() - pressesBefore >= total, `${total} volume_up answers`);

    // The final value holds every increment (no cap reached: total < 100).
    expect(total).toBeLessThan(100);
    const final = await expectConsistent("tv");
    expect(final.volume, REPRODUCE).toBe(total);
    // Each HTTP ack saw the value its own increment produced: all distinct, all in range.
    expect(new Set(acked).size, `acked volumes repeat: ${acked.sort((a, b) => a - b).join(",")}`).toBe(acked.length);
    expect(acked.every((v) => v >= 1 && v <= total)).toBe(true);
    // Commit by commit: exactly one per command, each one step above the one before.
    const history = await historySince("device:tv", startId);
    expect(history.length, REPRODUCE).toBe(total);
    expect(history.filter((h) => h.source === "http").length).toBe(HTTP_CLIENTS * PER_CLIENT);
    expect(history.filter((h) => h.source === "mqtt").length).toBe(total - HTTP_CLIENTS * PER_CLIENT);
    const steps = history.map((h) => [(h.old?.state as JsonObject | undefined)?.volume, (h.new?.state as JsonObject | undefined)?.volume]);
    expect(steps, REPRODUCE).toEqual(Array.from({ length: total }, (_, i) => [i, i + 1]));
    // And the bridge published every committed value, in commit order.
    const published = tap.payloads("/devices/tv/controls/volume").slice(-total);
    expect(published).toEqual(Array.from({ length: total }, (_, i) => String(i + 1)));
  }, 60_000);

  it("64 concurrent PATCHes of distinct fields of one key: each response contains every earlier patch", async () => {
    const N = 64;
    const key = "conc:merge";
    expect((await api("PUT", `/state/${key}`, { nested: {} })).status).toBe(201);
    const startId = await lastHistoryId();
    const responses = await Promise.all(
      Array.from({ length: N }, (_, i) => api("PATCH", `/state/${key}`, { [`f${i}`]: i, nested: { [`f${i}`]: i } })),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(N).fill(200));
    // Serial order = order of field counts; each value extends the one before (no patch lost or reordered).
    const values = responses.map((r) => r.json.value as Record<string, unknown>);
    const fields = (v: Record<string, unknown>) =>
      Object.keys(v)
        .filter((k) => k !== "nested")
        .sort();
    const bySize = [...values].sort((a, b) => fields(a).length - fields(b).length);
    expect(bySize.map((v) => fields(v).length)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    for (let i = 1; i < N; i++) {
      const before = fields(bySize[i - 1] as Record<string, unknown>);
      expect(fields(bySize[i] as Record<string, unknown>)).toEqual(expect.arrayContaining(before));
      expect(Object.keys((bySize[i] as { nested: object }).nested).sort()).toEqual(fields(bySize[i] as Record<string, unknown>));
    }
    expect(new Set(responses.map((r) => r.etag)).size).toBe(N);

    const expected = {
      ...Object.fromEntries(Array.from({ length: N }, (_, i) => [`f${i}`, i])),
      nested: Object.fromEntries(Array.from({ length: N }, (_, i) => [`f${i}`, i])),
    };
    const final = await api("GET", `/state/${key}`);
    expect(final.json.value).toEqual(expected);
    expect(await readStoredValue(dbPath, key)).toEqual(expected);
    expect((await historySince(key, startId)).length).toBe(N);
  }, 60_000);

  it("8 If-Match writers per round holding the same ETag: exactly one wins each of 20 rounds", async () => {
    const key = "conc:cas";
    const created = await api("PUT", `/state/${key}`, { round: 0, writer: -1 });
    expect(created.status).toBe(201);
    const startId = await lastHistoryId();
    let etag = created.etag as string;
    let expected: Record<string, number> = { round: 0, writer: -1 };
    for (let round = 1; round <= 20; round++) {
      const method = round % 2 === 0 ? "PATCH" : "PUT";
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, writer) =>
          api(method, `/state/${key}`, { round, writer }, { "if-match": etag }).then((r) => ({ writer, ...r })),
        ),
      );
      const winners = results.filter((r) => r.status === 200);
      expect(winners.length, `round ${round} (${method}): ${results.map((r) => r.status).join(",")}`).toBe(1);
      for (const loser of results.filter((r) => r.status !== 200)) {
        expect(loser.status).toBe(412);
        expect((loser.json.error as { code: string }).code).toBe("etag_mismatch");
      }
      const winner = winners[0] as (typeof winners)[number];
      expected = { round, writer: winner.writer };
      expect(winner.json.value).toEqual(expected);
      const now = await api("GET", `/state/${key}`);
      expect(now.json.value).toEqual(expected);
      expect(now.etag).toBe(winner.etag);
      etag = winner.etag as string;
    }
    // One commit per round: a losing writer never got through.
    expect((await historySince(key, startId)).length).toBe(20);
    expect(await readStoredValue(dbPath, key)).toEqual(expected);
  }, 60_000);

  it("scenario start/switch/shutdown, HTTP and MQTT actions and state patches interleaved: the last acknowledged write of each field wins", async () => {
    const r = mulberry32(SEED);
    const OPS = 200;
    const WORKERS = 8;

    // Known start: no scenario, both devices off at volume 0.
    await api("POST", "/scenario/shutdown");
    for (const device of DEVICES) {
      for (const [name, params] of [
        ["power_off", undefined],
        ["volume", { level: 0 }],
        ["input", { input: "hdmi1" }],
      ] as const) {
        expect((await action(device, name, params)).status).toBe(200);
      }
    }
    const initial = Object.fromEntries(await Promise.all(DEVICES.map(async (d) => [d, await deviceState(d)] as const))) as Record<
      DeviceId,
      JsonObject
    >;
    const startId = await lastHistoryId();

    // Volumes 10..100 are each written once, by one HTTP or MQTT operation: their commits can be told apart.
    const levels: Record<DeviceId, number[]> = {
      tv: shuffle(
        r,
        Array.from({ length: 91 }, (_, i) => i + 10),
      ),
      amp: shuffle(
        r,
        Array.from({ length: 91 }, (_, i) => i + 10),
      ),
    };

    type Op =
      | { kind: "http"; device: DeviceId; action: string; params?: Record<string, Value> }
      | { kind: "mqtt"; device: DeviceId; level: number; client: number }
      | { kind: "scenario"; route: "switch" | "start" | "shutdown"; id?: string; graceful?: boolean }
      | { kind: "patch"; field: string };
    const ops: Op[] = Array.from({ length: OPS }, (_, i): Op => {
      const k = r();
      const device = pick(r, DEVICES);
      if (k < 0.3) {
        const name = pick(r, ["power", "power_on", "power_off", "input", "volume", "volume"]);
        const params: Record<string, Value> | undefined =
          name === "power"
            ? { on: r() < 0.5 }
            : name === "input"
              ? { input: pick(r, INPUTS) }
              : name === "volume"
                ? { level: levels[device].pop() as number }
                : undefined;
        return { kind: "http", device, action: name, params };
      }
      if (k < 0.5) return { kind: "mqtt", device, level: levels[device].pop() as number, client: int(r, 0, 2) };
      if (k < 0.72) {
        const route = pick(r, ["switch", "switch", "switch", "start", "shutdown"] as const);
        return { kind: "scenario", route, id: pick(r, Object.keys(SCENARIOS)), graceful: r() < 0.7 };
      }
      return { kind: "patch", field: `f${i}` };
    });

    // A monotonic clock over sends and acks: an op [start, end] precedes another iff its end < the other's start.
    let clock = 0;
    interface Write {
      start: number;
      end: number;
      value: Value;
      op: number;
      unique: boolean;
    }
    const writes: Record<DeviceId, Record<Field, Write[]>> = {
      tv: { power: [], volume: [], input: [] },
      amp: { power: [], volume: [], input: [] },
    };
    const commitsExpected: Record<DeviceId, Record<string, number>> = { tv: {}, amp: {} };
    const countCommit = (device: DeviceId, source: string) => {
      commitsExpected[device][source] = (commitsExpected[device][source] ?? 0) + 1;
    };
    const scenarioWrites: Array<{ start: number; end: number; value: string | null }> = [];
    /** Every acknowledged HTTP action and MQTT command, with the interval from send to ack. */
    const acks: Array<
      | { op: number; device: DeviceId; start: number; end: number; via: "http"; state: JsonObject; updatedAt: string }
      | { op: number; device: DeviceId; start: number; end: number; via: "mqtt"; level: number }
    > = [];
    const patched: string[] = [];

    await runPool(OPS, WORKERS, async (i) => {
      const op = ops[i] as Op;
      const start = ++clock;
      if (op.kind === "http") {
        const res = await action(op.device, op.action, op.params);
        const end = ++clock;
        expect(res.status, JSON.stringify(res.json)).toBe(200);
        countCommit(op.device, "http");
        for (const [field, value] of Object.entries(effect(op.action, op.params))) {
          writes[op.device][field as Field].push({ start, end, value, op: i, unique: op.action === "volume" });
        }
        acks.push({
          op: i,
          device: op.device,
          start,
          end,
          via: "http",
          state: res.json.state as JsonObject,
          updatedAt: res.json.updated_at as string,
        });
      } else if (op.kind === "mqtt") {
        const topic = `/devices/${op.device}/controls/volume`;
        const mark = tap.mark();
        await (commanders[op.client] as TestMqttClient).publish(`${topic}/on`, String(op.level));
        // The ack of an MQTT command: its value published back on the control (unique, so it is this one's).
        await tap.until(() => tap.seen(topic, String(op.level), mark), `the ack of ${op.device} volume ${op.level}`);
        const end = ++clock;
        countCommit(op.device, "mqtt");
        writes[op.device].volume.push({ start, end, value: op.level, op: i, unique: true });
        acks.push({ op: i, device: op.device, start, end, via: "mqtt", level: op.level });
      } else if (op.kind === "scenario") {
        const body = op.route === "shutdown" ? undefined : op.route === "start" ? { id: op.id } : { id: op.id, graceful: op.graceful };
        const res = await api("POST", `/scenario/${op.route}`, body);
        const end = ++clock;
        // Refusals are expected here (start while one is active, shutdown while none is) and change nothing.
        if (res.status === 409 || res.status === 404) return;
        expect(res.status, JSON.stringify(res.json)).toBe(200);
        const result = res.json as unknown as ChangeResult;
        expect(result.failed_steps).toEqual([]);
        if (result.noop) return;
        scenarioWrites.push({ start, end, value: result.to });
        // Within one change, a later step on a field overrides an earlier one; each step is one commit.
        const last = new Map<string, Value>();
        for (const step of executedSteps(result)) {
          countCommit(step.device, "scenario");
          for (const [field, value] of Object.entries(effect(step.action, step.params))) last.set(`${step.device}.${field}`, value);
        }
        for (const [at, value] of last) {
          const [device, field] = at.split(".") as [DeviceId, Field];
          writes[device][field].push({ start, end, value, op: i, unique: false });
        }
      } else {
        const res = await api("PATCH", "/state/ui:panel", { [op.field]: i });
        expect(res.status).toBe(200);
        patched.push(op.field);
      }
    });

    for (const device of DEVICES) {
      const final = await expectConsistent(device);
      const history = await historySince(`device:${device}`, startId);

      // One commit per acknowledged command and per executed scenario step, by source: none lost, none doubled.
      const bySource: Record<string, number> = {};
      for (const h of history) bySource[h.source] = (bySource[h.source] ?? 0) + 1;
      expect(bySource, `${device}: commits by source (${REPRODUCE})`).toEqual(commitsExpected[device]);
      // The last commit is the state.
      expect((history.at(-1)?.new as { state: JsonObject } | undefined)?.state ?? initial[device]).toEqual(final);

      // Unique volumes: committed once each, in an order consistent with their acks.
      const position = new Map<number, number>();
      history.forEach((h, at) => {
        const before = (h.old?.state as JsonObject | undefined)?.volume;
        const after = (h.new?.state as JsonObject | undefined)?.volume as number;
        if (after >= 10 && before !== after) {
          expect(position.has(after), `${device}: volume ${after} committed twice (${REPRODUCE})`).toBe(false);
          position.set(after, at);
        }
      });
      const unique = writes[device].volume.filter((w) => w.unique);
      for (const w of unique)
        expect(position.has(w.value as number), `${device}: acked volume ${String(w.value)} never committed (${REPRODUCE})`).toBe(true);
      for (const a of unique) {
        for (const b of unique) {
          if (a.end < b.start) {
            expect(
              position.get(a.value as number),
              `${device}: volume ${String(a.value)} was acked before ${String(b.value)} was sent, but committed after it (${REPRODUCE})`,
            ).toBeLessThan(position.get(b.value as number) as number);
          }
        }
      }
      // Every ack is a commit: an HTTP answer carries the state and time its own commit stored
      // (an MQTT one its unique value). And acks respect real time: an operation acknowledged
      // before another was sent was committed before it.
      const committedAt = new Map<number, number[]>();
      for (const ack of acks.filter((a) => a.device === device)) {
        let at: number[];
        if (ack.via === "mqtt") {
          at = [position.get(ack.level) as number];
        } else {
          const wanted = canon({ state: ack.state, updated_at: ack.updatedAt });
          at = history.flatMap((h, i) => {
            const record = h.new as { state: JsonObject; updated_at: string };
            return h.source === "http" && canon({ state: record.state, updated_at: record.updated_at }) === wanted ? [i] : [];
          });
        }
        expect(at.length, `${device}: the ack of op ${ack.op} matches no commit (${REPRODUCE})`).toBeGreaterThan(0);
        committedAt.set(ack.op, at);
      }
      const mine = acks.filter((a) => a.device === device);
      for (const a of mine) {
        for (const b of mine) {
          if (a.end >= b.start) continue;
          const first = Math.min(...(committedAt.get(a.op) as number[]));
          const last = Math.max(...(committedAt.get(b.op) as number[]));
          expect(
            first,
            `${device}: op ${a.op} was acknowledged before op ${b.op} was sent, but committed after it (${REPRODUCE})`,
          ).toBeLessThan(last);
        }
      }

      // Per field: the final value was written by an operation that could have been acknowledged last,
      // i.e. no other write to the field started after it was acknowledged.
      for (const field of ["power", "volume", "input"] as const) {
        const all = writes[device][field];
        if (all.length === 0) {
          expect(final[field], `${device}.${field} untouched`).toEqual(initial[device][field]);
          continue;
        }
        const candidates = all.filter((w) => all.every((o) => o === w || o.start < w.end));
        const allowed = [...new Set(candidates.map((w) => w.value))];
        expect(
          allowed,
          `${device}.${field}: final ${String(final[field])} is not the value of a last-acknowledged write (ops ${candidates.map((c) => c.op).join(",")}) (${REPRODUCE})`,
        ).toContain(final[field]);
      }
    }

    // The active scenario, by the same rule; persisted as reported.
    const scenario = (await api("GET", "/scenario/state")).json.scenario_id as string | null;
    if (scenarioWrites.length > 0) {
      const candidates = scenarioWrites.filter((w) => scenarioWrites.every((o) => o === w || o.start < w.end));
      expect(
        candidates.map((c) => c.value),
        REPRODUCE,
      ).toContain(scenario);
    }
    const stored = (await readStoredValue(dbPath, "scenario:last")) as { scenario_id: string | null } | null;
    expect(stored?.scenario_id ?? null).toBe(scenario);

    // Every patch of the key is in it.
    const panel = (await api("GET", "/state/ui:panel")).json.value as Record<string, unknown>;
    expect(Object.keys(panel).sort()).toEqual([...patched].sort());
    expect(await readStoredValue(dbPath, "ui:panel")).toEqual(panel);
  }, 60_000);
});

// ---------------------------------------------------------------- scenario results

interface ChangeResult {
  operation: "switch" | "start" | "shutdown";
  from: string | null;
  to: string | null;
  noop: boolean;
  failed_steps: Array<{ phase: string; index: number }>;
  skipped_steps: Array<{ phase: string; index: number }>;
}

/** The steps a scenario change ran, in order: the outgoing shutdown, then the incoming startup, minus skipped and failed ones. */
function executedSteps(result: ChangeResult): Step[] {
  const ran = (phase: "startup" | "shutdown", steps: Step[]) =>
    steps.filter((_, index) => ![...result.skipped_steps, ...result.failed_steps].some((s) => s.phase === phase && s.index === index));
  const out: Step[] = [];
  if (result.operation !== "start" && result.from) out.push(...ran("shutdown", SCENARIOS[result.from]?.shutdown ?? []));
  if (result.operation !== "shutdown" && result.to) out.push(...ran("startup", SCENARIOS[result.to]?.startup ?? []));
  return out;
}
