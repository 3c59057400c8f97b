import { decodeProtectedHeader, errors, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions, jwtVerify } from "jose";
import type { AuthConfig } from "../config/system.js";
import { type RemoteKeyOptions, remoteKeys } from "./keys.js";
import { extractPermissions, type GrantablePermission } from "./permissions.js";

export { KeySourceUnavailableError } from "./keys.js";

/** Who made a request, as a verified token says. */
export interface AuthContext {
  /** The token's `sub`; null when it has none. */
  subject: string | null;
  permissions: ReadonlySet<GrantablePermission>;
  /** Which key verified the token. */
  method: "hs256" | "jwks";
}

/** A token that is not acceptable; the message names why and never contains the token. */
export class InvalidTokenError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidTokenError";
  }
}

export interface TokenVerifier {
  verify(token: string): Promise<AuthContext>;
}

/** Algorithms accepted from the JWKS; HS256 is only ever checked against the shared secret. */
export const ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/** jose's failure, in words a client may see. */
function describe(err: unknown): string {
  if (err instanceof errors.JWTExpired) return "token expired";
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case "nbf":
        return "token not yet valid";
      case "iss":
        return "wrong issuer";
      case "aud":
        return "wrong audience";
      case "exp":
        return "token has no expiry";
      default:
        return `invalid claim ${err.claim}`;
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return "invalid signature";
  if (err instanceof errors.JWKSNoMatchingKey) return "no matching signing key";
  if (err instanceof errors.JOSEAlgNotAllowed) return "signing algorithm not allowed";
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return "malformed token";
  if (err instanceof errors.JOSEError) return "invalid token";
  return "invalid token";
}

/**
 * Verifies bearer JWTs with jose: HS256 against the shared secret, asymmetric
 * algorithms against the provider's JWKS; the token's header `alg` picks the key, so an
 * HS256 token can never be checked with a public key. `exp` is required; `nbf`,
 * `iss` (when configured; defaults to the OIDC issuer) and `aud` (when configured)
 * are checked with the configured clock tolerance.
 */
export function createTokenVerifier(jwt: AuthConfig["jwt"], secret: string | null, remoteOptions: RemoteKeyOptions = {}): TokenVerifier {
  const secretKey = secret ? new TextEncoder().encode(secret) : null;
  const remote: JWTVerifyGetKey | null =
    jwt.jwks_url || jwt.oidc_issuer ? remoteKeys({ jwksUrl: jwt.jwks_url, oidcIssuer: jwt.oidc_issuer }, remoteOptions) : null;
  const issuer = jwt.issuer ?? jwt.oidc_issuer;
  const common: JWTVerifyOptions = {
    clockTolerance: jwt.clock_tolerance_s,
    requiredClaims: ["exp"],
    ...(issuer !== undefined ? { issuer } : {}),
    ...(jwt.audience !== undefined ? { audience: jwt.audience } : {}),
  };

  return {
    async verify(token) {
      let alg: string | undefined;
      try {
        alg = decodeProtectedHeader(token).alg;
      } catch (err) {
        throw new InvalidTokenError("malformed token", { cause: err });
      }
      let payload: JWTPayload;
      let method: AuthContext["method"];
      try {
        if (alg === "HS256" && secretKey) {
          method = "hs256";
          ({ payload } = await jwtVerify(token, secretKey, { ...common, algorithms: ["HS256"] }));
        } else if (alg !== undefined && remote && ASYMMETRIC_ALGORITHMS.includes(alg)) {
          method = "jwks";
          ({ payload } = await jwtVerify(token, remote, { ...common, algorithms: ASYMMETRIC_ALGORITHMS }));
        } else {
          throw new InvalidTokenError("signing algorithm not allowed");
        }
      } catch (err) {
        if (err instanceof InvalidTokenError || !(err instanceof errors.JOSEError)) throw err;
        throw new InvalidTokenError(describe(err), { cause: err });
      }
      return {
        subject: typeof payload.sub === "string" ? payload.sub : null,
        permissions: extractPermissions(payload, jwt.permissions_claim),
        method,
      };
    },
  };
}
