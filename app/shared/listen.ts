import { createServer } from "node:net";

/** What a port is for and how a user moves it, for the message when it is taken. */
export interface PortUse {
  what: string;
  host: string;
  port: number;
  /** e.g. `HTTP_PORT=<port> or "http.port" in config/system.json` */
  change: string;
}

/** The user's words for a listen failure: which port, taken or forbidden, and how to pick another. */
export function listenFailure(use: PortUse, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${use.host}:${use.port}`;
  if (code === "EADDRINUSE") return `${use.what} port ${where} is already in use by another process; set ${use.change} to a free port`;
  if (code === "EACCES") return `${use.what} port ${where} needs privileges this process lacks; set ${use.change} to a port above 1023`;
  return `${use.what} cannot listen on ${where}: ${(err as Error).message}`;
}

/**
 * Fails with `listenFailure` when the port cannot be bound right now, so a start that would
 * only fail at its last step fails before it has touched the broker or the database.
 */
export async function assertCanListen(use: PortUse): Promise<void> {
  if (use.port === 0) return;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(use.port, use.host, () => server.close(() => resolve()));
  }).catch((err: unknown) => {
    throw new Error(listenFailure(use, err), { cause: err });
  });
}
