import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EmbeddedBroker } from "../../app/mqtt/broker.js";
import { acquireDbLock, lockHolder } from "../../app/state/lock.js";
import { type BridgeChild, runToExit, setVolume, startBridge } from "../helpers/bridge-process.js";
import { simulatedDevice, tempDir, writeConfigDir } from "../helpers/fixtures.js";
import { spawnLockHolder, stopLockHolder } from "../helpers/lock-holder.js";
import { startTestBroker } from "../helpers/mqtt.js";

/**
 * The database lock with real processes: the kernel drops it when its holder dies, so a
 * crash or power loss never leaves the bridge unable to start, whatever pid a stale file
 * names; a live holder is refused by name; of two takers at once exactly one wins.
 */

const ROUNDS = 20;

function refusal(db: string, owner: string, pid: number): string {
  return `state database ${db} is in use by ${owner} (pid ${pid}); stop it first`;
}

async function processState(pid: number): Promise<string | null> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  return stat === null ? null : (stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? null);
}

describe("database lock across processes", () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let broker: EmbeddedBroker;
  let env: Record<string, string>;
  let db: string;
  const bridges: BridgeChild[] = [];

  beforeAll(async () => {
    dir = await tempDir("wb-bridge-lock-");
    broker = await startTestBroker();
    db = join(dir.path, "data", "state.db");
    const configDir = await writeConfigDir(dir.path, {
      system: { persistence: { db_path: "unused.db" }, rate_limit: { max: 0 } },
      devices: [simulatedDevice("tv")],
    });
    env = { CONFIG_DIR: configDir, STATE_PATH: db, MQTT_URL: broker.url };
  });

  afterAll(async () => {
    for (const bridge of bridges) if (bridge.proc.exitCode === null && bridge.proc.signalCode === null) bridge.proc.kill("SIGKILL");
    await Promise.all(bridges.map((b) => b.exited));
    await broker?.close();
    await dir?.remove();
  });

  async function start(): Promise<BridgeChild> {
    const bridge = await startBridge(env);
    bridges.push(bridge);
    return bridge;
  }

  it(`of two processes taking the lock at once exactly one wins and the other names it, ${ROUNDS} times`, async () => {
    const raceDb = join(dir.path, "race", "state.db");
    for (let round = 0; round < ROUNDS; round++) {
      const takers = await Promise.all([spawnLockHolder(raceDb, "taker-a"), spawnLockHolder(raceDb, "taker-b")]);
      for (const t of takers) t.go();
      const lines = await Promise.all(takers.map((t) => t.nextLine()));
      const winners = lines.flatMap((line, i) => (line.startsWith("locked ") ? [i] : []));
      expect(winners, `round ${round}: ${lines.join(" | ")}`).toHaveLength(1);
      const w = winners[0]!;
      const winner = takers[w]!;
      const loser = takers[1 - w]!;
      expect(lines[1 - w]).toBe(`refused ${refusal(raceDb, w === 0 ? "taker-a" : "taker-b", winner.proc.pid!)}`);
      expect(await loser.exited).toBe(1);
      expect(await lockHolder(raceDb)).toMatchObject({ pid: winner.proc.pid, owner: w === 0 ? "taker-a" : "taker-b" });
      // Half the rounds end in a crash: the next round must not notice any difference.
      if (round % 2 === 1) {
        winner.proc.kill("SIGKILL");
        await winner.exited;
      } else {
        await stopLockHolder(winner);
      }
      expect(await lockHolder(raceDb)).toBeNull();
    }
  }, 180_000);

  it("a stale lock file naming a live foreign pid does not block a start; the running bridge is refused by name", async () => {
    // What an older version left behind at a power loss (pid 1 is always alive), and a holder
    // record whose pid is alive (this test runner) but is not the process that wrote it.
    await acquireDbLock(db, "setup").then((lock) => lock.release());
    await writeFile(`${db}.lock`, JSON.stringify({ pid: 1, owner: "wb-bridge", since: "2026-01-01T00:00:00.000Z" }));
    await writeFile(
      `${db}.lock.json`,
      JSON.stringify({
        pid: process.pid,
        owner: "wb-bridge",
        since: "2026-01-01T00:00:00.000Z",
        start_ticks: "1",
        boot_id: "before-the-power-loss",
      }),
    );

    const bridge = await start();
    await setVolume(bridge.url, "tv", 41);
    expect(await lockHolder(db)).toMatchObject({ pid: bridge.proc.pid, owner: "wb-bridge" });

    const second = await runToExit(env);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(refusal(db, "wb-bridge", bridge.proc.pid!));
    // The refused start changed nothing: the first bridge still serves and holds the lock.
    await setVolume(bridge.url, "tv", 42);
    expect(await lockHolder(db)).toMatchObject({ pid: bridge.proc.pid });
  }, 60_000);

  it("kill -9 and an immediate restart: the new bridge starts and has every acknowledged action", async () => {
    const bridge = bridges.at(-1) ?? (await start());
    await setVolume(bridge.url, "tv", 57);
    bridge.proc.kill("SIGKILL");
    await bridge.exited;

    const restarted = await start();
    const state = (await (await fetch(`${restarted.url}/devices/tv/state`)).json()) as { state: { volume: number } };
    expect(state.state.volume).toBe(57);
    expect(await lockHolder(db)).toMatchObject({ pid: restarted.proc.pid });
    restarted.proc.kill("SIGTERM");
    expect((await restarted.exited).code).toBe(0);
    expect(await lockHolder(db)).toBeNull();
  }, 60_000);

  it("a killed holder that nobody has reaped yet (a zombie) no longer holds the lock", async () => {
    const zombieDb = join(dir.path, "zombie", "state.db");
    const holder = await spawnLockHolder(zombieDb, "wb-bridge", { zombie: true });
    holder.go();
    const pid = await holder.pid;
    expect(await holder.nextLine()).toBe(`locked ${pid}`);
    await expect(acquireDbLock(zombieDb, "cli", { holderWaitMs: 0 })).rejects.toThrow(refusal(zombieDb, "wb-bridge", pid));

    process.kill(pid, "SIGKILL");
    // No event tells another process that a pid died; its /proc entry does.
    while ((await processState(pid)) !== "Z") await new Promise((resolve) => setTimeout(resolve, 10));
    try {
      const lock = await acquireDbLock(zombieDb, "cli");
      expect(await processState(pid)).toBe("Z");
      await lock.release();
    } finally {
      holder.proc.kill("SIGKILL");
      await holder.exited;
    }
  }, 30_000);
});
