import { readFileSync } from "node:fs";

/** The package version, read once at start (used by /health and the WB bridge device). */
export function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string };
  return pkg.version ?? "0.0.0";
}
