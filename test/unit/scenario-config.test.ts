import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../app/config/loader.js";
import { ConfigError } from "../../app/shared/errors.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";

const file = "config/scenarios/movie.json";

describe("scenario config", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.remove();
  });

  async function load(scenario: Record<string, unknown>, devices = [simulatedDevice("tv"), simulatedDevice("amp")]) {
    const configDir = await writeConfigDir(dir.path, { devices, scenarios: [{ scenario_id: "movie", name: "Movie", ...scenario }] });
    return loadConfig({ configDir, env: {}, cwd: dir.path });
  }

  async function problems(scenario: Record<string, unknown>, devices?: Record<string, unknown>[]): Promise<string[]> {
    const err = await load(scenario, devices).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }

  it("loads names, roles, role steps and parsed conditions", async () => {
    const config = await load({
      names: { en: "Movie night", ru: "Кино" },
      description: "Projector on",
      room: "living_room",
      roles: { display: "tv", audio: "amp" },
      devices: ["tv", "amp"],
      startup: [
        { role: "display", action: "power_on", condition: "power == false", delay_after_ms: 10 },
        { device: "amp", action: "input", params: { input: "tv" }, condition: "input != 'tv' && power == true" },
      ],
      shutdown: [{ role: "audio", action: "power_off" }],
    });
    const movie = config.scenarios[0]!;
    expect(movie.names).toEqual({ en: "Movie night", ru: "Кино" });
    expect(movie.startup[0]).toEqual({
      device: "tv",
      role: "display",
      action: "power_on",
      condition: { source: "power == false", expr: { kind: "compare", field: "power", op: "==", value: false } },
      delay_after_ms: 10,
    });
    expect(movie.startup[1]!.condition?.expr).toEqual({
      kind: "and",
      terms: [
        { kind: "compare", field: "input", op: "!=", value: "tv" },
        { kind: "compare", field: "power", op: "==", value: true },
      ],
    });
    expect(movie.shutdown[0]).toEqual({ device: "amp", role: "audio", action: "power_off" });
  });

  it("names file and step for a malformed condition", async () => {
    expect(
      await problems({
        devices: ["tv"],
        startup: [
          { device: "tv", action: "power_on" },
          { device: "tv", action: "power_on" },
          { device: "tv", action: "power_on", condition: "power = false" },
        ],
        shutdown: [{ device: "tv", action: "power_off", condition: "power == true &&" }],
      }),
    ).toEqual([
      `${file}: startup[2].condition: expected ==/!= after "power" at column 7`,
      `${file}: shutdown[0].condition: expected a state field name, found the end at column 17`,
    ]);
  });

  it("names file and step for an unknown role, a step with both or neither target, and a bad role name", async () => {
    expect(
      await problems({
        roles: { display: "tv", "bad role": "tv" },
        devices: ["tv"],
        startup: [{ role: "screen", action: "power_on" }, { role: "display", device: "tv", action: "power_on" }, { action: "power_on" }],
      }),
    ).toEqual([
      expect.stringMatching(/^config\/scenarios\/movie\.json: roles\["bad role"\]: /),
      `${file}: startup[1]: expected exactly one of "device" or "role"`,
      `${file}: startup[2]: expected exactly one of "device" or "role"`,
    ]);
    // The role check runs once the steps themselves are well-formed.
    expect(await problems({ roles: { display: "tv" }, devices: ["tv"], startup: [{ role: "screen", action: "power_on" }] })).toEqual([
      `${file}: startup[0].role: unknown role "screen" (known: display)`,
    ]);
  });

  it("names file and step for unknown devices, actions of a role's device and bad params", async () => {
    expect(
      await problems({
        roles: { display: "tv" },
        devices: ["tv"],
        startup: [
          { role: "display", action: "warp" },
          { device: "ghost", action: "power_on" },
          { role: "display", action: "volume", params: { level: "loud" } },
          { device: "amp", action: "power_on" },
        ],
      }),
    ).toEqual([
      `${file}: startup[0].action: role "display" (device "tv") has no command "warp" (known: power, power_on, power_off, volume, volume_up, input)`,
      `${file}: startup[1].device: unknown device "ghost"`,
      expect.stringMatching(/^config\/scenarios\/movie\.json: startup\[2\]\.params\.level: /),
      `${file}: startup[3].device: "amp" is not in this scenario's devices`,
    ]);
  });

  it("refuses role names whose WB pushbuttons would collide", async () => {
    // Role "x" + action "power_on" and role "x_power" + action "on" both make control "x_power_on".
    const a = simulatedDevice("a", { commands: { power_on: {} } });
    const b = simulatedDevice("b", { commands: { on: {} } });
    expect(await problems({ roles: { x: "a", x_power: "b" }, devices: ["a", "b"] }, [a, b])).toEqual([
      `${file}: roles.x_power: WB control "x_power_on" is also made by role "x"; rename one of the roles`,
    ]);
  });

  it("reserves the device id of the scenario system's WB device", async () => {
    expect(await problems({ devices: ["tv"] }, [simulatedDevice("tv"), simulatedDevice("scenarios")])).toEqual([
      `config/devices/scenarios.json: device_id: "scenarios" is reserved for the scenario system's WB device`,
    ]);
  });

  it("reports an invalid device file once, without follow-on unknown-device errors in scenarios", async () => {
    const broken = simulatedDevice("amp", { commands: { power: { params: [{ name: "on", type: "bool" }] } } });
    const found = await problems(
      {
        devices: ["tv", "amp"],
        startup: [
          { device: "amp", action: "power_on" },
          { device: "tv", action: "warp" },
        ],
      },
      [simulatedDevice("tv"), broken],
    );
    expect(found).toEqual([
      expect.stringMatching(/^config\/devices\/amp\.json: commands\.power\.params\[0\]\.type: /),
      expect.stringMatching(new RegExp(`^${file}: startup\\[1\\]\\.action: device "tv" has no command "warp"`)),
    ]);
  });
});
