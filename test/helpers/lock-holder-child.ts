/**
 * A process that takes the database lock exactly as the bridge does, for the lock tests.
 * Usage: node --import tsx test/helpers/lock-holder-child.ts <db> <owner>
 * Prints "ready" once loaded; on "go" on stdin it tries the lock and prints "locked <pid>"
 * or "refused <message>" (then exits 1); it holds the lock until stdin ends.
 */
import { createInterface } from "node:readline";
import { acquireDbLock } from "../../app/state/lock.js";

const [db, owner] = process.argv.slice(2);
if (!db || !owner) throw new Error("usage: lock-holder-child.ts <db> <owner>");
const lines = createInterface({ input: process.stdin });
process.stdout.write("ready\n");
lines.on("line", (line) => {
  if (line !== "go") return;
  acquireDbLock(db, owner).then(
    (lock) => {
      process.stdout.write(`locked ${process.pid}\n`);
      lines.on("close", () => void lock.release().then(() => process.exit(0)));
    },
    (err: unknown) => {
      process.stdout.write(`refused ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
});
