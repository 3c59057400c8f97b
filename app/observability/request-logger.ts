import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import type { Bindings, ChildLoggerOptions, LevelWithSilentOrString } from "pino";

/** Fastify's `childLoggerFactory` (its type is not exported by name). */
type ChildLoggerFactory = FastifyInstance["childLoggerFactory"];

type Level = "fatal" | "error" | "warn" | "info" | "debug" | "trace";

/** pino has `isLevelEnabled`; Fastify's logger type does not promise it. */
type ParentLogger = FastifyBaseLogger & { isLevelEnabled?: (level: Level) => boolean };

/**
 * A request's logger whose pino child is made on the first call that would write.
 * Making it up front costs every request about 1.2 KB of garbage (pino serializes the
 * bindings and runs them through the redaction paths), while most requests log nothing
 * at the configured level (Fastify's request lines are `info`). Once made, it is the
 * same child, with the same bindings and options, as Fastify would have made.
 */
class DeferredRequestLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: ParentLogger,
    private readonly make: () => FastifyBaseLogger,
  ) {}

  private get logger(): FastifyBaseLogger {
    this.made ??= this.make();
    return this.made;
  }

  private write(level: Level, args: unknown[]): void {
    if (this.made === null && this.parent.isLevelEnabled?.(level) === false) return;
    const logger = this.logger;
    Reflect.apply(logger[level], logger, args);
  }

  get level(): LevelWithSilentOrString {
    return this.made?.level ?? this.parent.level;
  }

  set level(level: LevelWithSilentOrString) {
    this.logger.level = level;
  }

  fatal(...args: unknown[]): void {
    this.write("fatal", args);
  }

  error(...args: unknown[]): void {
    this.write("error", args);
  }

  warn(...args: unknown[]): void {
    this.write("warn", args);
  }

  info(...args: unknown[]): void {
    this.write("info", args);
  }

  debug(...args: unknown[]): void {
    this.write("debug", args);
  }

  trace(...args: unknown[]): void {
    this.write("trace", args);
  }

  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.logger.child(bindings, options);
  }
}

/**
 * Wraps a child logger factory (Fastify's default, or the auth layer's) so that each
 * request's child is made only when something is logged at an enabled level. A route
 * with its own `logLevel` gets its child at once: the level check needs the child's level.
 */
export function deferRequestLoggers(inner: ChildLoggerFactory): ChildLoggerFactory {
  return function (logger, bindings, options, rawRequest) {
    const make = () => inner.call(this, logger, bindings, options, rawRequest);
    return options.level === undefined ? new DeferredRequestLogger(logger, make) : make();
  };
}
