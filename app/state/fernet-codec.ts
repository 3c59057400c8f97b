/**
 * Values at rest as Fernet tokens. The first key encrypts; every key is tried to decrypt, so
 * a key can be rotated by putting the new key first and keeping the old one until
 * `isCurrent` is true for every stored value. Stored values carry no TTL.
 */
import { CodecError, type ValueCodec } from "./codec.js";
import { FernetError, type FernetKey, fernetDecrypt, fernetEncrypt, parseFernetKey } from "./fernet.js";

/** Reasons a token gives before any key is involved (or once its key matched): no other key can help. */
const FINAL_REASONS: ReadonlySet<string> = new Set(["invalid_base64", "bad_version", "too_short", "bad_size", "bad_padding"]);

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * True when `stored` has the shape of a Fernet token (version 0x80 and a timestamp before
 * 2^36 s give the prefix "gAAAAA"; the rest is base64url), so a store can tell tokens from
 * plain JSON text (which starts with "{"). A shape test only: it does not verify anything.
 */
export function looksEncrypted(stored: string): boolean {
  return /^gAAAAA[A-Za-z0-9_-]*={0,2}$/.test(stored);
}

/**
 * Splits a key list as given in an environment variable or a key file: keys separated by
 * commas, whitespace or newlines; lines whose first non-blank character is "#" are comments.
 * Validates every key; errors name the position ("key 2 of 3: ...") and never the key text.
 * Throws FernetError("invalid_key").
 */
export function parseKeyList(text: string): string[] {
  const keys = text
    .split(/\r?\n/)
    .filter((line) => !line.trimStart().startsWith("#"))
    .flatMap((line) => line.split(/[\s,]+/))
    .filter((key) => key !== "");
  if (keys.length === 0) throw new FernetError("invalid_key", "no Fernet key given");
  parseKeys(keys);
  return keys;
}

function parseKeys(texts: readonly string[]): FernetKey[] {
  const seen = new Map<string, number>();
  return texts.map((text, i) => {
    const position = `key ${i + 1} of ${texts.length}`;
    let key: FernetKey;
    try {
      key = parseFernetKey(text);
    } catch (err) {
      if (err instanceof FernetError) throw new FernetError("invalid_key", `${position}: ${err.message}`);
      throw err;
    }
    const canonical = text.trim();
    const earlier = seen.get(canonical);
    if (earlier !== undefined) throw new FernetError("invalid_key", `${position} repeats key ${earlier}`);
    seen.set(canonical, i + 1);
    return key;
  });
}

export class FernetCodec implements ValueCodec {
  readonly encrypted = true;
  /** Fingerprint of the key that encrypts. */
  readonly keyId: string;
  readonly #keys: readonly FernetKey[];

  private constructor(keys: readonly FernetKey[]) {
    const first = keys[0];
    if (first === undefined) throw new CodecError("at least one encryption key is required");
    this.#keys = keys;
    this.keyId = first.fingerprint;
  }

  /**
   * From key texts (see parseKeyList), the first encrypting. Throws CodecError naming the
   * position of a bad or repeated key, never its text.
   */
  static fromKeys(keys: readonly string[]): FernetCodec {
    if (keys.length === 0) throw new CodecError("at least one encryption key is required");
    try {
      return new FernetCodec(parseKeys(keys));
    } catch (err) {
      if (err instanceof FernetError) throw new CodecError(err.message);
      throw err;
    }
  }

  /** Fingerprints of all keys, the encrypting one first. */
  get keyIds(): string[] {
    return this.#keys.map((key) => key.fingerprint);
  }

  encode(plain: string): string {
    return fernetEncrypt(this.#firstKey(), plain);
  }

  decode(stored: string): string {
    let lastError: FernetError | undefined;
    for (const key of this.#keys) {
      try {
        return this.#text(fernetDecrypt(key, stored));
      } catch (err) {
        if (!(err instanceof FernetError)) throw err;
        if (FINAL_REASONS.has(err.reason)) {
          throw new CodecError(err.message, { cause: err });
        }
        lastError = err;
      }
    }
    throw new CodecError(`value cannot be decrypted with the configured keys (tried ${this.#keys.length})`, {
      cause: lastError,
    });
  }

  isCurrent(stored: string): boolean {
    if (!looksEncrypted(stored)) return false;
    try {
      fernetDecrypt(this.#firstKey(), stored);
      return true;
    } catch (err) {
      if (err instanceof FernetError) return false;
      throw err;
    }
  }

  toString(): string {
    return `FernetCodec(${this.keyIds.join(", ")})`;
  }

  #firstKey(): FernetKey {
    // The constructor guarantees one key.
    return this.#keys[0] as FernetKey;
  }

  #text(bytes: Buffer): string {
    try {
      return STRICT_UTF8.decode(bytes);
    } catch (err) {
      throw new CodecError("decrypted value is not UTF-8 text", { cause: err });
    }
  }
}
