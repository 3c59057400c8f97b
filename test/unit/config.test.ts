import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../app/config/loader.js";
import { DriverRegistry } from "../../app/devices/driver.js";
import { simulatedDriverFactory } from "../../app/devices/drivers/simulated.js";
import { builtinDrivers } from "../../app/lifespan.js";
import { createLogger } from "../../app/observability/logger.js";
import { ConfigError } from "../../app/shared/errors.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";

async function problemsOf(promise: Promise<unknown>): Promise<string[]> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).problems;
}

describe("loadConfig", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.remove();
  });

  it("refuses a missing, non-directory or empty configuration directory, naming the path", async () => {
    const missing = join(dir.path, "no-such-config");
    expect(await problemsOf(loadConfig({ configDir: missing, env: {}, cwd: dir.path }))).toEqual([
      "no-such-config: configuration directory does not exist",
    ]);
    await writeFile(join(dir.path, "a-file"), "{}");
    expect(await problemsOf(loadConfig({ configDir: join(dir.path, "a-file"), env: {}, cwd: dir.path }))).toEqual([
      "a-file: configuration directory is not a directory",
    ]);
    await mkdir(join(dir.path, "empty", "devices"), { recursive: true });
    expect(await problemsOf(loadConfig({ configDir: join(dir.path, "empty"), env: {}, cwd: dir.path }))).toEqual([
      "empty: configuration directory is empty (no system.json and no devices/*.json)",
    ]);
    // A system.json alone is a deliberate configuration (a bridge with no devices yet).
    await writeFile(join(dir.path, "empty", "system.json"), "{}");
    const config = await loadConfig({ configDir: join(dir.path, "empty"), env: {}, cwd: dir.path });
    expect(config.devices).toEqual([]);
  });

  it("applies defaults: data/state_store.db under the working directory, full sync, loopback HTTP", async () => {
    const configDir = await writeConfigDir(dir.path, { devices: [simulatedDevice("tv")] });
    const config = await loadConfig({ configDir, env: {}, cwd: dir.path });
    expect(config.system.persistence.db_path).toBe(join(dir.path, "data/state_store.db"));
    expect(config.system.persistence.synchronous).toBe("full");
    expect(config.system.http.host).toBe("127.0.0.1");
    expect(config.system.mqtt.embedded.enabled).toBe(false);
    expect(config.devices.map((d) => d.device_id)).toEqual(["tv"]);
    expect(Object.isFrozen(config.system.persistence)).toBe(true);
  });

  it("applies every environment override", async () => {
    const configDir = await writeConfigDir(dir.path, {
      // 0.0.0.0 with auth.mode "none" is refused unless explicitly allowed.
      system: { mqtt: { embedded: { enabled: true, port: 0 } }, auth: { allow_insecure_remote: true } },
      devices: [simulatedDevice("tv")],
    });
    const config = await loadConfig({
      env: {
        CONFIG_DIR: configDir,
        STATE_PATH: "/tmp/elsewhere/state.db",
        MQTT_URL: "mqtt://10.0.0.5:1883",
        HTTP_HOST: "0.0.0.0",
        HTTP_PORT: "9001",
        MQTT_EMBEDDED_PORT: "18999",
        LOG_LEVEL: "debug",
      },
      cwd: "/",
    });
    expect(config.configDir).toBe(configDir);
    expect(config.system.persistence.db_path).toBe("/tmp/elsewhere/state.db");
    expect(config.system.mqtt.url).toBe("mqtt://10.0.0.5:1883");
    expect(config.system.mqtt.embedded.enabled).toBe(false);
    expect(config.system.http).toEqual({ host: "0.0.0.0", port: 9001 });
    expect(config.system.mqtt.embedded.port).toBe(18999);
    expect(config.system.logging.level).toBe("debug");
  });

  it("refuses an encryption key variable that is set but empty, instead of storing plain text", async () => {
    const configDir = await writeConfigDir(dir.path, { system: {} });
    for (const empty of ["", "  "]) {
      const problems = await problemsOf(loadConfig({ configDir, env: { STATE_ENCRYPTION_KEY: empty }, cwd: dir.path }));
      expect(problems).toEqual([expect.stringMatching(/^STATE_ENCRYPTION_KEY: the variable is set but empty/)]);
    }
    // Unset still means unencrypted.
    expect((await loadConfig({ configDir, env: {}, cwd: dir.path })).secrets.encryptionKeys).toBeNull();
  });

  it("names the environment variable when an override is invalid", async () => {
    const configDir = await writeConfigDir(dir.path, { system: {} });
    const problems = await problemsOf(
      loadConfig({
        configDir,
        env: { HTTP_PORT: "eighty", MQTT_EMBEDDED_PORT: "70000", LOG_LEVEL: "loud", MQTT_URL: "http://x" },
        cwd: dir.path,
      }),
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^HTTP_PORT: expected an integer/),
        'MQTT_EMBEDDED_PORT: expected an integer from 0 to 65535, got "70000"',
        expect.stringMatching(/^LOG_LEVEL: expected one of/),
        expect.stringMatching(/^MQTT_URL: expected mqtt:\/\//),
      ]),
    );
  });

  it("reports malformed JSON with the file name", async () => {
    const configDir = await writeConfigDir(dir.path, {});
    await writeFile(join(configDir, "devices", "tv.json"), '{ "device_id": "tv", ');
    const problems = await problemsOf(loadConfig({ configDir, env: {}, cwd: dir.path }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^config\/devices\/tv\.json: invalid JSON: /);
  });

  it("names the file and the field path of a bad value", async () => {
    const bad = simulatedDevice("tv");
    (bad.commands as Record<string, unknown>).power = { params: [{ name: "on", type: "bool" }] };
    const configDir = await writeConfigDir(dir.path, { devices: [bad] });
    const problems = await problemsOf(loadConfig({ configDir, env: {}, cwd: dir.path }));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^config\/devices\/tv\.json: commands\.power\.params\[0\]\.type: .*expected one of/);
  });

  it("collects problems from several files at once, including system.json", async () => {
    const configDir = await writeConfigDir(dir.path, {
      system: { http: { port: 70000 }, persistence: { synchronous: "sometimes" }, surprise: 1 },
      devices: [simulatedDevice("bad id")],
    });
    const problems = await problemsOf(loadConfig({ configDir, env: {}, cwd: dir.path }));
    expect(problems.some((p) => p.startsWith("config/system.json: http.port:"))).toBe(true);
    expect(problems.some((p) => p.startsWith("config/system.json: persistence.synchronous:"))).toBe(true);
    expect(problems.some((p) => p.startsWith("config/system.json: (root): Unrecognized key"))).toBe(true);
    expect(problems.some((p) => /^config\/devices\/bad id\.json: device_id:/.test(p))).toBe(true);
  });

  it("rejects duplicate device ids naming both files", async () => {
    const configDir = await writeConfigDir(dir.path, { devices: [simulatedDevice("tv")] });
    await writeFile(join(configDir, "devices", "tv-copy.json"), JSON.stringify(simulatedDevice("tv")));
    const problems = await problemsOf(loadConfig({ configDir, env: {}, cwd: dir.path }));
    expect(problems).toEqual(['config/devices/tv.json: device_id: "tv" is already defined in config/devices/tv-copy.json']);
  });

  it("checks scenario steps against devices, their commands and params, naming file and step", async () => {
    const configDir = await writeConfigDir(dir.path, {
      devices: [simulatedDevice("tv"), simulatedDevice("amp")],
      scenarios: [
        {
          scenario_id: "movie",
          name: "Movie",
          roles: { display: "projector" },
          devices: ["tv", "ghost"],
          startup: [
            { device: "tv", action: "power_on" },
            { device: "tv", action: "warp" },
            { device: "tv", action: "volume", params: { level: 500 } },
            { device: "amp", action: "power_on" },
            { device: "tv", action: "input" },
          ],
          shutdown: [{ device: "nobody", action: "power_off" }],
        },
      ],
    });
    const problems = await problemsOf(loadConfig({ configDir, env: {}, cwd: dir.path }));
    const file = "config/scenarios/movie.json";
    expect(problems).toEqual([
      `${file}: devices[1]: unknown device "ghost"`,
      `${file}: roles.display: device "projector" is not in this scenario's devices`,
      `${file}: startup[1].action: device "tv" has no command "warp" (known: power, power_on, power_off, volume, volume_up, input)`,
      expect.stringMatching(new RegExp(`^${file}: startup\\[2\\]\\.params\\.level: Too big`)),
      `${file}: startup[3].device: "amp" is not in this scenario's devices`,
      expect.stringMatching(new RegExp(`^${file}: startup\\[4\\]\\.params\\.input: `)),
      `${file}: shutdown[0].device: unknown device "nobody"`,
    ]);
  });

  it("treats missing devices/ and scenarios/ directories as empty", async () => {
    const configDir = join(dir.path, "bare");
    await mkdir(configDir);
    await writeFile(join(configDir, "system.json"), "{}");
    const config = await loadConfig({ configDir, env: {}, cwd: dir.path });
    expect(config.devices).toEqual([]);
    expect(config.scenarios).toEqual([]);
  });

  it("loads the committed demo configuration", async () => {
    const config = await loadConfig({ configDir: join(import.meta.dirname, "../../config"), env: {}, cwd: dir.path });
    expect(config.system.mqtt.embedded.enabled).toBe(true);
    expect(config.system.mqtt.embedded.port).not.toBe(1883);
    expect(config.system.http.host).toBe("127.0.0.1");
    expect(config.devices.length).toBeGreaterThan(0);
    expect(new DriverRegistry(builtinDrivers).validate(config.devices, createLogger("silent"))).toEqual([]);
    expect(new Set(config.devices.map((d) => d.driver))).toEqual(new Set(["simulated", "wb_ir", "wb_relay", "mqtt_json"]));
  });
});

