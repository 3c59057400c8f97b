import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import type { z } from "zod";
import { ConfigError, errorMessage } from "../shared/errors.js";
import { type DeviceDefinition, deviceConfigSchema } from "./device.js";
import { describeIssues } from "./issues.js";
import { paramsSchema } from "./params.js";
import { type ScenarioDefinition, type ScenarioStep, type StepList, scenarioConfigSchema } from "./scenario.js";
import { roleButtonActions, roleControlId, SCENARIO_DEVICE_ID } from "./scenario-wb-names.js";
import { logLevelSchema, type SystemConfig, systemConfigSchema } from "./system.js";

export interface AppConfig {
  /** Absolute path of the configuration directory. */
  configDir: string;
  system: SystemConfig;
  devices: readonly DeviceDefinition[];
  scenarios: readonly ScenarioDefinition[];
  /** Resolved absolute paths derived from `system.persistence`. */
  paths: { db: string; backups: string };
  /** Secrets read from the environment or key files: never logged or returned by the API. */
  secrets: {
    encryptionKeys: string | null;
    /** The PostgreSQL URL (with its password) when `persistence.backend` is `postgres`; null otherwise. */
    databaseUrl: string | null;
    /** The Redis URL (it may carry a password) when `persistence.cache` is configured; null otherwise. */
    cacheRedisUrl: string | null;
    /** The HS256 shared secret from the variable `auth.jwt.hs256_secret_env` names; null when unused. */
    jwtSecret: string | null;
  };
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadConfigOptions {
  /** Defaults to `CONFIG_DIR` or `config`, relative to `cwd`. */
  configDir?: string;
  env?: Env;
  cwd?: string;
  /**
   * The drivers' checks of the valid device files (their `config`, payload templates).
   * Run here so their problems are listed with the schema and scenario ones in one run.
   */
  checkDevices?: (devices: readonly DeviceDefinition[]) => string[];
}

/**
 * Reads and validates every configuration file, then applies environment overrides.
 * All problems are collected and reported together, each naming its file and field.
 * This is the only module that reads `process.env` (through the `env` argument).
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<AppConfig> {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const configDir = resolve(cwd, options.configDir ?? env.CONFIG_DIR ?? "config");
  const problems: string[] = [];
  const display = (file: string) => relative(cwd, file) || file;

  await checkConfigDir(configDir, display(configDir));

  const systemFile = join(configDir, "system.json");
  const rawSystem = await readJson(systemFile, display(systemFile), problems, { optional: true });
  const system = parse(systemConfigSchema, rawSystem ?? {}, display(systemFile), problems);

  const devices: DeviceDefinition[] = [];
  // Ids of device files that failed validation: scenarios naming them get no follow-on "unknown device".
  const invalidDeviceIds = new Set<string>();
  for (const [file, raw] of await readJsonFiles(join(configDir, "devices"), problems, display)) {
    const device = parse(deviceConfigSchema, raw, display(file), problems);
    if (device) devices.push({ ...device, file: display(file) });
    else {
      const id = readableDeviceId(raw);
      if (id !== undefined) invalidDeviceIds.add(id);
    }
  }

  const scenarios: ScenarioDefinition[] = [];
  for (const [file, raw] of await readJsonFiles(join(configDir, "scenarios"), problems, display)) {
    const scenario = parse(scenarioConfigSchema, raw, display(file), problems);
    if (scenario) scenarios.push({ ...scenario, file: display(file) });
  }

  problems.push(...checkUniqueIds(devices, "device_id", (d) => d.device_id));
  problems.push(...checkUniqueIds(scenarios, "scenario_id", (s) => s.scenario_id));
  problems.push(...checkScenarioReferences(scenarios, devices, invalidDeviceIds));
  if (options.checkDevices) problems.push(...options.checkDevices(devices));

  const overridden = system ? applyEnvOverrides(system, env, problems) : undefined;
  const jwtSecret = overridden ? checkAuth(overridden, env, problems) : null;
  const databaseUrl = overridden ? readDatabaseUrl(overridden, env, problems) : null;
  const cacheRedisUrl = overridden ? readCacheUrl(overridden, env, problems) : null;
  if (problems.length > 0 || !overridden) throw new ConfigError(problems);

  overridden.persistence.db_path = isAbsolute(overridden.persistence.db_path)
    ? overridden.persistence.db_path
    : resolve(cwd, overridden.persistence.db_path);
  const backups = overridden.persistence.backups.dir
    ? resolve(cwd, overridden.persistence.backups.dir)
    : join(dirname(overridden.persistence.db_path), "backups");
  const encryptionKeys = await readEncryptionKeys(overridden, env, cwd);

  return deepFreeze({
    configDir,
    system: overridden,
    devices,
    scenarios,
    paths: { db: overridden.persistence.db_path, backups },
    secrets: { encryptionKeys, jwtSecret, databaseUrl, cacheRedisUrl },
  });
}

/** RFC 7518 §3.2: an HS256 key must have at least as many bits as the hash (256). */
const MIN_HS256_SECRET_BYTES = 32;

/** 127.0.0.0/8, ::1 (also bracketed or IPv4-mapped) and localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice("::ffff:".length) : h;
  const octets = v4.split(".");
  return octets.length === 4 && octets[0] === "127" && octets.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255);
}

/**
 * The auth section against the rest: `mode: none` only on loopback unless
 * `allow_insecure_remote`; `mode: jwt` needs a key source. Returns the HS256 secret
 * (only ever read from the named variable; never put into a problem message).
 */
function checkAuth(system: SystemConfig, env: Env, problems: string[]): string | null {
  const { auth, http } = system;
  if (auth.mode === "none") {
    if (!isLoopbackHost(http.host) && !auth.allow_insecure_remote) {
      problems.push(
        `http.host: "${http.host}" (or HTTP_HOST) is not a loopback address while auth.mode is "none"; ` +
          `use auth.mode "jwt", bind to 127.0.0.1, or set auth.allow_insecure_remote: true`,
      );
    }
    return null;
  }
  const { hs256_secret_env: secretEnv, oidc_issuer, jwks_url } = auth.jwt;
  let secret: string | null = null;
  if (secretEnv !== undefined) {
    const value = env[secretEnv];
    if (value === undefined || value === "") {
      problems.push(`auth.jwt.hs256_secret_env: environment variable ${secretEnv} is not set`);
    } else if (Buffer.byteLength(value, "utf8") < MIN_HS256_SECRET_BYTES) {
      problems.push(`auth.jwt.hs256_secret_env: the secret in ${secretEnv} is shorter than ${MIN_HS256_SECRET_BYTES} bytes`);
    } else {
      secret = value;
    }
  }
  if (secretEnv === undefined && oidc_issuer === undefined && jwks_url === undefined) {
    problems.push(`auth.jwt: auth.mode "jwt" needs at least one of hs256_secret_env, oidc_issuer or jwks_url`);
  }
  return secret;
}

/** The key list text from the configured variable, else the key file; null when neither is set. */
async function readEncryptionKeys(system: SystemConfig, env: Env, cwd: string): Promise<string | null> {
  const { key_env, key_file } = system.persistence.encryption;
  const fromEnv = env[key_env];
  // Set but empty is a mistake (an unset secret in a unit file or compose file), not a
  // request for plain text: starting unencrypted would write values in the clear.
  if (fromEnv !== undefined && fromEnv.trim() === "") {
    throw new ConfigError([`${key_env}: the variable is set but empty; set the key list, or unset it to store values unencrypted`]);
  }
  if (fromEnv !== undefined) return fromEnv;
  if (!key_file) return null;
  try {
    return await readFile(resolve(cwd, key_file), "utf8");
  } catch (err) {
    throw new ConfigError([`persistence.encryption.key_file: cannot read ${key_file}: ${errorMessage(err)}`]);
  }
}

function applyEnvOverrides(system: SystemConfig, env: Env, problems: string[]): SystemConfig {
  const out = structuredClone(system);
  if (env.STATE_PATH) out.persistence.db_path = env.STATE_PATH;
  if (env.STATE_BACKEND) {
    if (env.STATE_BACKEND === "sqlite" || env.STATE_BACKEND === "postgres") out.persistence.backend = env.STATE_BACKEND;
    else problems.push(`STATE_BACKEND: expected "sqlite" or "postgres", got "${env.STATE_BACKEND}"`);
  }
  if (env.MQTT_URL) {
    if (!/^mqtts?:\/\/[^\s]+$/.test(env.MQTT_URL)) {
      problems.push("MQTT_URL: expected mqtt://host:port or mqtts://host:port");
    }
    // An explicit broker means the embedded one is not wanted.
    out.mqtt.url = env.MQTT_URL;
    out.mqtt.embedded.enabled = false;
  }
  if (env.BACKUP_INTERVAL !== undefined && env.BACKUP_INTERVAL !== "") {
    const seconds = Number(env.BACKUP_INTERVAL);
    if (!Number.isInteger(seconds) || seconds < 0) {
      problems.push(`BACKUP_INTERVAL: expected a whole number of seconds (0 disables), got "${env.BACKUP_INTERVAL}"`);
    } else {
      out.persistence.backups.interval_s = seconds;
    }
  }
  if (env.HTTP_HOST) out.http.host = env.HTTP_HOST;
  const httpPort = portFromEnv(env, "HTTP_PORT", problems);
  if (httpPort !== undefined) out.http.port = httpPort;
  const brokerPort = portFromEnv(env, "MQTT_EMBEDDED_PORT", problems);
  if (brokerPort !== undefined) out.mqtt.embedded.port = brokerPort;
  if (env.LOG_LEVEL) {
    const level = logLevelSchema.safeParse(env.LOG_LEVEL);
    if (level.success) out.logging.level = level.data;
    else problems.push(`LOG_LEVEL: expected one of ${logLevelSchema.options.join(", ")}, got "${env.LOG_LEVEL}"`);
  }
  return out;
}

/** The server URL for the postgres backend, from the variable the config names; never put into a problem message. */
function readDatabaseUrl(system: SystemConfig, env: Env, problems: string[]): string | null {
  if (system.persistence.backend !== "postgres") return null;
  const name = system.persistence.postgres.url_env;
  const url = env[name];
  if (url === undefined || url === "") {
    problems.push(`persistence.postgres.url_env: environment variable ${name} is not set (persistence.backend is "postgres")`);
    return null;
  }
  if (!/^postgres(ql)?:\/\/\S+$/.test(url)) {
    problems.push(`persistence.postgres.url_env: ${name} must be a postgres:// or postgresql:// URL`);
    return null;
  }
  return url;
}

/** The Redis URL for the state cache, from the variable the config names; never put into a problem message. */
function readCacheUrl(system: SystemConfig, env: Env, problems: string[]): string | null {
  const cache = system.persistence.cache;
  if (!cache) return null;
  const name = cache.redis_url_env;
  const url = env[name];
  if (url === undefined || url === "") {
    problems.push(`persistence.cache.redis_url_env: environment variable ${name} is not set (persistence.cache is configured)`);
    return null;
  }
  if (!isRedisUrl(url)) {
    problems.push(`persistence.cache.redis_url_env: ${name} must be a redis:// or rediss:// URL (redis://[user:password@]host:port[/db])`);
    return null;
  }
  return url;
}

function isRedisUrl(url: string): boolean {
  if (!/^rediss?:\/\/\S+$/.test(url)) return false;
  try {
    const parsed = new URL(url);
    return parsed.hostname !== "" && /^\/?(\d+)?$/.test(parsed.pathname);
  } catch {
    return false;
  }
}

/** A port from the environment; unset or empty leaves the configured one. */
function portFromEnv(env: Env, name: string, problems: string[]): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const port = Number(raw);
  if (Number.isInteger(port) && port >= 0 && port <= 65535) return port;
  problems.push(`${name}: expected an integer from 0 to 65535, got "${raw}"`);
  return undefined;
}

