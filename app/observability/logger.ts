import { pino, type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "../config/system.js";

export type { Logger };

/**
 * The bridge's one logger. JSON lines; modules take `logger.child({ module })`.
 * Credentials are redacted wherever they might appear by name; state values are
 * never handed to the logger at all (only keys are).
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "wb-bridge" },
      redact: {
        paths: ["password", "*.password", "token", "*.token", "req.headers.authorization", "headers.authorization"],
        censor: "[redacted]",
      },
    },
    destination,
  );
}
