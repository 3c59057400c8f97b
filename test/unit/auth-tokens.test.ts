import { describe, expect, it } from "vitest";
import { extractPermissions, isGranted } from "../../app/auth/permissions.js";
import { createTokenVerifier, InvalidTokenError } from "../../app/auth/verifier.js";
import { authConfigSchema } from "../../app/config/system.js";
import { hsToken, keyToken, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET, testKey } from "../helpers/auth.js";

const jwtConfig = (extra: Record<string, unknown> = {}) =>
  authConfigSchema.parse({ mode: "jwt", jwt: { hs256_secret_env: "X", issuer: TEST_ISSUER, audience: TEST_AUDIENCE, ...extra } }).jwt;

describe("permission extraction", () => {
  it("reads a space-separated scope string and ignores unknown entries", () => {
    expect([...extractPermissions({ scope: "openid devices:read  state:write profile" }, "scope")]).toEqual([
      "devices:read",
      "state:write",
    ]);
  });
  it("reads array claims, namespaced claims and dotted paths", () => {
    expect([...extractPermissions({ roles: ["admin", 3, "x"] }, "roles")]).toEqual(["admin"]);
    expect([...extractPermissions({ "https://wb.test/perms": ["state:read"] }, "https://wb.test/perms")]).toEqual(["state:read"]);
    expect([...extractPermissions({ realm_access: { roles: ["devices:control"] } }, "realm_access.roles")]).toEqual(["devices:control"]);
    expect([...extractPermissions({ scope: 42 }, "scope")]).toEqual([]);
    expect([...extractPermissions({}, "permissions")]).toEqual([]);
  });
  it("admin implies every permission; public needs nothing", () => {
    const admin = extractPermissions({ scope: "admin" }, "scope");
    const reader = extractPermissions({ scope: "state:read" }, "scope");
    for (const p of ["state:read", "state:write", "devices:read", "devices:control", "scenarios:control", "admin"] as const) {
      expect(isGranted(admin, p)).toBe(true);
    }
    expect(isGranted(reader, "state:read")).toBe(true);
    expect(isGranted(reader, "state:write")).toBe(false);
    expect(isGranted(reader, "admin")).toBe(false);
    expect(isGranted(new Set(), "public")).toBe(true);
  });
});

describe("token verifier", () => {
  it("HS256: valid tokens give subject and permissions; clock tolerance applies to exp", async () => {
    const verifier = createTokenVerifier(jwtConfig({ clock_tolerance_s: 60 }), TEST_SECRET);
    const ctx = await verifier.verify(await hsToken({ claims: { sub: "alice", scope: "devices:read" } }));
    expect(ctx).toEqual({ subject: "alice", permissions: new Set(["devices:read"]), method: "hs256" });
    // Expired 30 s ago, within the 60 s tolerance.
    await expect(verifier.verify(await hsToken({ expiresIn: -30 }))).resolves.toBeTruthy();
    await expect(verifier.verify(await hsToken({ expiresIn: -90 }))).rejects.toThrow(/token expired/);
  });

  it("rejects a token whose alg does not match the configured key type (no alg confusion)", async () => {
    const rsa = await testKey("RS256", "k");
    const hsOnly = createTokenVerifier(jwtConfig(), TEST_SECRET);
    const err = await hsOnly.verify(await keyToken(rsa)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidTokenError);
    expect((err as Error).message).toBe("signing algorithm not allowed");
  });

  it("issuer and audience are only checked when configured", async () => {
    const loose = createTokenVerifier(jwtConfig({ issuer: undefined, audience: undefined }), TEST_SECRET);
    await expect(loose.verify(await hsToken({ issuer: null, audience: null }))).resolves.toBeTruthy();
    const strict = createTokenVerifier(jwtConfig(), TEST_SECRET);
    await expect(strict.verify(await hsToken({ audience: null }))).rejects.toThrow(/audience/);
  });
});