function checkUniqueIds<T extends { file: string }>(items: T[], field: string, id: (item: T) => string): string[] {
  const seen = new Map<string, string>();
  const problems: string[] = [];
  for (const item of items) {
    const first = seen.get(id(item));
    if (first) problems.push(`${item.file}: ${field}: "${id(item)}" is already defined in ${first}`);
    else seen.set(id(item), item.file);
  }
  return problems;
}

/**
 * What the scenario schema cannot see on its own: the devices and their commands.
 * Problems name the file and the step, e.g. `movie.json: startup[1].action: ...`.
 */
function readableDeviceId(raw: unknown): string | undefined {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return undefined;
  const id = (raw as Record<string, unknown>).device_id;
  return typeof id === "string" ? id : undefined;
}

function checkScenarioReferences(
  scenarios: ScenarioDefinition[],
  devices: DeviceDefinition[],
  invalidDeviceIds: ReadonlySet<string>,
): string[] {
  const byId = new Map(devices.map((d) => [d.device_id, d]));
  const problems: string[] = [];
  for (const device of devices) {
    if (device.device_id === SCENARIO_DEVICE_ID) {
      problems.push(`${device.file}: device_id: "${SCENARIO_DEVICE_ID}" is reserved for the scenario system's WB device`);
    }
  }
  for (const scenario of scenarios) {
    const where = scenario.file;
    scenario.devices.forEach((id, i) => {
      if (!byId.has(id) && !invalidDeviceIds.has(id)) problems.push(`${where}: devices[${i}]: unknown device "${id}"`);
    });
    for (const [role, id] of Object.entries(scenario.roles)) {
      if (!scenario.devices.includes(id)) {
        problems.push(`${where}: roles.${role}: device "${id}" is not in this scenario's devices`);
      }
    }
    problems.push(...checkRoleControls(scenario, byId));
    for (const list of ["startup", "shutdown"] as const) {
      for (const [i, step] of scenario[list].entries()) {
        // The device's own file already reported why it is invalid; its commands cannot be checked.
        if (!byId.has(step.device) && invalidDeviceIds.has(step.device)) continue;
        problems.push(...checkStep(scenario, list, i, step, byId));
      }
    }
  }
  return problems;
}

