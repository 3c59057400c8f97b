import { createRemoteJWKSet, errors, type JWTVerifyGetKey } from "jose";
import { z } from "zod";

/** The key source could not be reached or answered nonsense: the caller answers 503, not 401. */
export class KeySourceUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "KeySourceUnavailableError";
  }
}

export interface RemoteKeyOptions {
  /** After a miss on an unknown `kid`, the JWKS is not refetched again for this long (jose default 30 s). */
  cooldownMs?: number;
  /** How long a fetched JWKS is trusted before it is refetched (jose default 10 min). */
  cacheMaxAgeMs?: number;
  /** Per HTTP request to the provider. */
  timeoutMs?: number;
}

const discoverySchema = z.object({ issuer: z.string().min(1), jwks_uri: z.url() });

const trimSlash = (url: string) => url.replace(/\/+$/, "");

/** `<issuer>/.well-known/openid-configuration` -> `jwks_uri` (OpenID Connect Discovery 1.0 §4). */
export async function discoverJwksUri(issuer: string, timeoutMs: number): Promise<URL> {
  const url = `${trimSlash(issuer)}/.well-known/openid-configuration`;
  let body: unknown;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    body = await res.json();
  } catch (err) {
    throw new KeySourceUnavailableError(`OIDC discovery at ${url} failed: ${(err as Error).message}`, { cause: err });
  }
  const doc = discoverySchema.safeParse(body);
  if (!doc.success) throw new KeySourceUnavailableError(`OIDC discovery at ${url}: no valid issuer/jwks_uri`);
  if (trimSlash(doc.data.issuer) !== trimSlash(issuer)) {
    throw new KeySourceUnavailableError(`OIDC discovery at ${url}: issuer "${doc.data.issuer}" is not "${issuer}"`);
  }
  return new URL(doc.data.jwks_uri);
}

/** Errors that mean "could not get keys" rather than "this token is not ours". */
function isFetchFailure(err: unknown): boolean {
  if (!(err instanceof errors.JOSEError)) return true;
  return err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err.code === "ERR_JOSE_GENERIC";
}

/**
 * Keys for RS256/ES256 tokens from a JWKS: `jwks_url` directly, else the one the
 * issuer's discovery document names. Discovery runs on first use and again after it
 * failed; jose caches the key set and refetches it when a token names an unknown `kid`.
 */
export function remoteKeys(source: { jwksUrl?: string; oidcIssuer?: string }, options: RemoteKeyOptions = {}): JWTVerifyGetKey {
  const timeoutMs = options.timeoutMs ?? 5000;
  const jose = (url: URL) =>
    createRemoteJWKSet(url, {
      timeoutDuration: timeoutMs,
      ...(options.cooldownMs !== undefined ? { cooldownDuration: options.cooldownMs } : {}),
      ...(options.cacheMaxAgeMs !== undefined ? { cacheMaxAge: options.cacheMaxAgeMs } : {}),
    });

  let keySet: Promise<JWTVerifyGetKey> | null = null;
  const resolveKeySet = (): Promise<JWTVerifyGetKey> => {
    if (!keySet) {
      if (source.jwksUrl) keySet = Promise.resolve(jose(new URL(source.jwksUrl)));
      else if (source.oidcIssuer) keySet = discoverJwksUri(source.oidcIssuer, timeoutMs).then(jose);
      else throw new Error("remoteKeys needs jwksUrl or oidcIssuer");
      // A failed discovery is retried on the next token instead of being cached forever.
      keySet.catch(() => {
        keySet = null;
      });
    }
    return keySet;
  };

  return async (header, token) => {
    const getKey = await resolveKeySet();
    try {
      return await getKey(header, token);
    } catch (err) {
      if (isFetchFailure(err)) throw new KeySourceUnavailableError(`JWKS fetch failed: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  };
}
