import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { CodecError, plainCodec } from "../../app/state/codec.js";
import { FernetError, fernetEncrypt, generateFernetKey, keyFingerprint } from "../../app/state/fernet.js";
import { FernetCodec, looksEncrypted, parseKeyList } from "../../app/state/fernet-codec.js";
import { loadInvalidVectors, loadVerifyVectors } from "../helpers/fernet-vectors.js";

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    return err as Error;
  }
  throw new Error("expected an error, nothing was thrown");
}

/** Neither the key text nor any 8-character piece of it appears in `text`. */
function expectNoKeyText(text: string, keyText: string): void {
  expect(text).not.toContain(keyText);
  const body = keyText.replace(/=+$/, "");
  for (let i = 0; i + 8 <= body.length; i++) expect(text).not.toContain(body.slice(i, i + 8));
}

const value = JSON.stringify({ power: true, volume: 42, input: "hdmi1", title: "Гостиная" });

describe("FernetCodec", () => {
  const k1 = generateFernetKey();
  const k2 = generateFernetKey();
  const k3 = generateFernetKey();

  it("encrypts with the first key and says so", () => {
    const codec = FernetCodec.fromKeys([k1, k2]);
    expect(codec.encrypted).toBe(true);
    expect(codec.keyId).toBe(keyFingerprint(k1));
    expect(codec.keyIds).toEqual([keyFingerprint(k1), keyFingerprint(k2)]);
    const stored = codec.encode(value);
    expect(looksEncrypted(stored)).toBe(true);
    expect(stored).not.toContain("hdmi1");
    expect(codec.decode(stored)).toBe(value);
    expect(FernetCodec.fromKeys([k1]).decode(stored)).toBe(value);
    expect(() => FernetCodec.fromKeys([k2]).decode(stored)).toThrow(CodecError);
  });

  it("round-trips empty, large and non-ASCII text", () => {
    const codec = FernetCodec.fromKeys([k1]);
    for (const text of ["", "{}", value, JSON.stringify({ blob: "z".repeat(200_000) }), "💡\u0000\uFFFD"]) {
      expect(codec.decode(codec.encode(text))).toBe(text);
    }
  });

  it("decrypts with every configured key, and isCurrent tells what to re-encrypt", () => {
    const old = FernetCodec.fromKeys([k1]);
    const rotated = FernetCodec.fromKeys([k2, k1]);
    const before = old.encode(value);
    expect(old.isCurrent(before)).toBe(true);
    expect(rotated.isCurrent(before)).toBe(false);
    expect(rotated.decode(before)).toBe(value);
    const after = rotated.encode(rotated.decode(before));
    expect(rotated.isCurrent(after)).toBe(true);
    expect(old.isCurrent(after)).toBe(false);
    expect(FernetCodec.fromKeys([k2]).decode(after)).toBe(value);
  });

  it("isCurrent is false for plain JSON, garbage and tokens of other keys", () => {
    const codec = FernetCodec.fromKeys([k1, k2]);
    expect(codec.isCurrent(value)).toBe(false);
    expect(codec.isCurrent("")).toBe(false);
    expect(codec.isCurrent("gAAAAAnot-a-token")).toBe(false);
    expect(codec.isCurrent(fernetEncrypt(k2, value))).toBe(false);
    expect(codec.isCurrent(fernetEncrypt(k3, value))).toBe(false);
    expect(codec.isCurrent(fernetEncrypt(k1, value))).toBe(true);
    // The plain codec agrees on the other side: tokens are what it would have to decrypt.
    expect(plainCodec.isCurrent(codec.encode(value))).toBe(false);
  });

  it("fails with CodecError naming how many keys were tried, never the keys", () => {
    const stored = FernetCodec.fromKeys([k3]).encode(value);
    for (const keys of [[k1], [k1, k2]]) {
      const err = thrown(() => FernetCodec.fromKeys(keys).decode(stored));
      expect(err).toBeInstanceOf(CodecError);
      expect(err.message).toBe(`value cannot be decrypted with the configured keys (tried ${keys.length})`);
      expect(err.cause).toBeInstanceOf(FernetError);
      for (const k of [k1, k2, k3]) expectNoKeyText(err.message, k);
      expect(err.message).not.toContain(stored);
    }
  });

  it("refuses plain text, damaged tokens and every published invalid token", () => {
    const codec = FernetCodec.fromKeys([k1]);
    const good = codec.encode(value);
    const damaged = [
      value,
      "",
      "null",
      good.slice(0, -8),
      `${good.slice(0, 40)}${good[40] === "A" ? "B" : "A"}${good.slice(41)}`,
      `${good}AAAA`,
    ];
    for (const stored of damaged) {
      expect(() => codec.decode(stored)).toThrow(CodecError);
    }
    for (const v of loadInvalidVectors()) {
      if (v.desc === "expired TTL" || v.desc.startsWith("far-future")) continue; // valid at rest: no TTL
      const err = thrown(() => FernetCodec.fromKeys([k1, v.secret]).decode(v.token));
      expect(err).toBeInstanceOf(CodecError);
      expectNoKeyText(err.message, v.secret);
      expectNoKeyText(err.message, k1);
    }
  });

  it("applies no TTL: values written long ago or under a clock that ran ahead still decode", () => {
    const codec = FernetCodec.fromKeys([k1]);
    expect(codec.decode(fernetEncrypt(k1, value, { now: new Date("2001-01-01T00:00:00Z") }))).toBe(value);
    expect(codec.decode(fernetEncrypt(k1, value, { now: new Date("2099-01-01T00:00:00Z") }))).toBe(value);
    for (const v of loadVerifyVectors()) {
      expect(FernetCodec.fromKeys([v.secret]).decode(v.token)).toBe(v.src);
    }
  });

  it("refuses a token whose plaintext is not UTF-8", () => {
    const token = fernetEncrypt(k1, Buffer.from([0xff, 0xfe, 0x7b]));
    expect(() => FernetCodec.fromKeys([k1]).decode(token)).toThrow(/not UTF-8/);
  });

  it("needs at least one valid, distinct key and never echoes one", () => {
    expect(() => FernetCodec.fromKeys([])).toThrow(CodecError);
    const bad = `${k2.slice(0, 20)}+${k2.slice(21)}`;
    const err = thrown(() => FernetCodec.fromKeys([k1, bad, k3]));
    expect(err).toBeInstanceOf(CodecError);
    expect(err.message).toMatch(/^key 2 of 3: /);
    for (const k of [k1, bad, k3]) expectNoKeyText(err.message, k);
    const dup = thrown(() => FernetCodec.fromKeys([k1, k2, k1]));
    expect(dup).toBeInstanceOf(CodecError);
    expect(dup.message).toBe("key 3 of 3 repeats key 1");
  });

  it("prints without key material", () => {
    const codec = FernetCodec.fromKeys([k1, k2]);
    for (const shown of [inspect(codec, { showHidden: true, depth: 10 }), JSON.stringify(codec), String(codec)]) {
      expectNoKeyText(shown, k1);
      expectNoKeyText(shown, k2);
      expect(shown).toContain(codec.keyId);
    }
  });
});