function checkStep(
  scenario: ScenarioDefinition,
  list: StepList,
  index: number,
  step: ScenarioStep,
  byId: ReadonlyMap<string, DeviceDefinition>,
): string[] {
  const at = `${scenario.file}: ${list}[${index}]`;
  // A role step's device was checked with the role (roles.<role>); say it once.
  const target = step.role !== undefined ? `role "${step.role}" (device "${step.device}")` : `device "${step.device}"`;
  const device = byId.get(step.device);
  if (!device) return step.role !== undefined ? [] : [`${at}.device: unknown device "${step.device}"`];
  const problems: string[] = [];
  if (step.role === undefined && !scenario.devices.includes(step.device)) {
    problems.push(`${at}.device: "${step.device}" is not in this scenario's devices`);
  }
  const command = device.commands[step.action];
  if (!command) {
    const known = Object.keys(device.commands).join(", ") || "none";
    problems.push(`${at}.action: ${target} has no command "${step.action}" (known: ${known})`);
    return problems;
  }
  const params = paramsSchema(command.params).safeParse(step.params ?? {});
  if (!params.success) {
    problems.push(...describeIssues(scenario.file, params.error.issues, [list, index, "params"]));
  }
  return problems;
}

/** Two role pushbuttons with one WB control name would shadow each other on MQTT. */
function checkRoleControls(scenario: ScenarioDefinition, byId: ReadonlyMap<string, DeviceDefinition>): string[] {
  const seen = new Map<string, string>();
  const problems: string[] = [];
  for (const [role, id] of Object.entries(scenario.roles)) {
    const device = byId.get(id);
    if (!device) continue;
    for (const action of roleButtonActions(device)) {
      const control = roleControlId(role, action);
      const first = seen.get(control);
      if (first) {
        problems.push(`${scenario.file}: roles.${role}: WB control "${control}" is also made by role "${first}"; rename one of the roles`);
      } else {
        seen.set(control, role);
      }
    }
  }
  return problems;
}

