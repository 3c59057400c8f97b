/**
 * Fault injection: 10,000 generated malformed inputs against the whole bridge, over its
 * real interfaces (HTTP on a socket, MQTT over TCP through aedes, config files on disk).
 *
 * Every input is built to be invalid: each generator ends with an oracle, written from
 * the documented rules rather than by calling the app's own validators, and an input
 * the oracle finds valid is drawn again. So any 2xx on a device or scenario command, any
 * device commit, and any MQTT command that is not answered with a warning and a WB
 * error flag is a finding.
 *
 * Reproduce a failure with the seed it prints: `FUZZ_SEED=<n> npx vitest run test/fault/fuzz.test.ts`.
 * Each case draws from its own stream (seed, category, index), so an offender's label
 * is enough to rebuild that one input.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, connect as netConnect } from "node:net";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Env, loadConfig } from "../../app/config/loader.js";
import { DriverRegistry } from "../../app/devices/driver.js";
import { builtinDrivers } from "../../app/lifespan.js";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { createLogger } from "../../app/observability/logger.js";
import { ConfigError } from "../../app/shared/errors.js";
import type { JsonObject, JsonValue } from "../../app/shared/json.js";
import { startApp } from "../helpers/app.js";
import { hsToken, SECRET_ENV, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET } from "../helpers/auth.js";
import { simulatedDevice, tempDir, testConfig } from "../helpers/fixtures.js";
import { startTestBroker, TestMqttClient } from "../helpers/mqtt.js";
import { mulberry32, type Rng, seedFromEnv } from "../helpers/seeded.js";

// ---------------------------------------------------------------- seeded randomness

const SEED = seedFromEnv("FUZZ_SEED");
const REPRODUCE = `FUZZ_SEED=${SEED} npx vitest run test/fault/fuzz.test.ts`;

/** One stream per case: a case rebuilds from (seed, category, index) alone, whatever ran before it. */
function caseRng(category: Category, index: number): Rng {
  const c = CATEGORIES.indexOf(category) + 1;
  return mulberry32((Math.imul(SEED ^ Math.imul(c, 0x9e3779b1), 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0);
}

const int = (r: Rng, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const chance = (r: Rng, p: number): boolean => r() < p;
function pick<T>(r: Rng, items: readonly T[]): T {
  return items[Math.floor(r() * items.length)] as T;
}

// ---------------------------------------------------------------- the inputs

const CATEGORIES = ["mqtt", "bodies", "queries", "headers", "config"] as const;
type Category = (typeof CATEGORIES)[number];

/** 10,000 in all. The first WARMUP of each category run before the memory baseline. */
const COUNTS: Record<Category, number> = { mqtt: 3000, bodies: 3000, queries: 1500, headers: 1500, config: 1000 };
const WARMUP = 100;
const HTTP_CONCURRENCY = 16;
const MQTT_IN_FLIGHT = 64;

/** Put into values and params only: state values must never reach a log line. */
const MARKER = "zqSECRETzq";
const DEVICES = ["tv", "amp"] as const;
const INPUTS = ["hdmi1", "hdmi2", "tv"];
const SCENARIO_IDS = ["movie", "music"];
const ROLES: Record<string, string> = { display: "tv", audio: "amp" };
/** Commands of simulatedDevice(): name -> params. */
const COMMANDS: Record<
  string,
  Array<{ name: string; type: "boolean" | "integer" | "string"; min?: number; max?: number; enum?: string[] }>
> = {
  power: [{ name: "on", type: "boolean" }],
  power_on: [],
  power_off: [],
  volume: [{ name: "level", type: "integer", min: 0, max: 100 }],
  volume_up: [],
  input: [{ name: "input", type: "string", enum: INPUTS }],
};
/** Role pushbuttons the active scenario (movie) shows on /devices/scenarios: commands without required params. */
const ROLE_CONTROLS = new Set(
  Object.keys(ROLES).flatMap((role) =>
    Object.entries(COMMANDS)
      .filter(([, p]) => p.length === 0)
      .map(([a]) => `${role}_${a}`),
  ),
);

const WB_ID = /^[A-Za-z0-9_-]{1,64}$/;
const NUMBERISH = /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$/;
const ACCEPTED_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const UNICODE_BITS = [
  "é",
  "ß",
  "Ж",
  "і",
  "中",
  "😀",
  "\u200b",
  "\u202e",
  "\u0301",
  "\ufeff",
  "\u00a0",
  "\u2028",
  "１",
  "٣",
  "\ud83d",
  "\udc00",
  "𝟘",
];

/** Printable ASCII, control characters and awkward Unicode (RTL marks, lone surrogates, look-alikes). */
function junkText(r: Rng, maxLen: number): string {
  const len = int(r, 0, maxLen);
  let out = "";
  for (let i = 0; i < len; i++) {
    const k = r();
    if (k < 0.6) out += String.fromCharCode(int(r, 0x20, 0x7e));
    else if (k < 0.7) out += String.fromCharCode(pick(r, [0, 1, 8, 9, 10, 13, 27, 0x7f]));
    else out += pick(r, UNICODE_BITS);
  }
  return out;
}

/** encodeURIComponent throws on lone surrogates; a UTF-8 round trip turns them into U+FFFD first. */
function encodeLevel(s: string): string {
  return encodeURIComponent(Buffer.from(s, "utf8").toString("utf8"));
}

function junkBytes(r: Rng, maxLen: number): Buffer {
  const bytes = Buffer.alloc(int(r, 1, maxLen));
  for (let i = 0; i < bytes.length; i++) bytes[i] = int(r, 0, 255);
  return bytes;
}

/** A name usable as one MQTT topic level (no '/', '+', '#', NUL) but not a WB id. */
function junkLevel(r: Rng): string {
  for (;;) {
    const s = chance(r, 0.5)
      ? `${pick(r, ["x", "power", "volume", "POWER", "input", "muted", "Play from ROM"])}${junkText(r, 12)}`
      : junkText(r, 40);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: removes what a topic level may not hold, NUL included.
    const clean = s.replace(/[/+#\u0000\ud800-\udfff]/g, "");
    if (clean !== "") return clean;
  }
}

function junkId(r: Rng): string {
  return pick(r, [
    () => `nope-${int(r, 0, 1e6)}`,
    () => pick(r, ["TV", "Tv", "tv ", " tv", "tv\u200b", "amp_", "scenarios", "constructor", "__proto__", "toString", "hasOwnProperty"]),
    () => "d".repeat(int(r, 65, 300)),
    () => junkText(r, 30),
  ])();
}

/** A random JSON value; depth-limited so the values themselves stay small. */
function junkJson(r: Rng, depth = 0): JsonValue {
  const k = r();
  if (depth > 3 || k < 0.5) {
    return pick(r, [
      () => null,
      () => chance(r, 0.5),
      () => int(r, -1e6, 1e6),
      () => r() * 1e12 - 5e11,
      () => pick(r, [1e308, -1e308, 5e-324, 2 ** 53 + 1, -0.5, 0.1]),
      () => `${MARKER}${junkText(r, 20)}`,
      () => pick(r, ["", "true", "1", "null", "hdmi1", "tv", "none"]),
    ])();
  }
  if (k < 0.75) return Array.from({ length: int(r, 0, 4) }, () => junkJson(r, depth + 1));
  const obj: JsonObject = {};
  for (let i = int(r, 0, 4); i > 0; i--)
    obj[pick(r, ["a", "level", "on", "input", "action", "params", "id", junkText(r, 8)])] = junkJson(r, depth + 1);
  return obj;
}

function deepText(r: Rng, depth: number): string {
  const open = chance(r, 0.5) ? "[" : '{"a":';
  const close = open === "[" ? "]" : "}";
  return open.repeat(depth) + (chance(r, 0.5) ? "1" : "") + close.repeat(depth);
}

/** Text that JSON.parse refuses, from text it accepts: cut, junk inserted, a quote or brace removed, ... */
function corruptJson(r: Rng, text: string): string {
  for (let attempt = 0; attempt < 20; attempt++) {
    const at = int(r, 0, Math.max(0, text.length - 1));
    const out = pick(r, [
      () => text.slice(0, at),
      () => text.slice(0, at) + pick(r, ["}", "]", ",", ":", "'", "\\", "NaN", "undefined", "/*x*/", "\u0000", "\x01"]) + text.slice(at),
      () => text.replace(/"/, "'"),
      () => text.replace(/}$/, ",}"),
      () => `${text}${pick(r, ["x", "}", "{}", "\n]"])}`,
      () => text.replace(/:/, "="),
      () => text.replace(/[{[]/, ""),
    ])();
    if (!parses(out)) return out;
  }
  return `${text}}}`;
}

function parses(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function parseOr(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    // secure-json-parse drops a leading BOM; the oracle must accept at least what the server does.
    return { ok: true, value: JSON.parse(text.replace(/^\ufeff/, "")) as unknown };
  } catch {
    return { ok: false };
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

// ---- oracles: what the bridge must execute (so a generator never sends it)

function validParams(command: string, params: unknown): boolean {
  const specs = COMMANDS[command];
  if (!specs) return false;
  if (params === undefined) return specs.length === 0;
  if (!isObject(params)) return false;
  if (Object.keys(params).some((k) => !specs.some((s) => s.name === k))) return false;
  return specs.every((s) => {
    const v = params[s.name];
    switch (s.type) {
      case "boolean":
        return typeof v === "boolean";
      case "integer":
        return typeof v === "number" && Number.isInteger(v) && v >= (s.min ?? -Infinity) && v <= (s.max ?? Infinity);
      case "string":
        return typeof v === "string" && (s.enum ? s.enum.includes(v) : v.length <= 4096);
      default:
        return false;
    }
  });
}

function validAction(body: unknown): boolean {
  if (!isObject(body) || Object.keys(body).some((k) => k !== "action" && k !== "params")) return false;
  const { action, params } = body;
  return typeof action === "string" && WB_ID.test(action) && Object.hasOwn(COMMANDS, action) && validParams(action, params);
}

type ControlKind = "switch" | "volume" | "input" | "readonly" | "unknown";

function payloadExecutes(kind: ControlKind, text: string): boolean {
  const t = text.trim();
  switch (kind) {
    case "switch":
      return t === "1" || t === "true" || t === "0" || t === "false";
    case "volume": {
      if (!NUMBERISH.test(t)) return false;
      const n = Number(t);
      return Number.isInteger(n) && n >= 0 && n <= 100;
    }
    case "input":
      return INPUTS.includes(text);
    case "readonly":
    case "unknown":
      return false;
  }
}

// ---------------------------------------------------------------- observation

interface Offender {
  category: Category;
  label: string;
  problem: string;
}

/** Per category: how many offenders, and the first ones (enough to see the pattern and reproduce). */
const offenders = new Map<Category, { count: number; first: Offender[] }>();
const statusCounts = new Map<string, number>();

function offend(category: Category, label: string, problem: string): void {
  const mine = offenders.get(category) ?? { count: 0, first: [] };
  mine.count += 1;
  if (mine.first.length < 20) mine.first.push({ category, label, problem });
  offenders.set(category, mine);
}

function countStatus(category: Category, status: number | string): void {
  const key = `${category} ${status}`;
  statusCounts.set(key, (statusCounts.get(key) ?? 0) + 1);
}

/** 503 with one of these codes is documented (DESIGN §6, the routes' schemas); nothing else 5xx is acceptable. */
const DOCUMENTED_503 = new Set(["shutting_down", "not_ready", "auth_unavailable", "device_unreachable", "backups_unavailable"]);

function errorBodyProblem(text: string): string | null {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `error body is not JSON: ${JSON.stringify(text.slice(0, 120))}`;
  }
  const error = isObject(body) ? body.error : undefined;
  if (
    !isObject(error) ||
    typeof error.code !== "string" ||
    error.code === "" ||
    typeof error.message !== "string" ||
    error.message === ""
  ) {
    return `error body is not {error:{code,message}}: ${text.slice(0, 160)}`;
  }
  return null;
}

function errorCode(text: string): string | null {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown } };
    return typeof body.error?.code === "string" ? body.error.code : null;
  } catch {
    return null;
  }
}

interface Verdict {
  allow2xx: boolean;
  /** Node itself answers a request without Host with an empty 400 (RFC 9112 §3.2); nothing in the app sees it. */
  nodeOwn400?: boolean;
}

/** Every answer: < 500 (or a documented 503), error bodies in the API shape, 2xx only where the input may be accepted. */
function judge(category: Category, label: string, status: number, contentType: string, text: string, verdict: Verdict): void {
  countStatus(category, status);
  if (status >= 500) {
    if (!(status === 503 && DOCUMENTED_503.has(errorCode(text) ?? ""))) offend(category, label, `HTTP ${status}: ${text.slice(0, 200)}`);
    return;
  }
  if (status >= 400) {
    if (verdict.nodeOwn400 && status === 400 && text === "") return;
    const problem = errorBodyProblem(text);
    if (problem) offend(category, label, `HTTP ${status}: ${problem}`);
    else if (!contentType.startsWith("application/json")) offend(category, label, `HTTP ${status} with content-type "${contentType}"`);
    return;
  }
  if (status >= 300) offend(category, label, `unexpected HTTP ${status}`);
  else if (!verdict.allow2xx) offend(category, label, `malformed input accepted with HTTP ${status}: ${text.slice(0, 160)}`);
}

// ---------------------------------------------------------------- transports

interface HttpCase {
  label: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  verdict: Verdict;
  /** The x-request-id sent, to check what is echoed. */
  requestId?: string;
}

let base = "";
let port = 0;
let token = "";

const slowest: Array<{ ms: number; label: string }> = [];

function noteDuration(label: string, ms: number): void {
  if (slowest.length < 5 || ms > (slowest[slowest.length - 1]?.ms ?? 0)) {
    slowest.push({ ms: Math.round(ms), label: label.slice(0, 100) });
    slowest.sort((a, b) => b.ms - a.ms);
    slowest.length = Math.min(slowest.length, 5);
  }
}

async function sendHttp(category: Category, c: HttpCase): Promise<void> {
  const started = performance.now();
  let res: Response;
  try {
    res = await fetch(`${base}${c.path}`, {
      method: c.method,
      headers: c.headers,
      body: c.body === undefined ? undefined : typeof c.body === "string" ? c.body : new Uint8Array(c.body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    offend(category, c.label, `no HTTP answer: ${(err as Error).message} ${String((err as { cause?: unknown }).cause ?? "")}`);
    return;
  }
  const text = await res.text();
  noteDuration(c.label, performance.now() - started);
  judge(category, c.label, res.status, res.headers.get("content-type") ?? "", text, c.verdict);
  // fetch strips only spaces and tabs around a value; so does this.
  if (c.requestId !== undefined && res.status !== 431)
    checkRequestId(category, c.label, c.requestId.replace(/^[\t ]+|[\t ]+$/g, ""), res.headers.get("x-request-id"));
}

function checkRequestId(category: Category, label: string, sent: string, echoed: string | null): void {
  if (ACCEPTED_REQUEST_ID.test(sent)) {
    if (echoed !== sent) offend(category, label, `sane x-request-id not echoed (got ${JSON.stringify(echoed)})`);
  } else if (echoed === null || !UUID.test(echoed)) {
    offend(category, label, `insane x-request-id not replaced by a UUID (got ${JSON.stringify(echoed?.slice(0, 80))})`);
  }
}

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/**
 * Writes `data` and collects everything until the server closes (or the timeout).
 * Complete requests carry `Connection: close`, so the server closes after answering.
 * Only requests that stay incomplete are half-closed: Node drops a response still being
 * prepared when the client half-closes (httpAllowHalfOpen is off), so a FIN would hide it.
 */
function rawExchange(data: Buffer, halfClose: boolean, timeoutMs = 10_000): Promise<{ bytes: Buffer; timedOut: boolean; error?: string }> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ bytes: Buffer.concat(chunks), timedOut: true });
    }, timeoutMs);
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", (err) => {
      error = err.message;
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(chunks), timedOut: false, error });
    });
    if (halfClose) socket.end(data);
    else socket.write(data);
  });
}

