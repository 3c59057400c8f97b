import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isLoopbackHost, loadConfig } from "../../app/config/loader.js";
import { ConfigError } from "../../app/shared/errors.js";
import { tempDir, writeConfigDir } from "../helpers/fixtures.js";

const SECRET = "unit-test-hs256-secret-0123456789abcdef";

describe("auth configuration (loader)", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => {
    await dir.remove();
  });

  async function load(system: Record<string, unknown>, env: Record<string, string> = {}) {
    const configDir = await writeConfigDir(dir.path, { system });
    return loadConfig({ configDir, env, cwd: dir.path });
  }
  async function problems(pending: Promise<unknown>): Promise<string[]> {
    const err = await pending.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }

  it("mode none refuses a non-loopback http.host, naming http.host and HTTP_HOST", async () => {
    const fromFile = await problems(load({ http: { host: "0.0.0.0" } }));
    expect(fromFile).toEqual([expect.stringMatching(/^http\.host: "0\.0\.0\.0".*HTTP_HOST.*auth\.allow_insecure_remote/)]);
    const fromEnv = await problems(load({}, { HTTP_HOST: "192.168.1.10" }));
    expect(fromEnv).toEqual([expect.stringMatching(/^http\.host: "192\.168\.1\.10"/)]);
  });

  it("mode none accepts 0.0.0.0 with allow_insecure_remote, and loopback hosts without it", async () => {
    const open = await load({ http: { host: "0.0.0.0" }, auth: { allow_insecure_remote: true } });
    expect(open.system.http.host).toBe("0.0.0.0");
    for (const host of ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"]) {
      expect((await load({ http: { host } })).system.http.host).toBe(host);
    }
  });

  it("mode jwt without hs256 secret, oidc_issuer or jwks_url is a ConfigError", async () => {
    const found = await problems(load({ auth: { mode: "jwt" } }));
    expect(found).toEqual([expect.stringMatching(/^auth\.jwt: .*hs256_secret_env, oidc_issuer or jwks_url/)]);
  });

  it("reads the HS256 secret only from the named variable; missing or short secrets are errors that never show it", async () => {
    const config = await load(
      { http: { host: "0.0.0.0" }, auth: { mode: "jwt", jwt: { hs256_secret_env: "MY_JWT_SECRET" } } },
      { MY_JWT_SECRET: SECRET },
    );
    expect(config.secrets.jwtSecret).toBe(SECRET);
    expect(JSON.stringify(config.system)).not.toContain(SECRET);

    const missing = await problems(load({ auth: { mode: "jwt", jwt: { hs256_secret_env: "MY_JWT_SECRET" } } }));
    expect(missing).toEqual([expect.stringMatching(/^auth\.jwt\.hs256_secret_env: environment variable MY_JWT_SECRET is not set/)]);
    const short = await problems(load({ auth: { mode: "jwt", jwt: { hs256_secret_env: "S" } } }, { S: "tooShortSecret" }));
    expect(short).toEqual([expect.stringMatching(/shorter than 32 bytes/)]);
    expect(short.join("\n")).not.toContain("tooShortSecret");
  });

  it("mode none reads no secret", async () => {
    const config = await load({ auth: { jwt: { hs256_secret_env: "MY_JWT_SECRET" } } }, { MY_JWT_SECRET: SECRET });
    expect(config.secrets.jwtSecret).toBeNull();
  });

  it("isLoopbackHost", () => {
    for (const host of ["127.0.0.1", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of [
      "0.0.0.0",
      "::",
      "192.168.0.2",
      "128.0.0.1",
      "127.0.0.256",
      "example.com",
      "127.0.0.1.nip.io",
      "localhost.example.com",
    ]) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });
});
