/**
 * The Fernet token format (https://github.com/fernet/spec, version 0x80), on node:crypto only.
 *
 *   key   = base64url( signing key (16 bytes, HMAC-SHA256) ‖ encryption key (16 bytes, AES-128-CBC) )
 *   token = base64url( 0x80 ‖ timestamp (u64 BE, seconds) ‖ IV (16) ‖ ciphertext (PKCS7, n×16) ‖ HMAC (32) )
 *
 * Key material never leaves this module: a FernetKey holds it in KeyObjects, prints as its
 * fingerprint, and no error message carries key (or token) text.
 */

import type { KeyObject } from "node:crypto";
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes, timingSafeEqual } from "node:crypto";
import { inspect } from "node:util";

const VERSION = 0x80;
const BLOCK = 16;
const HMAC_LEN = 32;
/** version + timestamp + IV */
const HEADER_LEN = 1 + 8 + BLOCK;
/** The smallest token: header, one ciphertext block (PKCS7 always pads), HMAC. */
const MIN_TOKEN_LEN = HEADER_LEN + BLOCK + HMAC_LEN;
const KEY_TEXT_LEN = 44;
/** Tokens stamped further than this into the future are refused (only when a TTL is checked). */
export const MAX_CLOCK_SKEW_SEC = 60;

const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;
const FINGERPRINT_LABEL = "wb-bridge fernet key fingerprint v1";

export type FernetErrorReason =
  | "invalid_key"
  | "invalid_base64"
  | "bad_version"
  | "too_short"
  | "bad_size"
  | "bad_mac"
  | "bad_padding"
  | "expired"
  | "from_future";

const REASON_TEXT: Record<FernetErrorReason, string> = {
  invalid_key: "invalid key",
  invalid_base64: "not URL-safe base64",
  bad_version: "unknown version byte",
  too_short: "too short",
  bad_size: "ciphertext is not a multiple of the block size",
  bad_mac: "HMAC does not match (wrong key or altered token)",
  bad_padding: "bad padding",
  expired: "expired",
  from_future: "timestamp is too far in the future",
};

/** A token or key was refused. `reason` is stable; the message never contains key or token text. */
export class FernetError extends Error {
  constructor(
    readonly reason: FernetErrorReason,
    message?: string,
  ) {
    super(message ?? `invalid Fernet token: ${REASON_TEXT[reason]}`);
    this.name = "FernetError";
  }
}

/** A parsed Fernet key. Prints (inspect, JSON, String) as its fingerprint only. */
export class FernetKey {
  readonly #signing: KeyObject;
  readonly #encryption: KeyObject;
  /** Short non-secret id, see keyFingerprint(). */
  readonly fingerprint: string;

  /** @internal use parseFernetKey() or generateFernetKey(). `raw` is zeroed afterwards. */
  constructor(raw: Buffer) {
    if (raw.length !== 32) throw new FernetError("invalid_key", "a Fernet key must be 32 bytes");
    this.#signing = createSecretKey(Buffer.from(raw.subarray(0, 16)));
    this.#encryption = createSecretKey(Buffer.from(raw.subarray(16, 32)));
    // HMAC under the whole key of a fixed label: a PRF output, so the id reveals nothing of
    // either half, and two keys that share one half still get different ids.
    this.fingerprint = createHmac("sha256", raw).update(FINGERPRINT_LABEL).digest("hex").slice(0, 8);
    raw.fill(0);
  }