/** The HTTP/1.1 responses in a byte stream (Content-Length, chunked, or until close). */
function parseResponses(bytes: Buffer): RawResponse[] | string {
  const out: RawResponse[] = [];
  let at = 0;
  while (at < bytes.length) {
    const end = bytes.indexOf("\r\n\r\n", at, "latin1");
    if (end < 0) return `truncated response head: ${JSON.stringify(bytes.subarray(at, at + 120).toString("latin1"))}`;
    const [statusLine = "", ...lines] = bytes.subarray(at, end).toString("latin1").split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) return `bad status line: ${JSON.stringify(statusLine.slice(0, 80))}`;
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    let bodyStart = end + 4;
    let body: Buffer;
    const length = headers.get("content-length");
    if (length !== undefined) {
      body = bytes.subarray(bodyStart, bodyStart + Number(length));
      at = bodyStart + Number(length);
    } else if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = bytes.indexOf("\r\n", bodyStart, "latin1");
        if (lineEnd < 0) return "truncated chunked body";
        const size = parseInt(bytes.subarray(bodyStart, lineEnd).toString("latin1"), 16);
        if (!Number.isInteger(size)) return "bad chunk size in response";
        bodyStart = lineEnd + 2 + size + 2;
        if (size === 0) break;
        parts.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
      }
      body = Buffer.concat(parts);
      at = bodyStart;
    } else {
      body = bytes.subarray(bodyStart);
      at = bytes.length;
    }
    out.push({ status: Number(m[1]), headers, body: body.toString("utf8") });
  }
  return out;
}

async function runPool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

// ---------------------------------------------------------------- HTTP bodies

function json(
  method: string,
  path: string,
  body: string | Buffer,
  verdict: Verdict,
  label: string,
  contentType = "application/json",
): HttpCase {
  return { label, method, path, body, verdict, headers: { authorization: `Bearer ${token}`, "content-type": contentType } };
}

/** A body for POST /devices/:id/action that the device must refuse, as text. */
function invalidActionText(r: Rng): { text: string; kind: string } {
  for (;;) {
    const kind = pick(r, ["types", "unknown", "extra", "range", "enum", "proto", "deep", "huge", "malformed", "nonobject", "random"]);
    const text = actionTextOf(r, kind);
    const parsed = parseOr(text);
    if (parsed.ok && validAction(parsed.value)) continue;
    return { text, kind };
  }
}

