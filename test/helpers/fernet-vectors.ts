import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

/** The published Fernet spec vectors, shipped with the tests (source: test/fixtures/fernet/README.md). */
export const fernetVectorDir = join(import.meta.dirname, "..", "fixtures", "fernet");

const generateVector = z.object({
  token: z.string(),
  now: z.string(),
  iv: z.array(z.number().int().min(0).max(255)).length(16),
  src: z.string(),
  secret: z.string(),
});
const verifyVector = z.object({
  token: z.string(),
  now: z.string(),
  ttl_sec: z.number(),
  src: z.string(),
  secret: z.string(),
});
const invalidVector = z.object({
  desc: z.string(),
  token: z.string(),
  now: z.string(),
  ttl_sec: z.number(),
  secret: z.string(),
});

export type GenerateVector = z.infer<typeof generateVector>;
export type VerifyVector = z.infer<typeof verifyVector>;
export type InvalidVector = z.infer<typeof invalidVector>;

/** Reads and shape-checks one vector file; a missing, empty or reshaped file fails the test. */
function load<T>(file: string, schema: z.ZodType<T>): T[] {
  const parsed = z
    .array(schema)
    .min(1)
    .parse(JSON.parse(readFileSync(join(fernetVectorDir, file), "utf8")));
  return parsed;
}

export const loadGenerateVectors = (): GenerateVector[] => load("generate.json", generateVector);
export const loadVerifyVectors = (): VerifyVector[] => load("verify.json", verifyVector);
export const loadInvalidVectors = (): InvalidVector[] => load("invalid.json", invalidVector);
