import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import {
  FernetError,
  type FernetErrorReason,
  FernetKey,
  fernetDecrypt,
  fernetEncrypt,
  generateFernetKey,
  keyFingerprint,
  MAX_CLOCK_SKEW_SEC,
  parseFernetKey,
} from "../../app/state/fernet.js";
import { loadGenerateVectors, loadInvalidVectors, loadVerifyVectors } from "../helpers/fernet-vectors.js";

/**
 * A second, deliberately plain implementation written from the spec text (fernet/spec
 * Spec.md) on node:crypto primitives, sharing no code with app/state/fernet.ts: standard
 * base64 with the URL-safe alphabet swapped in, OpenSSL's own PKCS7 padding.
 */
const reference = {
  keyParts(keyText: string): { signingKey: Buffer; encryptionKey: Buffer } {
    const key = Buffer.from(keyText.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    expect(key.length).toBe(32);
    return { signingKey: key.subarray(0, 16), encryptionKey: key.subarray(16, 32) };
  },
  toBase64Url(bytes: Buffer): string {
    return bytes.toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
  },
  /** Version ‖ Timestamp ‖ IV ‖ Ciphertext, then ‖ HMAC-SHA256 under the signing key. */
  sign(keyText: string, body: Buffer): string {
    const { signingKey } = reference.keyParts(keyText);
    return reference.toBase64Url(Buffer.concat([body, createHmac("sha256", signingKey).update(body).digest()]));
  },
  encrypt(keyText: string, message: Buffer, iv: Buffer, seconds: number): string {
    const { encryptionKey } = reference.keyParts(keyText);
    const cipher = createCipheriv("aes-128-cbc", encryptionKey, iv);
    const ciphertext = Buffer.concat([cipher.update(message), cipher.final()]);
    const timestamp = Buffer.alloc(8);
    timestamp.writeBigUInt64BE(BigInt(seconds));
    return reference.sign(keyText, Buffer.concat([Buffer.from([0x80]), timestamp, iv, ciphertext]));
  },
  decrypt(keyText: string, token: string): Buffer {
    const { signingKey, encryptionKey } = reference.keyParts(keyText);
    const data = Buffer.from(token.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    if (data[0] !== 0x80) throw new Error("reference: bad version");
    const body = data.subarray(0, data.length - 32);
    const mac = data.subarray(data.length - 32);
    if (!timingSafeEqual(createHmac("sha256", signingKey).update(body).digest(), mac)) {
      throw new Error("reference: bad hmac");
    }
    const decipher = createDecipheriv("aes-128-cbc", encryptionKey, data.subarray(9, 25));
    return Buffer.concat([decipher.update(data.subarray(25, data.length - 32)), decipher.final()]);
  },
};

function rejection(fn: () => unknown): FernetError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FernetError);
    return err as FernetError;
  }
  throw new Error("expected a FernetError, nothing was thrown");
}

/** Neither the key text nor any 8-character piece of it appears in `text`. */
function expectNoKeyText(text: string, keyText: string): void {
  expect(text).not.toContain(keyText);
  const body = keyText.replace(/=+$/, "");
  for (let i = 0; i + 8 <= body.length; i++) expect(text).not.toContain(body.slice(i, i + 8));
}

const seconds = (iso: string): number => Math.floor(new Date(iso).getTime() / 1000);

describe("Fernet spec vectors (test/fixtures/fernet, from github.com/fernet/spec)", () => {
  const generate = loadGenerateVectors();
  const verify = loadVerifyVectors();
  const invalid = loadInvalidVectors();

  it.each(generate)("generate: encrypting $src at $now gives exactly the published token", (v) => {
    const token = fernetEncrypt(v.secret, v.src, { iv: Buffer.from(v.iv), now: new Date(v.now) });
    expect(token).toBe(v.token);
    // The test's own reference implementation agrees too, so it can judge the round trips below.
    expect(reference.encrypt(v.secret, Buffer.from(v.src), Buffer.from(v.iv), seconds(v.now))).toBe(v.token);
  });

  it.each(verify)("verify: the token decrypts to $src at $now with ttl $ttl_sec", (v) => {
    const plain = fernetDecrypt(v.secret, v.token, { ttlSec: v.ttl_sec, now: new Date(v.now) });
    expect(plain.toString("utf8")).toBe(v.src);
    expect(fernetDecrypt(parseFernetKey(v.secret), v.token).toString("utf8")).toBe(v.src);
    expect(reference.decrypt(v.secret, v.token).toString("utf8")).toBe(v.src);
  });

  // The reason each published case must be refused for (HMAC is checked before time and padding).
  const expectedReason: Record<string, FernetErrorReason> = {
    "incorrect mac": "bad_mac",
    "too short": "too_short",
    "invalid base64": "invalid_base64",
    "payload size not multiple of block size": "bad_size",
    "payload padding error": "bad_padding",
    "far-future TS (unacceptable clock skew)": "from_future",
    "expired TTL": "expired",
    "incorrect IV (causes padding error)": "bad_padding",
  };

  it("covers every published invalid case", () => {
    expect(invalid.map((v) => v.desc).sort()).toEqual(Object.keys(expectedReason).sort());
  });

  it.each(invalid)("invalid: $desc is rejected", (v) => {
    const err = rejection(() => fernetDecrypt(v.secret, v.token, { ttlSec: v.ttl_sec, now: new Date(v.now) }));
    expect(err.reason).toBe(expectedReason[v.desc]);
    expect(err.message).toMatch(/^invalid Fernet token: /);
    expectNoKeyText(err.message, v.secret);
    expect(err.message).not.toContain(v.token);
  });
});

