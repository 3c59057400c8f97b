import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";

export const TEST_AUDIENCE = "wb-bridge";
export const TEST_ISSUER = "https://issuer.test";
export const TEST_SECRET = "test-shared-secret-9f2c4e7a1b3d5f60-do-not-leak";
export const SECRET_ENV = "WB_TEST_JWT_SECRET";

export interface TokenOptions {
  /** Claims merged over `{ sub: "tester" }`. */
  claims?: JWTPayload;
  issuer?: string | null;
  audience?: string | null;
  /** Seconds relative to now; null leaves the claim out. */
  expiresIn?: number | null;
  notBeforeIn?: number;
  kid?: string;
}

async function sign(alg: string, key: CryptoKey | Uint8Array, o: TokenOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ sub: "tester", ...o.claims }).setProtectedHeader({ alg, ...(o.kid ? { kid: o.kid } : {}) }).setIssuedAt(now);
  const issuer = o.issuer === undefined ? TEST_ISSUER : o.issuer;
  const audience = o.audience === undefined ? TEST_AUDIENCE : o.audience;
  if (issuer !== null) jwt.setIssuer(issuer);
  if (audience !== null) jwt.setAudience(audience);
  const expiresIn = o.expiresIn === undefined ? 600 : o.expiresIn;
  if (expiresIn !== null) jwt.setExpirationTime(now + expiresIn);
  if (o.notBeforeIn !== undefined) jwt.setNotBefore(now + o.notBeforeIn);
  return jwt.sign(key);
}

/** An HS256 token; `scope` is the usual way to pass permissions. */
export function hsToken(o: TokenOptions = {}, secret = TEST_SECRET): Promise<string> {
  return sign("HS256", new TextEncoder().encode(secret), o);
}

export interface TestKey {
  kid: string;
  alg: "RS256" | "ES256";
  privateKey: CryptoKey;
  jwk: JWK;
}

export async function testKey(alg: "RS256" | "ES256", kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

export function keyToken(key: TestKey, o: TokenOptions = {}): Promise<string> {
  return sign(key.alg, key.privateKey, { kid: key.kid, ...o });
}

/** A local OIDC provider: discovery + JWKS on 127.0.0.1; `keys` can be replaced (rotation). */
export class TestOidcProvider {
  keys: TestKey[] = [];
  jwksFetches = 0;
  discoveryFetches = 0;
  private constructor(
    private readonly server: Server,
    readonly issuer: string,
  ) {}

  static async start(keys: TestKey[]): Promise<TestOidcProvider> {
    let provider: TestOidcProvider | undefined;
    const server = createServer((req, res) => {
      const p = provider;
      if (!p) return res.writeHead(503).end();
      res.setHeader("content-type", "application/json");
      if (req.url === "/.well-known/openid-configuration") {
        p.discoveryFetches++;
        return res.end(JSON.stringify({ issuer: p.issuer, jwks_uri: `${p.issuer}/jwks.json` }));
      }
      if (req.url === "/jwks.json") {
        p.jwksFetches++;
        return res.end(JSON.stringify({ keys: p.keys.map((k) => k.jwk) }));
      }
      res.writeHead(404).end("{}");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    provider = new TestOidcProvider(server, `http://127.0.0.1:${port}`);
    provider.keys = keys;
    return provider;
  }

  get jwksUrl(): string {
    return `${this.issuer}/jwks.json`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve, reject) => this.server.close((err) => (err ? reject(err) : resolve())));
  }
}
