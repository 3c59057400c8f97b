import { Duplex } from "node:stream";

type WriteCallback = (err?: Error | null) => void;

/**
 * One end of an in-memory connection: what it is written, its peer reads.
 *
 * Delivery waits for the next tick, as bytes on a socket wait for the next poll: a
 * write never runs the peer's packet handling inside the writer's own call stack
 * (node's `stream.duplexPair` pushes synchronously, so an MQTT client's publish would
 * run the broker's routing, and the broker's answer the client's handler, re-entrantly).
 * The write's callback waits while the peer's read buffer is full, so backpressure
 * reaches the writer as on a socket.
 */
class LinkEnd extends Duplex {
  peer: LinkEnd | null = null;
  /** The peer's write held back until this end reads again. */
  private heldWrite: WriteCallback | null = null;

  override _read(): void {
    const held = this.heldWrite;
    this.heldWrite = null;
    held?.();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    this.deliver(chunk, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: WriteCallback): void {
    this.deliver(chunks.length === 1 ? (chunks[0] as { chunk: Buffer }).chunk : Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: WriteCallback): void {
    process.nextTick(() => {
      this.peer?.push(null);
      callback();
    });
  }

  override _destroy(err: Error | null, callback: WriteCallback): void {
    const peer = this.peer;
    this.peer = null;
    const held = this.heldWrite;
    this.heldWrite = null;
    // The peer's write will never be read; the peer is destroyed below, so its stream
    // only needs the callback to settle (an error here would be a second 'error').
    held?.();
    // A socket closed at one end is closed at the other: the peer sees its 'close'.
    if (peer && !peer.destroyed) peer.destroy();
    callback(err);
  }

  private deliver(chunk: Buffer, callback: WriteCallback): void {
    process.nextTick(() => {
      const peer = this.peer;
      // Both ends are destroyed together, so this end is gone as well: nothing to report.
      if (peer === null || peer.destroyed) {
        callback();
        return;
      }
      if (peer.push(chunk)) callback();
      else peer.heldWrite = callback;
    });
  }
}

/** Two connected duplex streams, an in-memory stand-in for a TCP connection. */
export function inProcessLink(): [Duplex, Duplex] {
  const a = new LinkEnd();
  const b = new LinkEnd();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