describe("driver config validation", () => {
  it("rejects control overrides that name no control, and accepts the others", async () => {
    const dir = await tempDir();
    const configDir = await writeConfigDir(dir.path, {
      devices: [
        simulatedDevice("tv", {
          controls: { volume: { title: { ru: "Громкость" } }, power_on: { order: 40 }, warp: { type: "switch" } },
        }),
      ],
    });
    const config = await loadConfig({ configDir, env: {}, cwd: dir.path });
    await dir.remove();
    expect(new DriverRegistry([simulatedDriverFactory]).validate(config.devices, createLogger("silent"))).toEqual([
      'config/devices/tv.json: controls.warp: no state field or command named "warp"',
    ]);
  });

  it("lists the drivers' problems with the schema and scenario ones in one run", async () => {
    const dir = await tempDir();
    const configDir = await writeConfigDir(dir.path, {
      devices: [simulatedDevice("tv", { commands: { fly: { params: [] } } })],
      scenarios: [{ scenario_id: "movie", name: "Movie", devices: ["nobody"], startup: [] }],
    });
    const registry = new DriverRegistry([simulatedDriverFactory]);
    const problems = await problemsOf(
      loadConfig({ configDir, env: {}, cwd: dir.path, checkDevices: (devices) => registry.validate(devices, createLogger("silent")) }),
    );
    await dir.remove();
    expect(problems).toEqual([
      'config/scenarios/movie.json: devices[0]: unknown device "nobody"',
      expect.stringMatching(/^config\/devices\/tv\.json: commands\.fly: the simulated driver has no command "fly"/),
    ]);
  });

  it("names file and field for driver-specific problems", () => {
    const registry = new DriverRegistry([simulatedDriverFactory]);
    const device = {
      ...(simulatedDevice("tv") as object),
      file: "config/devices/tv.json",
      config: { inputs: [] },
      commands: { fly: { params: [] }, volume: { params: [{ name: "level", type: "string", required: true }] } },
    };
    const problems = registry.validate([device as never, { ...device, driver: "teleporter" } as never], createLogger("silent"));
    expect(problems).toEqual([
      expect.stringMatching(/^config\/devices\/tv\.json: config\.inputs: /),
      expect.stringMatching(/^config\/devices\/tv\.json: commands\.fly: the simulated driver has no command "fly"/),
      "config/devices/tv.json: commands.volume.params[0].type: expected a first param of type integer or number",
      expect.stringMatching(/^config\/devices\/tv\.json: driver: unknown driver "teleporter"/),
    ]);
  });
});