function actionTextOf(r: Rng, kind: string): string {
  const marker = `${MARKER}${int(r, 0, 999)}`;
  switch (kind) {
    case "types":
      return JSON.stringify(
        pick(r, [
          { action: junkJson(r) },
          { action: pick(r, Object.keys(COMMANDS)), params: pick(r, [[], "x", 1, true, [1, 2]]) },
          { action: "volume", params: { level: pick(r, ["50", true, null, [50], { v: 50 }, marker]) } },
          { action: "power", params: { on: pick(r, ["true", 1, 0, "1", null, [true]]) } },
          { action: "input", params: { input: pick(r, [1, true, null, ["hdmi1"], { v: "hdmi1" }]) } },
          { action: ["power_on"] },
        ]),
      );
    case "unknown":
      return JSON.stringify({
        action: pick(r, [
          "power_onx",
          "POWER_ON",
          "mute",
          "volume_down",
          "toString",
          "constructor",
          "__proto__",
          "hasOwnProperty",
          junkId(r),
        ]),
      });
    case "extra":
      return JSON.stringify(
        pick(r, [
          { action: "power_on", extra: marker },
          { action: "power_on", params: { force: true } },
          { action: "volume", params: { level: 10, also: 1 } },
          { action: "power_off", params: { on: true } },
        ]),
      );
    case "range":
      return JSON.stringify({
        action: "volume",
        params: { level: pick(r, [-1, 101, 1e308, -1e308, 50.5, 2 ** 53 + 2, 1e-9, 100.0000001, int(r, 101, 1e9)]) },
      });
    case "enum":
      return JSON.stringify({
        action: "input",
        params: { input: pick(r, ["HDMI1", "hdmi3", " hdmi1", "hdmi1 ", "hdmі1", "", `${marker}`, "hdmi1".repeat(int(r, 2, 2000))]) },
      });
    case "proto":
      return pick(r, [
        `{"action":"power_on","__proto__":{"polluted_zq":"${marker}"}}`,
        `{"action":"volume","params":{"__proto__":{"level":5}}}`,
        `{"__proto__":{"action":"power_on"}}`,
        `{"action":"power_on","constructor":{"prototype":{"polluted_zq":"${marker}"}}}`,
        `{"constructor":{"prototype":{"action":"power_on"}}}`,
        `{"action":"power_on","params":{"constructor":{"prototype":{"polluted_zq":1}}}}`,
      ]);
    case "deep":
      return `{"action":"volume","params":{"level":${deepText(r, int(r, 10, 20_000))}}}`;
    case "huge":
      return pick(r, [
        () => JSON.stringify({ action: "a".repeat(int(r, 65, 400_000)) }),
        () => JSON.stringify({ action: "input", params: { input: `${marker}${"x".repeat(int(r, 4000, 400_000))}` } }),
        () => JSON.stringify({ action: "power_on", params: { [junkText(r, 10) || "k"]: "y".repeat(int(r, 1000, 300_000)) } }),
      ])();
    case "malformed":
      // Valid before the damage: a lenient parse would execute it, which the final state would show.
      return corruptJson(
        r,
        JSON.stringify(
          pick(r, [{ action: "volume", params: { level: 77 } }, { action: "power_on" }, { action: "input", params: { input: "tv" } }]),
        ),
      );
    case "nonobject":
      return pick(r, ['"power_on"', "[]", '[{"action":"power_on"}]', "null", "1", "true", "", " ", "\ufeff"]);
    default:
      return JSON.stringify(junkJson(r));
  }
}

function actionCase(r: Rng, label: string): HttpCase {
  const k = r();
  const device = k < 0.8 ? pick(r, DEVICES) : pick(r, [encodeLevel(junkId(r)), "%zz", "%00", "t%76", "..", "tv%2Fx", "%F0%9F%98%80"]);
  const path = `/devices/${device}/action`;
  // Whatever the path (`t%76` is tv once decoded), the body alone is invalid.
  const { text, kind } = invalidActionText(r);
  const contentType = chance(r, 0.9)
    ? "application/json"
    : pick(r, ["application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", "application/vnd.api+json"]);
  return json("POST", path, text, { allow2xx: false }, `${label} POST ${path.slice(0, 60)} [${kind}]`, contentType);
}

function scenarioCase(r: Rng, label: string): HttpCase {
  const route = pick(r, ["switch", "start", "shutdown", "role_action"]);
  const path = `/scenario/${route}`;
  for (;;) {
    let text: string;
    if (route === "shutdown") {
      // Any body that parses runs the shutdown (the route takes none), so only unparseable ones.
      text = pick(r, [
        () => corruptJson(r, JSON.stringify(junkJson(r))),
        () => "{",
        () => deepText(r, 50_000).slice(0, -1),
        () => `{"a":"${"x".repeat(300_000)}`,
      ])();
      if (parses(text)) continue;
      return json("POST", path, text, { allow2xx: false }, `${label} POST ${path}`);
    }
    const value = pick(r, [
      () => ({ id: pick(r, [...SCENARIO_IDS, junkId(r), 1, null, ["movie"]]), graceful: pick(r, [true, "yes", 1, null, undefined]) }),
      () => ({ id: junkId(r) }),
      () => ({ id: pick(r, SCENARIO_IDS), extra: MARKER }),
      () => ({
        role: pick(r, [...Object.keys(ROLES), junkId(r)]),
        action: pick(r, [...Object.keys(COMMANDS), junkId(r), 5]),
        params: pick(r, [undefined, junkJson(r), { level: 500 }, { on: "yes" }]),
      }),
      () => ({ role: "display", action: "volume", params: { level: pick(r, [-5, 101, "50", 50.5]) } }),
      () => junkJson(r),
    ])();
    text = chance(r, 0.2) ? corruptJson(r, JSON.stringify(value)) : (JSON.stringify(value) ?? "null");
    const parsed = parseOr(text);
    if (parsed.ok && scenarioBodyExecutes(route, parsed.value)) continue;
    return json("POST", path, text, { allow2xx: false }, `${label} POST ${path}`);
  }
}

/** Whether a scenario route would change anything with this body while "movie" is active. */
function scenarioBodyExecutes(route: string, body: unknown): boolean {
  if (!isObject(body)) return false;
  if (route === "switch") {
    const keysOk = Object.keys(body).every((k) => k === "id" || k === "graceful");
    return (
      keysOk &&
      typeof body.id === "string" &&
      SCENARIO_IDS.includes(body.id) &&
      (body.graceful === undefined || typeof body.graceful === "boolean")
    );
  }
  if (route === "start") return false; // a scenario is active: always 409
  if (route === "role_action") {
    const keysOk = Object.keys(body).every((k) => k === "role" || k === "action" || k === "params");
    if (!keysOk || typeof body.role !== "string" || !Object.hasOwn(ROLES, body.role)) return false;
    return validAction({ action: body.action, ...(body.params === undefined ? {} : { params: body.params }) });
  }
  return true;
}

function stateKey(r: Rng): { key: string; writable: boolean } {
  const k = r();
  if (k < 0.55) return { key: `fuzz:${pick(r, ["a", "b", "c", `k${int(r, 0, 50)}`])}`, writable: true };
  if (k < 0.75)
    return {
      key: encodeURIComponent(pick(r, ["device:tv", "device:amp", "device:nope", "scenario:last", "recovery:x", "scenario:movie"])),
      writable: false,
    };
  const bad = pick(r, [
    "Fuzz:x",
    "nocolon",
    "a:",
    ":a",
    `${"n".repeat(40)}:x`,
    `fuzz:${"i".repeat(300)}`,
    "fuzz:a b",
    "fuzz:ü",
    junkText(r, 30),
    "%zz",
    "%00",
  ]);
  return { key: bad.startsWith("%") ? bad : encodeLevel(bad) || "%20", writable: false };
}

function stateBodyText(r: Rng): { text: string; isObject: boolean } {
  const text = pick(r, [
    () => JSON.stringify(junkJson(r)),
    () => JSON.stringify({ v: `${MARKER}${junkText(r, 30)}`, n: junkJson(r) }),
    () => `{"v":${deepText(r, int(r, 60, 20_000))}}`,
    () => deepText(r, int(r, 60, 20_000)),
    // Accepted ones stay small: history keeps old and new value of every write, and the history queries return them.
    () => JSON.stringify({ big: `${MARKER}${"x".repeat(pick(r, [2_000, 10_000, 1_200_000]))}` }),
    () => `{"__proto__":{"polluted_zq":"${MARKER}"}}`,
    () => `{"a":{"constructor":{"prototype":{"polluted_zq":"${MARKER}"}}}}`,
    () => JSON.stringify(Object.fromEntries(Array.from({ length: int(r, 100, 1000) }, (_, i) => [`k${i}`, i]))),
    () => corruptJson(r, JSON.stringify({ v: MARKER })),
    () => pick(r, ["1e999", "[]", '"x"', "null", "", "{}", '{"a":1e999}', '{"\\ud800":1}', '{"a":"\\u0000"}']),
  ])();
  const parsed = parseOr(text);
  return { text, isObject: parsed.ok && isObject(parsed.value) };
}

function stateCase(r: Rng, label: string): HttpCase {
  const method = pick(r, ["PUT", "PATCH"]);
  const { key, writable } = stateKey(r);
  const query = chance(r, 0.15) ? `?ttl=${pick(r, ["-1", "abc", "1.5", "99999999999", "", "3600", "0", "%zz"])}` : "";
  const { text } = stateBodyText(r);
  const c = json(method, `/state/${key}${query}`, text, { allow2xx: writable }, `${label} ${method} /state/${key.slice(0, 40)}${query}`);
  if (chance(r, 0.15)) c.headers["if-match"] = pick(r, ['"abc"', "*", 'W/"x"', junkText(r, 20).replace(/[^\x20-\x7e]/g, "") || "x", '""']);
  return c;
}

function bodyCase(i: number): HttpCase {
  const r = caseRng("bodies", i);
  const label = `bodies#${i}`;
  // Seed corpus: inputs that once broke the bridge run on every seed.
  if (i === 0)
    return json(
      "PUT",
      "/state/fuzz:deep",
      `{"v":${"[".repeat(10_000)}${"]".repeat(10_000)}}`,
      { allow2xx: false },
      `${label} PUT deep JSON`,
    );
  if (i === 1) return json("POST", "/devices/%zz/action", "{}", { allow2xx: false }, `${label} POST undecodable path`);
  const k = r();
  if (k < 0.45) return actionCase(r, label);
  if (k < 0.65) return scenarioCase(r, label);
  return stateCase(r, label);
}

// ---------------------------------------------------------------- query strings

