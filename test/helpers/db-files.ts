import { createHash } from "node:crypto";
import { open, readFile } from "node:fs/promises";

export async function sha256(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

/** Writes `bytes` over the file at `offset`, in place, as a failing disk would. */
export async function overwrite(path: string, offset: number, bytes: Buffer): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.write(bytes, 0, bytes.length, offset);
  } finally {
    await handle.close();
  }
}

/** Overwrites `length` bytes at `offset` with garbage (0xa5). */
export function damage(path: string, offset: number, length: number): Promise<void> {
  return overwrite(path, offset, Buffer.alloc(length, 0xa5));
}