describe("parseKeyList", () => {
  const [a, b, c] = [generateFernetKey(), generateFernetKey(), generateFernetKey()];

  it("splits on commas, whitespace and newlines and skips comment lines", () => {
    expect(parseKeyList(a)).toEqual([a]);
    expect(parseKeyList(`${a},${b}`)).toEqual([a, b]);
    expect(parseKeyList(` ${a} , ${b}\t${c} `)).toEqual([a, b, c]);
    expect(parseKeyList(`# current key first\n${a}\r\n\n  # retired 2024-05\n${b},\n${c}\n`)).toEqual([a, b, c]);
  });

  it("names the position of a bad key, never its text", () => {
    const short = b.slice(0, 40);
    const err = thrown(() => parseKeyList(`${a}\n${short}\n${c}`));
    expect(err).toBeInstanceOf(FernetError);
    expect(err.message).toMatch(/^key 2 of 3: .*got 40 characters/);
    for (const k of [a, short, c]) expectNoKeyText(err.message, k);

    const alphabet = thrown(() => parseKeyList(`${a},${a.slice(0, 5)}*${a.slice(6)}`));
    expect(alphabet.message).toMatch(/^key 2 of 2: .*other characters/);
    expectNoKeyText(alphabet.message, a);

    expect(thrown(() => parseKeyList(`${a} ${b} ${a}`)).message).toBe("key 3 of 3 repeats key 1");
  });

  it("refuses a list with no key", () => {
    for (const text of ["", "  \n", "# only a comment\n", ",,,"]) {
      expect(thrown(() => parseKeyList(text)).message).toBe("no Fernet key given");
    }
  });

  it("gives keys FernetCodec accepts", () => {
    const codec = FernetCodec.fromKeys(parseKeyList(`${b}\n${a}`));
    expect(codec.decode(FernetCodec.fromKeys([a]).encode(value))).toBe(value);
    expect(codec.keyId).toBe(keyFingerprint(b));
  });
});

describe("looksEncrypted", () => {
  it("tells tokens from plain JSON", () => {
    const codec = FernetCodec.fromKeys([generateFernetKey()]);
    expect(looksEncrypted(codec.encode(value))).toBe(true);
    expect(looksEncrypted(codec.encode(""))).toBe(true);
    for (const v of loadVerifyVectors()) expect(looksEncrypted(v.token)).toBe(true);
    expect(looksEncrypted(value)).toBe(false);
    expect(looksEncrypted("{}")).toBe(false);
    expect(looksEncrypted("")).toBe(false);
    expect(looksEncrypted("gAAAA")).toBe(false);
    expect(looksEncrypted("gAAAAA{not base64}")).toBe(false);
    expect(looksEncrypted(`"gAAAAAAdwJ6w"`)).toBe(false);
  });
});