  /** @internal */
  mac(data: Buffer): Buffer {
    return createHmac("sha256", this.#signing).update(data).digest();
  }

  /** @internal */
  encrypt(iv: Buffer, plain: Buffer): Buffer {
    const cipher = createCipheriv("aes-128-cbc", this.#encryption, iv); // PKCS7 padding
    return Buffer.concat([cipher.update(plain), cipher.final()]);
  }

  /** @internal Raw CBC decryption; the caller removes the padding. */
  decryptRaw(iv: Buffer, ciphertext: Buffer): Buffer {
    const decipher = createDecipheriv("aes-128-cbc", this.#encryption, iv).setAutoPadding(false);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  }

  toString(): string {
    return `FernetKey(${this.fingerprint})`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

export type FernetKeyInput = FernetKey | string;

/**
 * Decodes strict base64url (RFC 4648 §5): padded, as the reference implementations write
 * and require it, and canonical (unused trailing bits zero), so one byte string has exactly
 * one accepted text. Returns null when the text is not such an encoding. (Node's own decoder
 * skips characters it does not know, so it cannot be used alone.)
 */
function decodeBase64Url(text: string): Buffer | null {
  if (text.length % 4 !== 0 || !BASE64URL.test(text)) return null;
  const bytes = Buffer.from(text, "base64url");
  if (encodeBase64Url(bytes) !== text) return null;
  return bytes;
}

function encodeBase64Url(bytes: Buffer): string {
  const body = bytes.toString("base64url");
  return body + "=".repeat((4 - (body.length % 4)) % 4);
}

/**
 * Parses a key given as text: 44 characters of URL-safe base64 with its padding, encoding 32
 * bytes. Surrounding whitespace is ignored. Throws FernetError("invalid_key"); the message
 * never contains the text.
 */
export function parseFernetKey(text: string): FernetKey {
  const trimmed = text.trim();
  const shape = `a Fernet key is ${KEY_TEXT_LEN} characters of URL-safe base64 (A-Z a-z 0-9 - _, ending in '=') encoding 32 bytes`;
  if (trimmed.length !== KEY_TEXT_LEN) {
    throw new FernetError("invalid_key", `${shape}; got ${trimmed.length} characters`);
  }
  if (/[^A-Za-z0-9_=-]/.test(trimmed)) {
    throw new FernetError("invalid_key", `${shape}; it contains other characters`);
  }
  if (!/^[A-Za-z0-9_-]{43}=$/.test(trimmed)) {
    throw new FernetError("invalid_key", `${shape}; it must end in a single '='`);
  }
  const raw = decodeBase64Url(trimmed);
  if (raw === null || raw.length !== 32) {
    throw new FernetError("invalid_key", `${shape}; it is not a canonical encoding of 32 bytes`);
  }
  return new FernetKey(raw);
}

function toKey(key: FernetKeyInput): FernetKey {
  return typeof key === "string" ? parseFernetKey(key) : key;
}

/** A new random key, as text (44 characters). */
export function generateFernetKey(): string {
  return encodeBase64Url(randomBytes(32));
}

/** A short, non-secret identifier of a key (8 hex characters) for logs and /health. */
export function keyFingerprint(key: FernetKeyInput): string {
  return toKey(key).fingerprint;
}

function secondsOf(date: Date, what: string): number {
  const ms = date.getTime();
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`${what} must be a valid date after 1970-01-01`);
  return Math.floor(ms / 1000);
}

/**
 * Encrypts `plaintext` (strings as UTF-8) into a token. `iv` and `now` are for tests and
 * test vectors only: in use the IV must be fresh random bytes (the default).
 */
export function fernetEncrypt(key: FernetKeyInput, plaintext: string | Buffer, options: { iv?: Buffer; now?: Date } = {}): string {
  const k = toKey(key);
  const iv = options.iv ?? randomBytes(BLOCK);
  if (iv.length !== BLOCK) throw new RangeError(`the IV must be ${BLOCK} bytes`);
  const header = Buffer.alloc(HEADER_LEN);
  header[0] = VERSION;
  header.writeBigUInt64BE(BigInt(secondsOf(options.now ?? new Date(), "now")), 1);
  iv.copy(header, 9);
  const plain = typeof plaintext === "string" ? Buffer.from(plaintext, "utf8") : plaintext;
  const signed = Buffer.concat([header, k.encrypt(iv, plain)]);
  return encodeBase64Url(Buffer.concat([signed, k.mac(signed)]));
}

/** The parts of a token that are checked without a key. */
interface TokenParts {
  timestamp: bigint;
  iv: Buffer;
  ciphertext: Buffer;
  signed: Buffer;
  mac: Buffer;
}

function splitToken(token: string): TokenParts {
  const data = decodeBase64Url(token);
  if (data === null) throw new FernetError("invalid_base64");
  if (data.length < 1) throw new FernetError("too_short");
  if (data[0] !== VERSION) throw new FernetError("bad_version");
  if (data.length < HEADER_LEN + HMAC_LEN) throw new FernetError("too_short");
  const ciphertext = data.subarray(HEADER_LEN, data.length - HMAC_LEN);
  if (ciphertext.length % BLOCK !== 0) throw new FernetError("bad_size");
  if (data.length < MIN_TOKEN_LEN) throw new FernetError("too_short");
  return {
    timestamp: data.readBigUInt64BE(1),
    iv: data.subarray(9, HEADER_LEN),
    ciphertext,
    signed: data.subarray(0, data.length - HMAC_LEN),
    mac: data.subarray(data.length - HMAC_LEN),
  };
}

/** PKCS7 (RFC 5652 §6.3). Runs only after the HMAC matched, so it is no padding oracle. */
function unpad(padded: Buffer): Buffer {
  const n = padded[padded.length - 1] ?? 0;
  if (n < 1 || n > BLOCK || n > padded.length) throw new FernetError("bad_padding");
  for (let i = padded.length - n; i < padded.length; i++) {
    if (padded[i] !== n) throw new FernetError("bad_padding");
  }
  return padded.subarray(0, padded.length - n);
}

/**
 * Verifies and decrypts a token. With `ttlSec`, refuses a token older than that at `now`
 * (default: the current time) or stamped more than MAX_CLOCK_SKEW_SEC after `now`; without
 * it the timestamp is not checked (as in the reference implementations). Throws FernetError.
 *
 * Order: structure, then HMAC (constant time), then time, then decryption and padding, so
 * every statement about a token's age or content is about an authentic token.
 */
export function fernetDecrypt(key: FernetKeyInput, token: string, options: { ttlSec?: number; now?: Date } = {}): Buffer {
  const k = toKey(key);
  const { ttlSec } = options;
  if (ttlSec !== undefined && !(Number.isFinite(ttlSec) && ttlSec >= 0)) {
    throw new RangeError("ttlSec must be a finite number >= 0");
  }
  const parts = splitToken(token);
  if (!timingSafeEqual(k.mac(parts.signed), parts.mac)) throw new FernetError("bad_mac");
  if (ttlSec !== undefined) {
    const now = BigInt(secondsOf(options.now ?? new Date(), "now"));
    if (parts.timestamp + BigInt(Math.floor(ttlSec)) < now) throw new FernetError("expired");
    if (now + BigInt(MAX_CLOCK_SKEW_SEC) < parts.timestamp) throw new FernetError("from_future");
  }
  return unpad(k.decryptRaw(parts.iv, parts.ciphertext));
}
