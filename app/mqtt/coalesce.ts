import type { Writable } from "node:stream";

/**
 * Holds everything written to `socket` in one event-loop turn and sends it as one
 * `writev` when the turn ends. mqtt-packet corks each packet only until the next tick,
 * so a group commit that acknowledges 30 actions in one turn would otherwise cost 30
 * or more syscalls (each value publish, each PUBACK), the bridge's largest single CPU
 * cost under load. The added delay is the rest of the current turn, a few microseconds.
 */
export function coalesceWrites(socket: Writable): void {
  let held = false;
  const release = () => {
    held = false;
    socket.uncork();
  };
  const write = socket.write;
  socket.write = function (this: Writable, ...args: Parameters<Writable["write"]>): boolean {
    if (!held) {
      held = true;
      socket.cork();
      setImmediate(release);
    }
    return write.apply(this, args);
  } as Writable["write"];
}
