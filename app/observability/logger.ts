import { type DestinationStream, type Logger, pino } from "pino";
import type { LogLevel } from "../config/system.js";
import { serializeError, serializeRequest } from "./log-url.js";
import { prettyDestination } from "./pretty.js";

export type { Logger };

/**
 * The bridge's one logger. JSON lines on stdout, or a one-line human format when stdout
 * is an interactive terminal and no destination is given; modules take `logger.child({ module })`.
 * Request log lines carry Fastify's `reqId` (see request-id.ts).
 * Credentials are redacted wherever they might appear by name; state values are
 * never handed to the logger at all (only keys are); request URLs lose their query values.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "wb-bridge" },
      // Ours win over Fastify's defaults: request URLs are logged without query values.
      serializers: { req: serializeRequest, err: serializeError },
      redact: {
        paths: ["password", "*.password", "token", "*.token", "req.headers.authorization", "headers.authorization"],
        censor: "[redacted]",
      },
    },
    destination ?? (process.stdout.isTTY ? prettyDestination(process.stdout) : undefined),
  );
}
