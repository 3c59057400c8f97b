import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BUNDLE_ENV, BUNDLE_FILE, BUNDLE_NODE_ARGS } from "../helpers/bridge-process.js";

/**
 * The bench and the bundle tests run the bridge as BUNDLE_* say; every way production
 * starts it must say the same, or the figures measure something nobody runs.
 */
const entryPoints: Record<string, string> = {
  "npm start (package.json)": (JSON.parse(readFileSync("package.json", "utf8")) as { scripts: Record<string, string> }).scripts.start ?? "",
  "systemd unit": readFileSync("deploy/wb-bridge.service", "utf8"),
  Dockerfile: readFileSync("Dockerfile", "utf8"),
  "install check": readFileSync("scripts/verify-production-install.sh", "utf8"),
};

describe("production entry points", () => {
  it.each(Object.entries(entryPoints))("%s runs the bundle with the measured flags and environment", (_, text) => {
    const missing = [
      ...BUNDLE_NODE_ARGS.filter((flag) => !text.includes(flag)),
      ...Object.entries(BUNDLE_ENV)
        .map(([name, value]) => `${name}=${value}`)
        .filter((setting) => !text.includes(setting)),
      ...(text.includes(BUNDLE_FILE) ? [] : [BUNDLE_FILE]),
    ];
    expect(missing).toEqual([]);
  });
});
