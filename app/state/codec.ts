/**
 * How value text is kept at rest. The store encodes every value (and history entry)
 * before writing it and decodes it after reading; backups copy the stored form, so they
 * are encrypted with it. Implementations must be synchronous and pure.
 */
export interface ValueCodec {
  /** True when stored text is encrypted. */
  readonly encrypted: boolean;
  /** Short, non-secret identifier of the key that encrypts (for logs and /health), or null. */
  readonly keyId: string | null;
  encode(plain: string): string;
  /** Throws CodecError when the text cannot be decoded with the configured keys. */
  decode(stored: string): string;
  /** True when `stored` was produced by this codec's current (first) key: nothing to rotate. */
  isCurrent(stored: string): boolean;
}

export class CodecError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CodecError";
  }
}

/** Values stored as plain JSON text. */
export const plainCodec: ValueCodec = {
  encrypted: false,
  keyId: null,
  encode: (plain) => plain,
  decode: (stored) => stored,
  isCurrent: (stored) => !stored.startsWith("gAAAAA"),
};