function junkQueryValue(r: Rng): string {
  return pick(r, [
    () => String(int(r, -5, 2000)),
    () => pick(r, ["", "abc", "1.5", "1e3", "0x10", "NaN", "-0", "%zz", "%00", "%", "%%", "9".repeat(40), "null", "[]", "1,2"]),
    () => encodeLevel(junkText(r, 30)),
    () => Buffer.from(junkText(r, 20)).toString("base64url"),
    () => "c".repeat(chance(r, 0.2) ? int(r, 16_500, 20_000) : int(r, 200, 4000)),
    () => junkText(r, 10).replace(/[#&]/g, ""),
  ])();
}

function queryCase(i: number): HttpCase {
  const r = caseRng("queries", i);
  const route = pick(r, [
    "/state",
    "/history",
    `/state/${pick(r, ["fuzz:a", "device:tv", "scenario:last", "x", "%zz"])}/history`,
    `/devices/${pick(r, ["tv", "amp", "nope", "%00"])}/state`,
    "/devices",
    "/scenario/state",
    `/scenarios/${pick(r, ["movie", "nope"])}`,
    "/health",
    "/recovery-points",
    "/backups",
  ]);
  const names = [
    "limit",
    "cursor",
    "prefix",
    "filter",
    "key",
    "transition",
    "ttl",
    "access_token",
    "limit[]",
    "",
    "__proto__",
    "constructor",
    junkText(r, 6).replace(/[#&=]/g, ""),
  ];
  const parts: string[] = [];
  const many = chance(r, 0.05);
  for (let n = int(r, 1, many ? 400 : 6); n > 0; n--) {
    const name = pick(r, names);
    const value = junkQueryValue(r);
    // Many parameters stay short; a few long values pass the 16 KiB header limit (431).
    parts.push(chance(r, 0.1) ? name : `${name}=${many ? value.slice(0, 20) : value}`);
  }
  const query = parts.join(pick(r, ["&", "&", "&", "&&", ";"]));
  return {
    label: `queries#${i} GET ${route}?${query.slice(0, 60)}`,
    method: "GET",
    path: `${route}?${query}`,
    headers: { authorization: `Bearer ${token}` },
    verdict: { allow2xx: true },
  };
}

// ---------------------------------------------------------------- headers

const HEADER_TARGETS: Array<{ method: string; path: string; body?: string; allow2xx: boolean }> = [
  { method: "GET", path: "/devices/tv/state", allow2xx: true },
  { method: "GET", path: "/health", allow2xx: true },
  { method: "POST", path: "/devices/tv/action", body: JSON.stringify({ action: "nope_action" }), allow2xx: false },
  { method: "POST", path: "/devices/amp/action", body: JSON.stringify({ action: "volume", params: { level: 999 } }), allow2xx: false },
  { method: "PUT", path: "/state/fuzz:h", body: JSON.stringify({ v: MARKER }), allow2xx: true },
  { method: "PATCH", path: "/state/fuzz:h", body: JSON.stringify({ w: MARKER }), allow2xx: true },
  { method: "POST", path: "/scenario/switch", body: JSON.stringify({ id: "nope" }), allow2xx: false },
];

/** Header values fetch can carry (latin-1, no CR/LF/NUL). */
function junkHeaderValue(r: Rng, maxLen: number): string {
  const len = int(r, 1, maxLen);
  let out = "";
  for (let i = 0; i < len; i++) out += String.fromCharCode(chance(r, 0.85) ? int(r, 0x20, 0x7e) : pick(r, [9, int(r, 0x80, 0xff)]));
  return out;
}

async function headerFetchCase(r: Rng, i: number): Promise<HttpCase> {
  const target = pick(r, HEADER_TARGETS);
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (target.body !== undefined) headers["content-type"] = "application/json";
  let allow2xx = target.allow2xx;
  let requestId: string | undefined;
  const what = pick(r, ["content-type", "authorization", "huge", "if-match", "request-id", "accept", "encoding", "many"]);
  switch (what) {
    case "content-type":
      headers["content-type"] = pick(r, [
        "application/xml",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
        "application/json;;;",
        "*/*",
        "application/",
        junkHeaderValue(r, 40),
      ]);
      break;
    case "authorization":
      allow2xx = false;
      headers.authorization = await pick(r, [
        async () => junkHeaderValue(r, 200),
        async () => `Bearer ${junkHeaderValue(r, 300)}`,
        async () => "Bearer",
        async () => `Basic ${Buffer.from("admin:admin").toString("base64")}`,
        async () => `Bearer ${token}x`,
        async () => `Bearer ${token.split(".").slice(0, 2).join(".")}.`,
        async () => `Bearer ${token}, Bearer ${token}`,
        async () => `Bearer ${await hsToken({ claims: { scope: "admin" } }, "another-secret-of-sufficient-length-0123456789")}`,
        async () => `Bearer ${await hsToken({ claims: { scope: "admin" }, expiresIn: -3600 })}`,
        async () => `Bearer ${await hsToken({ claims: { scope: "nothing" } })}`,
        async () => `Bearer ${"A".repeat(int(r, 5000, 12_000))}`,
      ])();
      break;
    case "huge":
      headers[pick(r, ["x-junk", "cookie", "user-agent", "accept-language"])] = "h".repeat(pick(r, [4000, 12_000, 17_000, 20_000]));
      break;
    case "if-match":
      headers["if-match"] = pick(r, ['"abc"', "*", 'W/"x"', "", '"', junkHeaderValue(r, 60), `"${"e".repeat(3000)}"`]);
      break;
    case "request-id":
      requestId = pick(r, [
        () => junkHeaderValue(r, 60),
        () => `req-${int(r, 0, 1e9)}`,
        () => "r".repeat(int(r, 120, 400)),
        () => "a b",
        () => "ok.id:1@x/y+z=",
        () => "é",
      ])();
      headers["x-request-id"] = requestId;
      break;
    case "accept":
      headers.accept = pick(r, ["text/html", "application/xml", "*/*;q=x", junkHeaderValue(r, 80)]);
      break;
    case "encoding":
      headers["content-encoding"] = pick(r, ["gzip", "br", "deflate", "identity", "x-junk"]);
      break;
    case "many":
      for (let n = int(r, 50, 300); n > 0; n--) headers[`x-h${n}`] = junkHeaderValue(r, 30);
      break;
  }
  return {
    label: `headers#${i} ${target.method} ${target.path} [${what}]`,
    method: target.method,
    path: target.path,
    headers,
    body: target.body,
    verdict: { allow2xx },
    requestId,
  };
}

interface RawCase {
  label: string;
  data: Buffer;
  /** The request cannot complete: only the end of the stream makes the server answer. */
  incomplete?: boolean;
  /** Nothing to answer (no request ever started): closing silently is right. */
  silentOk?: boolean;
  /** Node answers a request without Host itself, with an empty 400 (RFC 9112 §3.2); the app never sees it. */
  nodeOwn400?: boolean;
}

/** Malformed at the HTTP/1.1 level: only a raw socket can send these. */
function rawHeaderCase(r: Rng): RawCase {
  const auth = `Authorization: Bearer ${token}\r\n`;
  const close = "Connection: close\r\n";
  const bad = JSON.stringify({ action: "nope_action" });
  const post = (extra: string, body: string) =>
    `POST /devices/tv/action HTTP/1.1\r\nHost: x\r\n${auth}${close}Content-Type: application/json\r\n${extra}\r\n${body}`;
  const get = (extra: string) => `GET /health HTTP/1.1\r\nHost: x\r\n${auth}${close}${extra}\r\n`;
  const bytes = (...parts: Array<string | Uint8Array>) =>
    Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : p)));
  const templates: Array<() => RawCase> = [
    () => ({
      label: "content-length not a number",
      data: bytes(post(`Content-Length: ${pick(r, ["abc", "-1", "1.5", "+5", "0x10", "1e3", "99999999999999999999", ""])}\r\n`, bad)),
      incomplete: true,
    }),
    () => ({
      label: "content-length twice",
      data: bytes(post(`Content-Length: ${bad.length}\r\nContent-Length: ${bad.length + 1}\r\n`, bad)),
    }),
    () => ({ label: "content-length and chunked", data: bytes(post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")) }),
    () => ({ label: "content-length too small", data: bytes(post(`Content-Length: ${int(r, 0, bad.length - 1)}\r\n`, bad)) }),
    () => ({
      label: "content-length too large",
      data: bytes(post(`Content-Length: ${bad.length + int(r, 1, 1000)}\r\n`, bad)),
      incomplete: true,
    }),
    () => ({
      label: "bad chunk size",
      data: bytes(
        `PUT /state/fuzz:raw HTTP/1.1\r\nHost: x\r\n${auth}${close}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${pick(r, ["zz", "-1", "fffffffffffffffff", "2;x=\u0001"])}\r\n{}\r\n0\r\n\r\n`,
      ),
      incomplete: true,
    }),
    () => ({
      label: "unfinished chunks",
      data: bytes(
        `PUT /state/fuzz:raw HTTP/1.1\r\nHost: x\r\n${auth}${close}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":`,
      ),
      incomplete: true,
    }),
    () => ({
      label: "transfer-encoding junk",
      data: bytes(post(`Transfer-Encoding: ${pick(r, ["gzip", "chunked, gzip", "xchunked", "identity"])}\r\n`, bad)),
    }),
    () => ({ label: "header without colon", data: bytes(get("JunkHeaderLine\r\n")) }),
    () => ({ label: "space before colon", data: bytes(get("X-A : b\r\n")) }),
    () => ({ label: "control character", data: bytes(get(`X-A: a${String.fromCharCode(pick(r, [0, 1, 7, 27, 127]))}b\r\n`)) }),
    () => ({ label: "obs-fold", data: bytes(get("X-A: a\r\n  folded\r\n")) }),
    () => ({
      label: "non-ASCII header name",
      data: bytes(`GET /health HTTP/1.1\r\nHost: x\r\n${auth}${close}X-`, junkBytes(r, 8), ": v\r\n\r\n"),
    }),
    () => ({
      label: "non-ASCII header value",
      data: bytes(
        `GET /health HTTP/1.1\r\nHost: x\r\n${auth}${close}X-A: `,
        junkBytes(r, 30).filter((b) => b !== 10 && b !== 13),
        "\r\n\r\n",
      ),
    }),
    () => ({
      label: "garbage Authorization bytes",
      data: bytes(
        `GET /health HTTP/1.1\r\nHost: x\r\n${close}Authorization: Bearer `,
        junkBytes(r, 200).filter((b) => b > 31 && b !== 127),
        "\r\n\r\n",
      ),
    }),
    () => ({ label: "header block too large", data: bytes(get(`X-A: ${"v".repeat(int(r, 17_000, 30_000))}\r\n`)) }),
    () => ({
      label: "bad request line",
      data: bytes(
        pick(r, [
          "HELLO\r\n\r\n",
          "GET\r\n\r\n",
          "GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
          "G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
          "GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n",
          "GET /health\u0000 HTTP/1.1\r\nHost: x\r\n\r\n",
          "GET health HTTP/1.1\r\nHost: x\r\n\r\n",
        ]),
      ),
      incomplete: true,
    }),
    () => ({ label: "only empty lines", data: bytes("\r\n\r\n\r\n"), incomplete: true, silentOk: true }),
    () => ({ label: "absolute-form target", data: bytes(`GET http://evil.test/health HTTP/1.1\r\nHost: x\r\n${auth}${close}\r\n`) }),
    () => ({
      label: "path parameter too long",
      data: bytes(`GET /state/fuzz:${"k".repeat(int(r, 513, 4000))} HTTP/1.1\r\nHost: x\r\n${auth}${close}\r\n`),
    }),
    () => ({
      label: "undecodable path",
      data: bytes(`GET /devices/${pick(r, ["%zz", "%", "%E0%A4%A", "%C0%80"])}/state HTTP/1.1\r\nHost: x\r\n${auth}${close}\r\n`),
    }),
    () => ({ label: "no Host", data: bytes(`GET /health HTTP/1.1\r\n${auth}${close}\r\n`), nodeOwn400: true }),
    () => ({ label: "two Hosts", data: bytes(`GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n${auth}${close}\r\n`) }),
    () => ({
      label: "smuggled second request",
      data: bytes(
        `POST /devices/tv/action HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 0\r\n\r\n`,
        post(`Content-Length: ${bad.length}\r\n`, bad),
      ),
    }),
    () => ({ label: "raw junk", data: junkBytes(r, 400), incomplete: true, silentOk: true }),
  ];
  return pick(r, templates)();
}

async function runRawCase(i: number, r: Rng): Promise<void> {
  const c = rawHeaderCase(r);
  const label = `headers#${i} raw: ${c.label}`;
  const { bytes, timedOut, error } = await rawExchange(c.data, c.incomplete === true);
  if (timedOut) {
    offend("headers", label, "no answer and the connection was not closed within 10 s");
    return;
  }
  const responses = parseResponses(bytes);
  if (typeof responses === "string") {
    offend("headers", label, responses);
    return;
  }
  if (responses.length === 0) {
    if (!c.silentOk) offend("headers", label, `connection closed without an answer${error ? ` (${error})` : ""}`);
    countStatus("headers", "closed");
    return;
  }
  for (const res of responses) {
    judge("headers", label, res.status, res.headers.get("content-type") ?? "", res.body, { allow2xx: true, nodeOwn400: c.nodeOwn400 });
  }
}

// ---------------------------------------------------------------- config files

const BASE_CONFIG: { system: JsonObject; devices: Record<string, JsonObject>; scenarios: Record<string, JsonObject> } = {
  system: {
    mqtt: { client_id: "wb-bridge", embedded: { enabled: true, host: "127.0.0.1", port: 18830 }, keepalive_s: 30 },
    http: { host: "127.0.0.1", port: 8099 },
    persistence: {
      db_path: "data/state_store.db",
      synchronous: "full",
      backups: { interval_s: 300, keep: 10 },
      history: { max_per_key: 200, max_age_days: 90 },
    },
    logging: { level: "info" },
    auth: { mode: "none" },
    rate_limit: { max: 120, window_ms: 60_000 },
  },
  devices: {
    amplifier: {
      device_id: "amplifier",
      device_name: "Amplifier",
      names: { ru: "Усилитель" },
      driver: "wb_ir",
      room: "living_room",
      config: { location: "wb-msw-v3_21" },
      commands: {
        power_on: { rom_position: 1, description: "Power on", params: [{ name: "force", type: "boolean", default: false }] },
        power_off: { rom_position: 2, description: "Power off" },
        volume_up: { rom_position: 3 },
        input_tv: { rom_position: 6, input: "tv" },
        input_projector: { rom_position: 7, input: "projector" },
      },
    },
    ceiling_light: {
      device_id: "ceiling_light",
      device_name: "Ceiling light",
      driver: "wb_relay",
      config: { device: "wb-mr6c_45", fields: { power: { control: "K1", type: "bool", title: "Ceiling light" } } },
      commands: {
        power_on: { field: "power", value: true },
        power_off: { field: "power", value: false },
        power: { field: "power", params: [{ name: "on", type: "boolean" }] },
      },
    },
    floor_lamp: {
      device_id: "floor_lamp",
      device_name: "Floor lamp",
      driver: "mqtt_json",
      config: {
        base_topic: "zigbee2mqtt/floor_lamp",
        state: {
          power: { path: "state", map: { ON: true, OFF: false } },
          brightness: { path: "brightness", type: "int", min: 0, max: 254 },
        },
      },
      commands: {
        power_on: { payload: { state: "ON" } },
        power_off: { payload: { state: "OFF" } },
        brightness: { params: [{ name: "level", type: "integer", min: 0, max: 254 }], payload: { brightness: "{{level}}", transition: 1 } },
      },
      controls: { brightness: { title: { ru: "Яркость" }, units: "%" } },
    },
    projector: {
      device_id: "projector",
      device_name: "Projector",
      driver: "simulated",
      config: { inputs: ["hdmi1", "hdmi2"] },
      commands: {
        power_on: {},
        power_off: {},
        input: { params: [{ name: "input", type: "string", enum: ["hdmi1", "hdmi2"] }] },
      },
    },
  },
  scenarios: {
    movie: {
      scenario_id: "movie",
      name: "Watch a film",
      roles: { display: "projector", audio: "amplifier", light: "floor_lamp" },
      devices: ["projector", "amplifier", "ceiling_light", "floor_lamp"],
      startup: [
        { device: "projector", action: "power_on", delay_after_ms: 500 },
        { device: "projector", action: "input", params: { input: "hdmi1" } },
        { role: "audio", action: "power_on" },
        { device: "ceiling_light", action: "power_off", condition: "power == true" },
        { role: "light", action: "brightness", params: { level: 40 } },
      ],
      shutdown: [
        { device: "projector", action: "power_off" },
        { role: "audio", action: "power_off" },
      ],
    },
    music: {
      scenario_id: "music",
      name: "Music",
      roles: { audio: "amplifier" },
      devices: ["amplifier", "floor_lamp"],
      startup: [
        { role: "audio", action: "input_tv" },
        { device: "floor_lamp", action: "power_on" },
      ],
      shutdown: [{ role: "audio", action: "power_off" }],
    },
  },
};

interface JsonSlot {
  get(): JsonValue;
  set(v: JsonValue): void;
  remove(): void;
}

/** Every place in a JSON tree a mutation can hit. */
function slots(root: { v: JsonValue }): JsonSlot[] {
  const out: JsonSlot[] = [];
  const walk = (get: () => JsonValue, set: (v: JsonValue) => void, remove: () => void) => {
    out.push({ get, set, remove });
    const value = get();
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        walk(
          () => value[i] as JsonValue,
          (v) => {
            value[i] = v;
          },
          () => {
            value.splice(i, 1);
          },
        );
      }
    } else if (isObject(value)) {
      const obj = value as JsonObject;
      for (const key of Object.keys(obj)) {
        walk(
          () => obj[key] as JsonValue,
          (v) => {
            obj[key] = v;
          },
          () => {
            delete obj[key];
          },
        );
      }
    }
  };
  walk(
    () => root.v,
    (v) => {
      root.v = v;
    },
    () => {
      root.v = null;
    },
  );
  return out;
}

function mutateTree(r: Rng, value: JsonValue): { value: JsonValue; ops: string[] } {
  const root = { v: structuredClone(value) };
  const ops: string[] = [];
  for (let n = int(r, 1, 3); n > 0; n--) {
    const slot = pick(r, slots(root));
    const op = pick(r, ["delete", "retype", "add", "huge", "number", "unicode", "empty", "deep"]);
    ops.push(op);
    const current = slot.get();
    switch (op) {
      case "delete":
        slot.remove();
        break;
      case "retype":
        slot.set(pick<JsonValue>(r, [null, true, 0, -1, "", "x", [], {}, [current], { v: current }]));
        break;
      case "add":
        if (isObject(current))
          (current as JsonObject)[pick(r, ["extra", "constructor", "toString", "device_id", "ÿ", junkText(r, 10) || "k"])] = junkJson(r);
        else if (Array.isArray(current)) current.push(junkJson(r));
        else slot.set(junkJson(r));
        break;
      case "huge":
        slot.set(pick(r, ["x".repeat(int(r, 201, 100_000)), Array.from({ length: int(r, 100, 3000) }, (_, i) => i)]));
        break;
      case "number":
        slot.set(pick(r, [-1, 0, 1.5, 1e308, -1e308, 2 ** 53 + 1, 65536, 99999999, 5e-324]));
        break;
      case "unicode":
        slot.set(typeof current === "string" ? `${current}${pick(r, UNICODE_BITS)}` : junkText(r, 20));
        break;
      case "empty":
        slot.set(Array.isArray(current) ? [] : isObject(current) ? {} : "");
        break;
      case "deep": {
        let v: JsonValue = 1;
        for (let d = int(r, 20, 400); d > 0; d--) v = chance(r, 0.5) ? [v] : { a: v };
        slot.set(v);
        break;
      }
    }
  }
  return { value: root.v, ops };
}

function mutateText(r: Rng, text: string): { text: string | Buffer; op: string } {
  const op = pick(r, ["truncate", "flip", "insert", "bom", "empty", "binary", "proto", "utf16", "duplicate-key"]);
  const at = int(r, 0, text.length);
  switch (op) {
    case "truncate":
      return { text: text.slice(0, at), op };
    case "flip": {
      const bytes = Buffer.from(text);
      for (let n = int(r, 1, 5); n > 0; n--) {
        const i = int(r, 0, bytes.length - 1);
        bytes[i] = (bytes[i] ?? 0) ^ (1 << int(r, 0, 7));
      }
      return { text: bytes, op };
    }
    case "insert":
      return { text: text.slice(0, at) + junkText(r, 10) + text.slice(at), op };
    case "bom":
      return { text: `\ufeff${text}`, op };
    case "empty":
      return { text: "", op };
    case "binary":
      return { text: junkBytes(r, 300), op };
    case "proto":
      return { text: text.replace("{", `{"__proto__":{"polluted_zq":1},"constructor":{"prototype":{"polluted_zq":1}},`), op };
    case "utf16":
      return { text: Buffer.from(text, "utf16le"), op };
    default:
      return { text: text.replace("{", '{"device_id":"dup","scenario_id":"dup",'), op };
  }
}

/** A problem must name where it is: `file: field: message`, a file that cannot be read/parsed, or an env variable / system field. */
function unnamedProblem(problem: string): boolean {
  const file = /^config\/(system\.json|devices\/[^:]*\.json|scenarios\/[^:]*\.json|devices|scenarios): (.+)$/s.exec(problem);
  if (file) return !/^(invalid JSON|cannot read|cannot read directory): |^[^\s].*?: \S/s.test(file[2] ?? "");
  return !/^([A-Z][A-Z0-9_]*|(http|auth|persistence|mqtt|logging)(\.[\w[\]"]+)+|encryption key): \S/.test(problem);
}

const ENV_JUNK: Array<[string, string]> = [
  ["HTTP_PORT", "99999"],
  ["HTTP_PORT", "abc"],
  ["HTTP_PORT", "-1"],
  ["MQTT_EMBEDDED_PORT", "1e9"],
  ["MQTT_URL", "http://x"],
  ["MQTT_URL", "mqtt://"],
  ["MQTT_URL", "mqtt://a b"],
  ["LOG_LEVEL", "loud"],
  ["BACKUP_INTERVAL", "-1"],
  ["BACKUP_INTERVAL", "1.5"],
  ["STATE_PATH", "\u0000"],
  ["HTTP_HOST", "0.0.0.0"],
  ["STATE_ENCRYPTION_KEY", "not-a-key"],
];

/** The valid config as files: relative path -> text. */
function baseFiles(): Map<string, string> {
  const files = new Map<string, string>([["system.json", JSON.stringify(BASE_CONFIG.system)]]);
  for (const [id, d] of Object.entries(BASE_CONFIG.devices)) files.set(join("devices", `${id}.json`), JSON.stringify(d));
  for (const [id, s] of Object.entries(BASE_CONFIG.scenarios)) files.set(join("scenarios", `${id}.json`), JSON.stringify(s));
  return files;
}

const BASE_FILES = baseFiles();

/** Mutates the config under `root`/config for one case, then puts every touched file back. */
async function runConfigCase(i: number, root: string, registry: DriverRegistry): Promise<void> {
  const work = join(root, "config");
  const undo: Array<() => Promise<unknown>> = [];
  const restore = (path: string) => {
    const original = BASE_FILES.get(path);
    const full = join(work, path);
    undo.push(original === undefined ? () => rm(full, { recursive: true, force: true }) : () => writeFile(full, original));
  };
  try {
    await configCase(i, root, registry, (path, data) => {
      restore(path);
      return data === null
        ? rm(join(work, path), { force: true })
        : data === "dir"
          ? mkdir(join(work, path))
          : writeFile(join(work, path), data);
    });
  } finally {
    for (const step of undo.reverse()) await step();
  }
}

type ConfigWrite = (path: string, data: string | Uint8Array | null | "dir") => Promise<unknown>;

async function configCase(i: number, root: string, registry: DriverRegistry, put: ConfigWrite): Promise<void> {
  const r = caseRng("config", i);
  const which = r();
  const kind = which < 0.2 ? "system" : which < 0.65 ? "devices" : "scenarios";
  const name = kind === "system" ? "system" : pick(r, Object.keys(kind === "devices" ? BASE_CONFIG.devices : BASE_CONFIG.scenarios));
  const original: JsonValue =
    kind === "system" ? BASE_CONFIG.system : ((kind === "devices" ? BASE_CONFIG.devices : BASE_CONFIG.scenarios)[name] as JsonObject);
  const file = kind === "system" ? "system.json" : join(kind, `${name}.json`);
  let how: string;
  const style = r();
  if (i === 0) {
    // Seed corpus: command names that are Object's own members once made driver validation throw.
    const projector = BASE_CONFIG.devices.projector as { commands: JsonObject };
    const named: JsonObject = Object.fromEntries<JsonValue>([
      ["constructor", {}],
      ["toString", { params: [] }],
    ]);
    await put(join("devices", "projector.json"), JSON.stringify({ ...projector, commands: { ...projector.commands, ...named } }));
    how = "corpus: commands named constructor and toString";
  } else if (style < 0.6) {
    const { value, ops } = mutateTree(r, original);
    await put(file, JSON.stringify(value) ?? "null");
    how = `tree ${ops.join("+")}`;
  } else if (style < 0.9) {
    const { text, op } = mutateText(r, JSON.stringify(original, null, 2));
    await put(file, text);
    how = `text ${op}`;
  } else {
    how = pick(r, ["duplicate", "directory", "remove"]);
    const dirName = kind === "system" ? "devices" : kind;
    if (how === "duplicate") await put(join(dirName, `zz-copy-${name}.json`), JSON.stringify(original));
    else if (how === "directory") await put(join(dirName, "zz-dir.json"), "dir");
    else await put(file, null);
  }
  const env: Record<string, string> = {};
  if (chance(r, 0.15)) {
    const [k, v] = pick(r, ENV_JUNK);
    env[k] = v;
  }
  const label = `config#${i} ${kind}/${name} ${how}${Object.keys(env).length ? ` env ${Object.keys(env)[0]}` : ""}`;
  let loaded: Awaited<ReturnType<typeof loadConfig>>;
  try {
    loaded = await loadConfig({ configDir: "config", cwd: root, env: env as Env });
  } catch (err) {
    if (!(err instanceof ConfigError)) {
      offend("config", label, `unexpected ${(err as Error)?.name}: ${(err as Error)?.message?.slice(0, 200)}`);
      return;
    }
    countStatus("config", "ConfigError");
    if (err.problems.length === 0) offend("config", label, "ConfigError without problems");
    const unnamed = err.problems.find(unnamedProblem);
    if (unnamed !== undefined) offend("config", label, `problem names no file/field: ${unnamed.slice(0, 200)}`);
    return;
  }
  // Loaded: the drivers' own checks (what the bridge runs next) must report, not throw.
  let problems: string[];
  try {
    problems = registry.validate(loaded.devices, createLogger("silent"));
  } catch (err) {
    offend("config", label, `driver validation threw ${(err as Error)?.name}: ${(err as Error)?.message?.slice(0, 200)}`);
    return;
  }
  countStatus("config", problems.length === 0 ? "loaded" : "driver problems");
  const unnamed = problems.find((p) => !loaded.devices.some((d) => p.startsWith(`${d.file}: `)));
  if (unnamed !== undefined) offend("config", label, `driver problem names no file: ${unnamed.slice(0, 200)}`);
}

// ---------------------------------------------------------------- memory

/**
 * A real full GC without starting node with --expose-gc: the flag can be set at run
 * time, and a new context then has `gc`. Heap used after a full GC is what the process
 * actually retains, so growth across thousands of inputs means something is kept per input.
 */
function fullGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (existing) return existing;
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

function retainedHeap(gc: () => void): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

// ---------------------------------------------------------------- the test

describe(`fault injection: 10,000 malformed inputs (seed ${SEED})`, () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let app: FastifyInstance;
  let logs: string[];
  let observer: TestMqttClient;
  let sender: TestMqttClient;
  const gc = fullGc();
  let baselineHeap = 0;
  const expectedStates: Record<string, JsonObject> = {};
  const historyBefore: Record<string, number> = {};
  const logCounts = new Map<string, number>();
  const markerLeaks: string[] = [];
  const errorSamples: string[] = [];
  const protoKeysBefore = Object.getOwnPropertyNames(Object.prototype).sort();
  /** The last error flag seen on each meta/error topic: what a WB client shows now. */
  const lastPayload = new Map<string, string>();
  /**
   * Per phase: wall and CPU time (on a shared CI machine the first swells, the second is
   * what the fuzz costs), retained heap, and the longest event-loop stall. No single input
   * may stall the bridge (and with it every device) for seconds.
   */
  const phaseTimes: Record<string, { wall_ms: number; cpu_ms: number; heap_mib: number; max_stall_ms: number }> = {};
  const MAX_STALL_MS = 2000;
  async function timed(name: string, run: () => Promise<void>): Promise<void> {
    const started = performance.now();
    const cpu = process.cpuUsage();
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    try {
      await run();
    } finally {
      loop.disable();
    }
    const used = process.cpuUsage(cpu);
    phaseTimes[name] = {
      wall_ms: Math.round(performance.now() - started),
      cpu_ms: Math.round((used.user + used.system) / 1000),
      heap_mib: Math.round((retainedHeap(gc) / 1024 / 1024) * 10) / 10,
      max_stall_ms: Math.round(loop.max / 1e6),
    };
    expect(phaseTimes[name]?.max_stall_ms, `event loop stalled during ${name} (${REPRODUCE})`).toBeLessThan(MAX_STALL_MS);
  }

  /** Counts warnings by message (and source), checks no line carries a fuzzed value, and forgets the lines. */
  function drainLogs(): void {
    for (const line of logs.splice(0)) {
      if (line.includes(MARKER) && markerLeaks.length < 5) markerLeaks.push(line.slice(0, 300));
      let entry: { level?: number; msg?: string; source?: string };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        continue;
      }
      if ((entry.level ?? 0) < 40) continue;
      if ((entry.level ?? 0) >= 50 && errorSamples.length < 10) errorSamples.push(line.slice(0, 600));
      const key = `${entry.level} ${entry.msg}${entry.source ? ` [${entry.source}]` : ""}`;
      logCounts.set(key, (logCounts.get(key) ?? 0) + 1);
    }
  }

  function logCount(key: string): number {
    return logCounts.get(key) ?? 0;
  }

  async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text === "" ? null : (JSON.parse(text) as unknown) };
  }

  async function deviceState(id: string): Promise<JsonObject> {
    const res = await api("GET", `/devices/${id}/state`);
    expect(res.status).toBe(200);
    return (res.json as { state: JsonObject }).state;
  }

  async function historyCount(key: string): Promise<number> {
    const res = await api("GET", `/state/${key}/history?limit=1000`);
    expect(res.status).toBe(200);
    return (res.json as { items: unknown[] }).items.length;
  }

  async function runMqtt(from: number, to: number): Promise<void> {
    observer.received.length = 0;
    const before = {
      rejected: logCount("40 MQTT command rejected"),
      failed: logCount("40 action failed [mqtt]"),
      scenario: scenarioWarnings(),
    };
    let expectedDeviceWarnings = 0;
    let expectedScenarioWarnings = 0;
    const flagged = new Set<string>();
    await runPool(to - from, MQTT_IN_FLIGHT, async (n) => {
      const c = mqttCase(from + n);
      if (c.warns === "device") {
        expectedDeviceWarnings += 1;
        flagged.add(`${c.topic.slice(0, -"/on".length)}/meta/error`);
      } else if (c.warns === "scenario") {
        expectedScenarioWarnings += 1;
      }
      countStatus("mqtt", c.warns);
      try {
        await sender.client.publishAsync(c.topic, c.payload, { qos: 1 });
      } catch (err) {
        offend("mqtt", c.label, `publish failed: ${(err as Error).message}`);
      }
    });
    // One valid command after the junk, from the same client: the bridge handles a client's
    // messages in order, so its answer means every junk message before it was handled.
    const device = pick(caseRng("mqtt", to + 1_000_000), DEVICES);
    const current = expectedStates[device]?.volume as number;
    const level = current === 33 ? 34 : 33;
    const mark = observer.received.length;
    const after = (m: { payload: string }, payload: string) =>
      m.payload === payload && observer.received.indexOf(m as (typeof observer.received)[number]) >= mark;
    await sender.publish(`/devices/${device}/controls/volume/on`, String(level));
    await observer.waitFor(`/devices/${device}/controls/volume`, (m) => after(m, String(level)), 10_000);
    await observer.waitFor(`/devices/${device}/controls/volume/meta/error`, (m) => after(m, ""), 10_000);
    expectedStates[device] = { ...expectedStates[device], volume: level };
    historyBefore[`device:${device}`] = (historyBefore[`device:${device}`] ?? 0) + 1;
    drainLogs();

    const deviceWarnings = logCount("40 MQTT command rejected") - before.rejected + (logCount("40 action failed [mqtt]") - before.failed);
    expect(deviceWarnings, `one warning per junk command to our devices (${REPRODUCE})`).toBe(expectedDeviceWarnings);
    expect(scenarioWarnings() - before.scenario, `one warning per junk command to /devices/scenarios (${REPRODUCE})`).toBe(
      expectedScenarioWarnings,
    );
    // The flag a refused command leaves is "w" now (retained); only the valid command cleared its own control's.
    flagged.delete(`/devices/${device}/controls/volume/meta/error`);
    const missing = [...flagged].filter((t) => lastPayload.get(t) !== "w");
    expect(missing.slice(0, 10), `every control that got junk is flagged w (${REPRODUCE})`).toEqual([]);
    observer.received.length = 0;
  }

  function scenarioWarnings(): number {
    return (
      logCount("40 MQTT command rejected: unknown scenario") +
      logCount("40 MQTT command for a role control the active scenario does not have")
    );
  }

  async function runHttp(category: "bodies" | "queries", from: number, to: number): Promise<void> {
    const build = category === "bodies" ? bodyCase : queryCase;
    await runPool(to - from, HTTP_CONCURRENCY, (n) => sendHttp(category, build(from + n)));
    drainLogs();
  }

  async function runHeaders(from: number, to: number): Promise<void> {
    await runPool(to - from, HTTP_CONCURRENCY, async (n) => {
      const i = from + n;
      const r = caseRng("headers", i);
      if (chance(r, 0.33)) await runRawCase(i, r);
      else await sendHttp("headers", await headerFetchCase(r, i));
    });
    drainLogs();
  }

  let configRoot = "";
  const registry = new DriverRegistry(builtinDrivers);

  async function runConfig(from: number, to: number): Promise<void> {
    for (let i = from; i < to; i++) await runConfigCase(i, configRoot, registry);
  }

  beforeAll(async () => {
    console.log(`fuzz seed ${SEED}; reproduce with: ${REPRODUCE}`);
    dir = await tempDir("wb-fuzz-");
    broker = await startTestBroker();
    const config = await testConfig(
      dir.path,
      broker.url,
      {
        system: {
          mqtt: { client_id: `bridge-${SEED}`, reconnect_min_ms: 100 },
          persistence: { db_path: join(dir.path, "state.db"), history: { max_per_key: 100_000 }, backups: { interval_s: 0 } },
          logging: { level: "debug" },
          rate_limit: { max: 0 },
          auth: { mode: "jwt", jwt: { hs256_secret_env: SECRET_ENV, issuer: TEST_ISSUER, audience: TEST_AUDIENCE } },
        },
        devices: [simulatedDevice("tv"), simulatedDevice("amp")],
        scenarios: [
          {
            scenario_id: "movie",
            name: "Movie",
            roles: ROLES,
            devices: ["tv", "amp"],
            startup: [
              { role: "display", action: "power_on" },
              { role: "audio", action: "power_on" },
            ],
            shutdown: [
              { role: "display", action: "power_off" },
              { role: "audio", action: "power_off" },
            ],
          },
          {
            scenario_id: "music",
            name: "Music",
            roles: { audio: "amp" },
            devices: ["amp"],
            startup: [{ role: "audio", action: "input", params: { input: "tv" } }],
          },
        ],
      },
      { [SECRET_ENV]: TEST_SECRET },
    );
    const started = await startApp(config);
    app = started.app;
    logs = started.logs;
    await app.listen({ host: "127.0.0.1", port: 0 });
    port = (app.server.address() as AddressInfo).port;
    base = `http://127.0.0.1:${port}`;
    token = await hsToken({ claims: { scope: "admin" }, expiresIn: 3600 });
    observer = await TestMqttClient.connect(broker.url);
    // Live messages only: the retained replay for this subscription may arrive after newer live ones.
    observer.client.on("message", (topic, payload, packet) => {
      if (!packet.retain && topic.endsWith("/meta/error")) lastPayload.set(topic, payload.toString("utf8"));
    });
    await observer.subscribe("/devices/#");
    sender = await TestMqttClient.connect(broker.url);

    // The state the valid actions set; the fuzz must leave it exactly so.
    expect((await api("POST", "/scenario/start", { id: "movie" })).status).toBe(200);
    for (const [device, action, params] of [
      ["tv", "volume", { level: 42 }],
      ["tv", "input", { input: "hdmi2" }],
      ["amp", "volume", { level: 13 }],
      ["amp", "input", { input: "tv" }],
      ["amp", "power_off", {}],
    ] as const) {
      expect((await api("POST", `/devices/${device}/action`, { action, params })).status).toBe(200);
    }
    for (const id of DEVICES) expectedStates[id] = await deviceState(id);
    for (const key of ["device:tv", "device:amp", "scenario:last"]) historyBefore[key] = await historyCount(key);
    expect(expectedStates).toEqual({
      tv: { power: true, volume: 42, muted: false, input: "hdmi2" },
      amp: { power: false, volume: 13, muted: false, input: "tv" },
    });

    configRoot = join(dir.path, "config-fuzz");
    await mkdir(join(configRoot, "config", "devices"), { recursive: true });
    await mkdir(join(configRoot, "config", "scenarios"), { recursive: true });
    for (const [path, text] of BASE_FILES) await writeFile(join(configRoot, "config", path), text);
    // The mutations start from a config that is valid in every respect.
    const baseConfig = await loadConfig({ configDir: "config", cwd: configRoot, env: {} });
    expect(registry.validate(baseConfig.devices, createLogger("silent"))).toEqual([]);
    drainLogs();
  }, 30_000);

  afterAll(async () => {
    console.log(`fuzz seed ${SEED}: answers by category and status:`, Object.fromEntries([...statusCounts].sort()));
    for (const [category, { count, first }] of offenders) console.log(`${count} offenders in ${category}, the first:`, first);
    if (errorSamples.length > 0) console.log("error log lines (first 10):", errorSamples);
    console.log("phase times:", phaseTimes, "slowest HTTP requests:", slowest);
    await sender?.close();
    await observer?.close();
    await app?.close();
    await broker?.close();
    await dir?.remove();
  }, 30_000);

  function expectNoOffenders(category: Category): void {
    const mine = offenders.get(category) ?? { count: 0, first: [] };
    expect(
      mine.first.map((o) => `${o.label}: ${o.problem}`),
      `${mine.count} offenders in ${category} (${REPRODUCE})`,
    ).toEqual([]);
  }

  it("warm-up: the first inputs of every category, then the memory baseline", async () => {
    await timed("warm-up", async () => {
      await runMqtt(0, WARMUP);
      await runHttp("bodies", 0, WARMUP);
      await runHttp("queries", 0, WARMUP);
      await runHeaders(0, WARMUP);
      await runConfig(0, WARMUP);
    });
    baselineHeap = retainedHeap(gc);
    for (const c of CATEGORIES) expectNoOffenders(c);
  }, 60_000);

  it(`MQTT /on payloads: ${COUNTS.mqtt} junk commands are refused with a warning and a WB error flag`, async () => {
    await timed("mqtt", () => runMqtt(WARMUP, COUNTS.mqtt));
    expectNoOffenders("mqtt");
  }, 60_000);

  it(`HTTP bodies: ${COUNTS.bodies} malformed actions, scenario commands and state writes`, async () => {
    await timed("bodies", () => runHttp("bodies", WARMUP, COUNTS.bodies));
    expectNoOffenders("bodies");
  }, 60_000);

  it(`query strings: ${COUNTS.queries} junk queries on the list, history and read routes`, async () => {
    await timed("queries", () => runHttp("queries", WARMUP, COUNTS.queries));
    expectNoOffenders("queries");
  }, 60_000);

  it(`headers: ${COUNTS.headers} bad content types, lengths, credentials, ids and raw HTTP`, async () => {
    await timed("headers", () => runHeaders(WARMUP, COUNTS.headers));
    expectNoOffenders("headers");
  }, 60_000);

  it(`config files: ${COUNTS.config} mutated files load or fail with a ConfigError naming file and field`, async () => {
    await timed("config", () => runConfig(WARMUP, COUNTS.config));
    expectNoOffenders("config");
    // Every case put its files back: the directory holds the valid config again.
    const restored = await loadConfig({ configDir: "config", cwd: configRoot, env: {} });
    expect(registry.validate(restored.devices, createLogger("silent"))).toEqual([]);
    expect(restored.devices.map((d) => d.device_id).sort()).toEqual(Object.keys(BASE_CONFIG.devices).sort());
  }, 60_000);

  it("afterwards: alive, unchanged, nothing leaked, and valid commands still work", async () => {
    const total = Object.values(COUNTS).reduce((a, b) => a + b, 0);
    expect(total).toBe(10_000);

    // Nothing the fuzz sent changed a device or the scenario (the MQTT phases' own valid commands aside).
    for (const id of DEVICES) expect(await deviceState(id), `device ${id} (${REPRODUCE})`).toEqual(expectedStates[id]);
    for (const [key, count] of Object.entries(historyBefore))
      expect(await historyCount(key), `commits of ${key} (${REPRODUCE})`).toBe(count);
    expect(((await api("GET", "/scenario/state")).json as { scenario_id: string }).scenario_id).toBe("movie");
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoKeysBefore);
    expect(({} as Record<string, unknown>).polluted_zq).toBeUndefined();

    // Still serving, still executing.
    const health = await api("GET", "/health");
    expect(health.status).toBe(200);
    expect((health.json as { status: string }).status).toBe("ok");
    const action = await api("POST", "/devices/amp/action", { action: "volume", params: { level: 58 } });
    expect(action.status).toBe(200);
    expect((action.json as { state: JsonObject }).state.volume).toBe(58);
    await sender.publish("/devices/tv/controls/power/on", "0");
    await observer.waitFor("/devices/tv/controls/power", (m) => m.payload === "0", 10_000);
    expect((await deviceState("tv")).power).toBe(false);

    // Junk left no retained topics behind: a new WB client sees error flags of real controls only.
    // One SUBSCRIBE with the sentinel last: the broker sends the retained flags before it.
    // `muted` is read-only: a command to it is refused and leaves a retained "w" the probe must see.
    const mark = observer.received.length;
    await sender.publish("/devices/tv/controls/muted/on", "1");
    await observer.waitFor(
      "/devices/tv/controls/muted/meta/error",
      (m) => m.payload === "w" && observer.received.indexOf(m) >= mark,
      10_000,
    );
    const probe = await TestMqttClient.connect(broker.url);
    try {
      await sender.publish("/fuzz/sentinel", "end", true);
      await probe.client.subscribeAsync(["/devices/+/controls/+/meta/error", "/fuzz/sentinel"], { qos: 1 });
      await probe.waitFor("/fuzz/sentinel", () => true, 10_000);
      const real = new Set(["power", "volume", "muted", "input", "power_on", "power_off", "volume_up"]);
      // The probe does see retained flags (so it would see stray ones too).
      expect(probe.on("/devices/tv/controls/muted/meta/error").map((m) => m.payload)).toEqual(["w"]);
      const stray = probe
        .on("/devices/+/controls/+/meta/error")
        .map((m) => m.topic.split("/"))
        .filter(([, , device, , control]) => (DEVICES as readonly string[]).includes(device ?? "") && !real.has(control ?? ""));
      expect(stray.map((t) => t.join("/")).slice(0, 10), "retained flags for controls that do not exist").toEqual([]);
    } finally {
      await probe.close();
    }

    drainLogs();
    expect(markerLeaks, "fuzzed values (state values, params) must never be logged").toEqual([]);
    expect(logCount("50 request failed"), "5xx logged").toBe(0);

    // Retained heap after a full GC, from after the warm-up (every code path and cache
    // already touched) to after ~9,500 more inputs. A leak of even 2 KB per input would
    // add ~19 MB; measured growth without one is about 2 MB (JIT code, pools, the SQLite
    // rows' history the queries read). heapUsed after a forced GC, not RSS: RSS keeps
    // whatever the allocator once took and would hide or fake a leak.
    const growth = retainedHeap(gc) - baselineHeap;
    console.log(`retained heap growth over the fuzz: ${(growth / 1024 / 1024).toFixed(1)} MiB`);
    expect(growth, "heap retained after GC must not grow with the number of inputs").toBeLessThan(16 * 1024 * 1024);
  }, 30_000);
});

