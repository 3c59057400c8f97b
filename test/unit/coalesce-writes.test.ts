import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { coalesceWrites } from "../../app/mqtt/coalesce.js";

describe("coalesceWrites: what one event-loop turn writes leaves as one write", () => {
  let server: Server | null = null;
  let client: Socket | null = null;

  afterEach(async () => {
    client?.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = null;
  });

  /** A connected, coalescing client; `received(n)` resolves with what the server got once it holds n bytes. */
  async function pair(): Promise<{ socket: Socket; received: (bytes: number) => Promise<string> }> {
    const chunks: Buffer[] = [];
    const waiters = new Set<() => void>();
    server = createServer((s) =>
      s.on("data", (c: Buffer) => {
        chunks.push(c);
        for (const wake of waiters) wake();
      }),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const socket = connect({ port: (server.address() as AddressInfo).port, host: "127.0.0.1" });
    await once(socket, "connect");
    socket.setNoDelay(true);
    coalesceWrites(socket);
    client = socket;
    const received = async (bytes: number): Promise<string> => {
      while (Buffer.concat(chunks).length < bytes) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            resolve();
          };
          waiters.add(wake);
        });
      }
      return Buffer.concat(chunks).toString();
    };
    return { socket, received };
  }

  it("holds the writes of a turn (and of its microtasks) until the turn ends, then sends them all, in order", async () => {
    const { socket, received } = await pair();
    socket.write("a");
    await Promise.resolve();
    socket.write(Buffer.from("b"));
    socket.write("c", () => undefined);
    // Still held: nothing has reached the kernel yet.
    expect(socket.writableCorked).toBe(1);
    expect(socket.writableLength).toBe(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(socket.writableCorked).toBe(0);
    expect(socket.writableLength).toBe(0);
    expect(await received(3)).toBe("abc");
  });

  it("keeps working turn after turn, and a write's callback still runs", async () => {
    const { socket, received } = await pair();
    for (const part of ["1", "2", "3"]) {
      await new Promise<void>((resolve, reject) => socket.write(part, (err) => (err ? reject(err) : resolve())));
      expect(socket.writableCorked).toBe(0);
    }
    expect(await received(3)).toBe("123");
  });
});