/**
 * A mistyped or unmounted CONFIG_DIR must not start the bridge on built-in defaults
 * (no devices, a broker nobody configured): missing, not a directory, or holding neither
 * system.json nor a device file is a configuration error naming the path.
 */
async function checkConfigDir(dir: string, shown: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new ConfigError([`${shown}: configuration directory does not exist`]);
    throw new ConfigError([`${shown}: cannot read configuration directory: ${errorMessage(err)}`]);
  }
  if (!isDir) throw new ConfigError([`${shown}: configuration directory is not a directory`]);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new ConfigError([`${shown}: cannot read configuration directory: ${errorMessage(err)}`]);
  }
  if (names.includes("system.json")) return;
  const deviceFiles = names.includes("devices") ? await jsonFiles(join(dir, "devices"), [], (f) => f) : [];
  if (deviceFiles.length === 0) {
    throw new ConfigError([`${shown}: configuration directory is empty (no system.json and no devices/*.json)`]);
  }
}

async function jsonFiles(dir: string, problems: string[], display: (f: string) => string): Promise<string[]> {
  try {
    const names = await readdir(dir);
    return names
      .filter((n) => n.endsWith(".json"))
      .sort()
      .map((n) => join(dir, n));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    problems.push(`${display(dir)}: cannot read directory: ${errorMessage(err)}`);
    return [];
  }
}

// Reading files one by one dominates start-up with thousands of devices; a bounded
// number in flight keeps it fast without running out of file descriptors.
const READ_CONCURRENCY = 64;

/** Every `*.json` in `dir`, parsed, in file-name order; unreadable ones are reported. */
async function readJsonFiles(dir: string, problems: string[], display: (f: string) => string): Promise<Array<[string, unknown]>> {
  const files = await jsonFiles(dir, problems, display);
  const out: Array<[string, unknown]> = [];
  for (let i = 0; i < files.length; i += READ_CONCURRENCY) {
    const batch = files.slice(i, i + READ_CONCURRENCY);
    // Each file reports into its own list so problems stay in file order.
    const read = await Promise.all(
      batch.map(async (file) => {
        const own: string[] = [];
        return { file, own, raw: await readJson(file, display(file), own) };
      }),
    );
    for (const { file, own, raw } of read) {
      problems.push(...own);
      if (raw !== undefined) out.push([file, raw]);
    }
  }
  return out;
}

async function readJson(file: string, shown: string, problems: string[], options: { optional?: boolean } = {}): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (options.optional && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    problems.push(`${shown}: cannot read: ${errorMessage(err)}`);
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    problems.push(`${shown}: invalid JSON: ${errorMessage(err)}`);
    return undefined;
  }
}

function parse<T>(schema: z.ZodType<T>, raw: unknown, shown: string, problems: string[]): T | undefined {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  problems.push(...describeIssues(shown, result.error.issues));
  return undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