// ---------------------------------------------------------------- MQTT cases

interface MqttCase {
  label: string;
  topic: string;
  payload: string | Buffer;
  /** What the bridge must say about it: a device warning (+ WB flag), a scenario-device warning, or nothing (not ours). */
  warns: "device" | "scenario" | "none";
}

const CONTROL_KINDS: Record<string, ControlKind> = { power: "switch", volume: "volume", input: "input", muted: "readonly" };

function junkPayload(r: Rng): string | Buffer {
  const k = r();
  if (k < 0.08) return "";
  if (k < 0.2) return junkBytes(r, 64);
  if (k < 0.23) {
    return pick(r, [
      // Long digit runs that end as no number: a backtracking number pattern takes seconds on
      // these (the event-loop check sees it) rather than minutes (which no timeout could end).
      () => `${"1".repeat(int(r, 20_000, 80_000))}x`,
      () => `${"9".repeat(int(r, 400, 80_000))}`,
      () => `${"1".repeat(int(r, 1000, 40_000))}.${"1".repeat(int(r, 1000, 40_000))}e`,
      () => junkText(r, 300_000),
      () => "hdmi1".repeat(int(r, 1000, 100_000)),
    ])();
  }
  if (k < 0.45) {
    return pick(r, [
      "101",
      "-1",
      "1e3",
      "100.5",
      "99.99",
      "1e-7",
      "Infinity",
      "-Infinity",
      "NaN",
      "0x10",
      "1_0",
      "１０",
      "٣",
      String(2 ** 53 + 1),
      "-0.5",
      ".",
      "+",
      "-",
      "e5",
      "1e",
      "5..5",
      "--5",
      "1 0",
      "50%",
      "2",
      "-0.0000001",
      " 1 1",
    ]);
  }
  if (k < 0.65) {
    return pick(r, [
      "yes",
      "no",
      "on",
      "off",
      "TRUE",
      "True",
      "null",
      "undefined",
      "[]",
      "{}",
      '{"level":5}',
      '{"on":true}',
      "hdmi3",
      "HDMI1",
      " hdmi1",
      "hdmi1\n",
      "hdmі1",
      "tv\u0000",
      "\u0000",
      "1\u200b",
      "１",
      "tv ",
      "Movie",
      "movie\u200b",
      "NONE",
    ]);
  }
  if (k < 0.75) return `${String(int(r, -1e6, 1e6))}${pick(r, ["", ".5", "e2", "x"])}`;
  return `${chance(r, 0.3) ? MARKER : ""}${junkText(r, 60)}`;
}