describe("fernetEncrypt / fernetDecrypt", () => {
  const keyText = generateFernetKey();
  const key = parseFernetKey(keyText);
  const now = new Date("2024-05-01T12:00:00Z");

  it("round-trips text and bytes of every length around the block size", () => {
    for (let n = 0; n <= 48; n++) {
      const bytes = randomBytes(n);
      expect(fernetDecrypt(key, fernetEncrypt(key, bytes))).toEqual(bytes);
    }
    for (const text of ["", "{}", '{"power":true,"volume":42}', "тёплый свет 💡", "x".repeat(100_000)]) {
      expect(fernetDecrypt(key, fernetEncrypt(key, text)).toString("utf8")).toBe(text);
    }
  });

  it("produces URL-safe base64 with padding, version 0x80, the given time, and a fresh IV each time", () => {
    const a = fernetEncrypt(key, "same", { now });
    const b = fernetEncrypt(key, "same", { now });
    expect(a).not.toBe(b);
    for (const token of [a, b]) {
      expect(token).toMatch(/^gAAAAA[A-Za-z0-9_-]*={0,2}$/);
      expect(token.length % 4).toBe(0);
      const data = Buffer.from(token, "base64url");
      expect(data[0]).toBe(0x80);
      expect(data.readBigUInt64BE(1)).toBe(BigInt(now.getTime() / 1000));
    }
    expect(Buffer.from(a, "base64url").subarray(9, 25)).not.toEqual(Buffer.from(b, "base64url").subarray(9, 25));
  });

  it("refuses an IV that is not 16 bytes and a time before 1970", () => {
    expect(() => fernetEncrypt(key, "x", { iv: Buffer.alloc(15) })).toThrow(RangeError);
    expect(() => fernetEncrypt(key, "x", { now: new Date(-1000) })).toThrow(RangeError);
    expect(() => fernetEncrypt(key, "x", { now: new Date(Number.NaN) })).toThrow(RangeError);
  });

  it("interoperates: our tokens decrypt with the reference implementation", () => {
    for (const message of ["", "hello", "a".repeat(16), "b".repeat(17), '{"state":{"on":true}}']) {
      const token = fernetEncrypt(keyText, message);
      expect(reference.decrypt(keyText, token).toString("utf8")).toBe(message);
    }
  });

  it("interoperates: reference tokens decrypt with ours, TTL included", () => {
    for (const message of ["", "hello", "c".repeat(15), "d".repeat(32), "тест"]) {
      const token = reference.encrypt(keyText, Buffer.from(message), randomBytes(16), seconds("2024-05-01T12:00:00Z"));
      expect(fernetDecrypt(keyText, token, { ttlSec: 10, now }).toString("utf8")).toBe(message);
    }
  });

  it("fails when any byte of the token is altered", () => {
    const token = fernetEncrypt(key, '{"power":true}');
    const data = Buffer.from(token, "base64url");
    for (let i = 0; i < data.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const altered = Buffer.from(data);
        altered[i] = (altered[i] ?? 0) ^ mask;
        const err = rejection(() => fernetDecrypt(key, reference.toBase64Url(altered)));
        expect(err.reason).toBe(i === 0 ? "bad_version" : "bad_mac");
      }
    }
  });

  it("fails when any character of the token text is altered, dropped or added", () => {
    const token = fernetEncrypt(key, "hello");
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=";
    for (let i = 0; i < token.length; i++) {
      const c = token[i] as string;
      const other = alphabet[(alphabet.indexOf(c) + 1) % alphabet.length] as string;
      rejection(() => fernetDecrypt(key, token.slice(0, i) + other + token.slice(i + 1)));
      rejection(() => fernetDecrypt(key, token.slice(0, i)));
    }
    rejection(() => fernetDecrypt(key, `${token}A`));
    rejection(() => fernetDecrypt(key, `${token}AAAA`));
    rejection(() => fernetDecrypt(key, ` ${token}`));
  });

  it("fails with another key, without naming either key", () => {
    const otherText = generateFernetKey();
    const err = rejection(() => fernetDecrypt(otherText, fernetEncrypt(keyText, "secret")));
    expect(err.reason).toBe("bad_mac");
    expectNoKeyText(err.message, keyText);
    expectNoKeyText(err.message, otherText);
    // Same encryption half, different signing half: still refused.
    const raw = Buffer.from(keyText, "base64url");
    raw[0] = (raw[0] ?? 0) ^ 1;
    expect(rejection(() => fernetDecrypt(reference.toBase64Url(raw), fernetEncrypt(keyText, "x"))).reason).toBe("bad_mac");
  });

  it("rejects a wrong version byte, bad padding and a bad size even when the HMAC is valid", () => {
    const iv = randomBytes(16);
    const ts = Buffer.alloc(8);
    ts.writeBigUInt64BE(BigInt(seconds("2024-05-01T12:00:00Z")));
    const good = Buffer.from(reference.encrypt(keyText, Buffer.from("hello"), iv, seconds("2024-05-01T12:00:00Z")), "base64url");
    const body = good.subarray(0, good.length - 32);

    const v81 = Buffer.from(body);
    v81[0] = 0x81;
    expect(rejection(() => fernetDecrypt(key, reference.sign(keyText, v81))).reason).toBe("bad_version");

    // A block that decrypts to a final byte of 0x00 (invalid PKCS7), properly signed.
    const { encryptionKey } = reference.keyParts(keyText);
    const raw = createCipheriv("aes-128-cbc", encryptionKey, iv).setAutoPadding(false);
    const badPad = Buffer.concat([raw.update(Buffer.alloc(16, 0)), raw.final()]);
    const padBody = Buffer.concat([Buffer.from([0x80]), ts, iv, badPad]);
    expect(rejection(() => fernetDecrypt(key, reference.sign(keyText, padBody))).reason).toBe("bad_padding");

    const ragged = Buffer.concat([body, Buffer.from([1, 2, 3])]);
    expect(rejection(() => fernetDecrypt(key, reference.sign(keyText, ragged))).reason).toBe("bad_size");

    const headerOnly = Buffer.concat([Buffer.from([0x80]), ts, iv]);
    expect(rejection(() => fernetDecrypt(key, reference.sign(keyText, headerOnly))).reason).toBe("too_short");
    expect(rejection(() => fernetDecrypt(key, "")).reason).toBe("too_short");
  });

  it("accepts only canonical, padded URL-safe base64", () => {
    const token = fernetEncrypt(key, "hello");
    // Standard-alphabet characters, and a last character whose unused bits are set.
    expect(rejection(() => fernetDecrypt(key, `${token.replace(/-/g, "+").replace(/_/g, "/")}+/`)).reason).toBe("invalid_base64");
    const body = token.replace(/=+$/, "");
    expect(body.length % 4).not.toBe(0); // "hello" gives a token with padding
    const last = body[body.length - 1] as string;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const sibling = alphabet[alphabet.indexOf(last) + 1] as string; // same meaningful bits, one unused bit set
    expect(rejection(() => fernetDecrypt(key, body.slice(0, -1) + sibling + token.slice(body.length))).reason).toBe("invalid_base64");
    expect(rejection(() => fernetDecrypt(key, `${token}=`)).reason).toBe("invalid_base64");
    // Padding is required, as by the reference implementations.
    expect(rejection(() => fernetDecrypt(key, body)).reason).toBe("invalid_base64");
  });

  describe("time", () => {
    const at = (iso: string): Date => new Date(iso);
    const token = fernetEncrypt(key, "t", { now: at("2024-05-01T12:00:00Z") });

    it("accepts a token exactly ttl old and refuses it one second later", () => {
      expect(fernetDecrypt(key, token, { ttlSec: 60, now: at("2024-05-01T12:01:00Z") }).toString()).toBe("t");
      expect(rejection(() => fernetDecrypt(key, token, { ttlSec: 60, now: at("2024-05-01T12:01:01Z") })).reason).toBe("expired");
    });

    it(`tolerates ${MAX_CLOCK_SKEW_SEC} s of clock skew into the future, not more`, () => {
      expect(fernetDecrypt(key, token, { ttlSec: 60, now: at("2024-05-01T11:59:00Z") }).toString()).toBe("t");
      expect(rejection(() => fernetDecrypt(key, token, { ttlSec: 60, now: at("2024-05-01T11:58:59Z") })).reason).toBe("from_future");
    });

    it("checks no time without a ttl (values at rest outlive any clock)", () => {
      expect(fernetDecrypt(key, token, { now: at("2100-01-01T00:00:00Z") }).toString()).toBe("t");
      expect(fernetDecrypt(key, token, { now: at("1970-01-02T00:00:00Z") }).toString()).toBe("t");
    });

    it("refuses a nonsensical ttl", () => {
      expect(() => fernetDecrypt(key, token, { ttlSec: -1 })).toThrow(RangeError);
      expect(() => fernetDecrypt(key, token, { ttlSec: Number.NaN })).toThrow(RangeError);
    });
  });
});

