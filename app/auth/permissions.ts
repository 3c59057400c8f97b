import type { JWTPayload } from "jose";
import type { Permission } from "../http/permissions.js";

/** Every permission a token can grant (`public` is never granted: it needs no token). */
export const GRANTABLE_PERMISSIONS = [
  "state:read",
  "state:write",
  "devices:read",
  "devices:control",
  "scenarios:control",
  "admin",
] as const satisfies ReadonlyArray<Exclude<Permission, "public">>;

export type GrantablePermission = (typeof GRANTABLE_PERMISSIONS)[number];

const grantable: ReadonlySet<string> = new Set(GRANTABLE_PERMISSIONS);

/**
 * The claim's value: the claim by its exact name first (namespaced claims such as
 * `https://example.com/roles` contain dots), then as a dotted path (`realm_access.roles`).
 */
function claimValue(payload: JWTPayload, claim: string): unknown {
  if (Object.hasOwn(payload, claim)) return payload[claim];
  let value: unknown = payload;
  for (const part of claim.split(".")) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/**
 * The bridge permissions a verified token grants: the configured claim as a
 * space-separated string (OAuth `scope`) or an array of strings (`roles`,
 * `permissions`). Entries that are not bridge permissions are ignored.
 */
export function extractPermissions(payload: JWTPayload, claim: string): ReadonlySet<GrantablePermission> {
  const value = claimValue(payload, claim);
  const entries = typeof value === "string" ? value.split(/\s+/) : Array.isArray(value) ? value : [];
  const out = new Set<GrantablePermission>();
  for (const entry of entries) {
    if (typeof entry === "string" && grantable.has(entry)) out.add(entry as GrantablePermission);
  }
  return out;
}

/** Whether the grants cover what the route needs; `admin` implies every permission. */
export function isGranted(granted: ReadonlySet<GrantablePermission>, needed: Permission): boolean {
  if (needed === "public") return true;
  return granted.has("admin") || granted.has(needed);
}
