import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { silenceDisabledDebug } from "../../app/shared/quiet-debug.js";
import { repoRoot } from "../helpers/bridge-process.js";

const MODULE_URL = pathToFileURL(join(repoRoot, "app/shared/quiet-debug.ts")).href;

/**
 * Runs `body` in a fresh node after `silenceDisabledDebug()` (the swap is process-wide, so
 * never in the test worker). `body` fills `result`, which comes back parsed, with stderr.
 * `fromPacket` requires as mqtt-packet's own modules do, from its folder.
 */
function inChild(body: string, env: Record<string, string> = {}): { result: Record<string, unknown>; stderr: string } {
  const script = `
import { createRequire } from "node:module";
import { silenceDisabledDebug } from ${JSON.stringify(MODULE_URL)};
const result = { installed: silenceDisabledDebug() };
const fromRepo = createRequire(import.meta.url);
const fromPacket = createRequire(fromRepo.resolve("mqtt-packet"));
${body}
process.stdout.write(JSON.stringify(result));
`;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, DEBUG_COLORS: "0", ...env };
  if (env.DEBUG === undefined) delete childEnv.DEBUG;
  const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: repoRoot,
    env: childEnv,
    encoding: "utf8",
  });
  if (run.status !== 0) throw new Error(`child failed (${run.status}):\n${run.stderr}`);
  return { result: JSON.parse(run.stdout) as Record<string, unknown>, stderr: run.stderr };
}

/** A PINGREQ through mqtt-packet's parser, which calls debug() on every step. */
const PARSE_PING = `
const parser = fromPacket("mqtt-packet").parser();
parser.on("packet", (packet) => (result.parsed = packet.cmd));
parser.parse(Buffer.from([0xc0, 0x00]));
`;

describe("silenceDisabledDebug", () => {
  it("gives modules loaded afterwards a no-op for namespaces DEBUG does not enable", () => {
    const { result, stderr } = inChild(`
const factory = fromPacket("debug");
const instance = factory("mqtt-packet:parser");
result.factory = factory.name;
result.enabled = instance.enabled;
result.namespace = instance.namespace;
result.extended = instance.extend("sub").namespace;
result.returned = instance("parse: %o", { a: 1 }) ?? null;
// ioredis reaches it through .default and wraps the instance.
const ioredisDebug = createRequire(fromRepo.resolve("ioredis"))("./utils/debug").default;
ioredisDebug("redis")("connected to %s", "somewhere");
result.ioredisEnabled = ioredisDebug("redis").enabled;
${PARSE_PING}
`);
    expect(result).toEqual({
      installed: true,
      factory: "quietDebug",
      enabled: false,
      namespace: "mqtt-packet:parser",
      extended: "mqtt-packet:parser:sub",
      returned: null,
      ioredisEnabled: false,
      parsed: "pingreq",
    });
    expect(stderr).toBe("");
  });

  it("keeps the real instance for a namespace DEBUG enables, and it still prints", () => {
    const { result, stderr } = inChild(
      `
result.enabled = fromPacket("debug")("mqtt-packet:parser").enabled;
result.otherEnabled = fromPacket("debug")("mqtt-packet:generate").enabled;
${PARSE_PING}
`,
      { DEBUG: "mqtt-packet:parser" },
    );
    expect(result).toEqual({ installed: true, enabled: true, otherEnabled: false, parsed: "pingreq" });
    expect(stderr).toMatch(/mqtt-packet:parser parse: /);
  });

  it("changes nothing and says so where the debug package cannot be resolved", () => {
    expect(silenceDisabledDebug(pathToFileURL("/nonexistent-wb-bridge-dir/x.js").href)).toBe(false);
  });
});