describe("keys", () => {
  it("generateFernetKey gives distinct 44-character URL-safe keys that parse", () => {
    const a = generateFernetKey();
    const b = generateFernetKey();
    expect(a).not.toBe(b);
    for (const k of [a, b]) {
      expect(k).toMatch(/^[A-Za-z0-9_-]{43}=$/);
      expect(parseFernetKey(k)).toBeInstanceOf(FernetKey);
    }
  });

  it("parseFernetKey ignores surrounding whitespace (key files end in a newline)", () => {
    const k = generateFernetKey();
    expect(keyFingerprint(parseFernetKey(`  ${k}\n`))).toBe(keyFingerprint(k));
  });

  it("parseFernetKey refuses wrong length, alphabet and encoding without echoing the key", () => {
    const k = generateFernetKey();
    const raw = Buffer.from(k, "base64url");
    const standard = raw.toString("base64");
    const lastChar = k[42] as string;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const nonCanonical = `${k.slice(0, 42)}${alphabet[(alphabet.indexOf(lastChar) & ~3) + 1]}=`;
    const cases: Array<[string, RegExp]> = [
      [k.slice(0, 43), /got 43 characters/],
      [`${k.slice(0, 43)}A=`, /got 45 characters/],
      [Buffer.concat([raw, Buffer.from([1])]).toString("base64url"), /single '='/],
      [`${k.slice(0, 10)}+${k.slice(11)}`, /other characters/],
      [`${k.slice(0, 10)}/${k.slice(11)}`, /other characters/],
      [`${k.slice(0, 10)}.${k.slice(11)}`, /other characters/],
      [nonCanonical, /canonical/],
      ["", /got 0 characters/],
    ];
    if (/[+/]/.test(standard)) cases.push([standard, /other characters/]);
    for (const [text, pattern] of cases) {
      const err = rejection(() => parseFernetKey(text));
      expect(err.reason).toBe("invalid_key");
      expect(err.message).toMatch(pattern);
      if (text.length >= 8) expectNoKeyText(err.message, text);
      expectNoKeyText(err.message, k);
    }
  });

  it("a parsed key prints as its fingerprint only", () => {
    const k = generateFernetKey();
    const key = parseFernetKey(k);
    const raw = Buffer.from(k, "base64url");
    for (const shown of [inspect(key, { showHidden: true, depth: 5 }), JSON.stringify({ key }), String(key), `${key}`]) {
      expect(shown).toContain(key.fingerprint);
      expectNoKeyText(shown, k);
      expect(shown).not.toContain(raw.toString("hex").slice(0, 16));
      expect(shown).not.toContain(raw.subarray(16).toString("hex").slice(0, 16));
    }
  });

  it("keyFingerprint is short, stable, distinct per key, and not a piece of the key", () => {
    const k = generateFernetKey();
    const fp = keyFingerprint(k);
    expect(fp).toMatch(/^[0-9a-f]{8}$/);
    expect(keyFingerprint(parseFernetKey(k))).toBe(fp);
    expect(keyFingerprint(generateFernetKey())).not.toBe(fp);
    const raw = Buffer.from(k, "base64url");
    expect(raw.toString("hex")).not.toContain(fp);
    // Keys sharing one half still get different ids.
    const sibling = Buffer.from(raw);
    sibling[31] = (sibling[31] ?? 0) ^ 1;
    expect(keyFingerprint(reference.toBase64Url(sibling))).not.toBe(fp);
  });
});