function mqttCase(i: number): MqttCase {
  const r = caseRng("mqtt", i);
  // Seed corpus: a payload that once blocked the event loop (backtracking number pattern) runs on every seed.
  if (i === 0)
    return {
      label: "mqtt#0 corpus: long digit run",
      topic: "/devices/tv/controls/volume/on",
      payload: `${"1".repeat(60_000)}x`,
      warns: "device",
    };
  const k = r();
  if (k < 0.78) {
    const device = pick(r, DEVICES);
    const known = chance(r, 0.85);
    const control = known ? pick(r, Object.keys(CONTROL_KINDS)) : junkLevel(r);
    const kind: ControlKind = known ? (CONTROL_KINDS[control] as ControlKind) : "unknown";
    // The names of pushbuttons (power_on, ...) are skipped: any payload is a press.
    if (!known && (Object.hasOwn(COMMANDS, control) || Object.hasOwn(CONTROL_KINDS, control))) return mqttCase(i + 7_000_000);
    for (;;) {
      const payload = junkPayload(r);
      const text = typeof payload === "string" ? Buffer.from(payload).toString("utf8") : payload.toString("utf8");
      if (payloadExecutes(kind, text)) continue;
      const bytes = typeof payload === "string" ? Buffer.byteLength(payload) : payload.length;
      return {
        label: `mqtt#${i} ${device}/${control.slice(0, 30)}`,
        topic: `/devices/${device}/controls/${control}/on`,
        payload,
        // An empty message clears a retained command: ignored, no warning, no flag.
        warns: bytes === 0 ? "none" : "device",
      };
    }
  }
  if (k < 0.92) {
    const scenarioControl = chance(r, 0.6);
    const control = scenarioControl
      ? "scenario"
      : chance(r, 0.3)
        ? `${pick(r, Object.keys(ROLES))}_${pick(r, ["volume", "input", "power", "nope"])}`
        : junkLevel(r);
    if (!scenarioControl && (control === "scenario" || ROLE_CONTROLS.has(control))) return mqttCase(i + 8_000_000);
    for (;;) {
      const payload = junkPayload(r);
      const text = (typeof payload === "string" ? Buffer.from(payload) : payload).toString("utf8").trim();
      if (scenarioControl && (text === "none" || SCENARIO_IDS.includes(text))) continue;
      return {
        label: `mqtt#${i} scenarios/${control.slice(0, 30)}`,
        topic: `/devices/scenarios/controls/${control}/on`,
        payload,
        warns: text === "" ? "none" : "scenario",
      };
    }
  }
  // Other devices on the same broker are not the bridge's: it must ignore them (and survive).
  const device = junkLevel(r);
  if ([...DEVICES, "scenarios"].includes(device)) return mqttCase(i + 9_000_000);
  return { label: `mqtt#${i} foreign`, topic: `/devices/${device}/controls/${junkLevel(r)}/on`, payload: junkPayload(r), warns: "none" };
}
