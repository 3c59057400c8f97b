/**
 * `wb-bridge` command line: works on the state database file, usually with the bridge
 * stopped. Commands that change the database take its lock (`<db>.lock`) and refuse while
 * the bridge or another CLI holds it; read-only ones work beside a running bridge.
 *
 * Exit codes: 0 done, 1 failed (one line on stderr), 2 bad usage (usage on stderr).
 */
import { pino } from "pino";
import { createLogger, type Logger } from "../observability/logger.js";
import { AppError, ConfigError, errorMessage } from "../shared/errors.js";
import { type Program, parseArgv, UsageError } from "./args.js";
import { backupGroup } from "./backup-commands.js";
import { CliError, type CommandContext } from "./context.js";
import { exportCommand, importCommand, migrateCommand } from "./data-commands.js";
import { keyGroup } from "./key-commands.js";
import { Output } from "./output.js";
import { recoveryGroup } from "./recovery-commands.js";
import { stateGroup } from "./state-commands.js";

const program: Program<CommandContext> = {
  name: "wb-bridge",
  description: [
    "Works on the bridge's state database. Commands that change it need the bridge stopped;",
    "get, list, history, export and the list commands also work while it runs.",
  ].join("\n"),
  globalFlags: {
    "config-dir": { kind: "string", value: "dir", help: "configuration directory (default: $CONFIG_DIR or config)" },
    db: { kind: "string", value: "path", help: "state database file (overrides STATE_PATH and persistence.db_path)" },
    json: { kind: "boolean", help: "machine-readable output (one JSON document)" },
    verbose: { kind: "boolean", help: "log to stderr (keys only, never values)" },
  },
  entries: [stateGroup, backupGroup, recoveryGroup, keyGroup, migrateCommand, exportCommand, importCommand],
};

interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdin?: NodeJS.ReadableStream;
  stdout?: { write(text: string): unknown };
  stderr?: { write(text: string): unknown };
}

/** Runs one command line and returns its exit code; never throws. */
async function runCli(argv: readonly string[], options: RunOptions = {}): Promise<number> {
  const stderr = options.stderr ?? process.stderr;
  const stdout = options.stdout ?? process.stdout;
  let log: Logger | undefined;
  try {
    const parsed = parseArgv(program, argv);
    if (parsed.kind === "help") {
      stdout.write(parsed.text);
      return 0;
    }
    const { globals } = parsed;
    for (const name of ["config-dir", "db"]) {
      if (globals.str(name) === "") throw new UsageError(`--${name} needs a value`, parsed.input.usage);
    }
    const verbose = globals.bool("verbose");
    log = createLogger(verbose ? "debug" : "silent", pino.destination({ fd: 2, sync: true }));
    const ctx: CommandContext = {
      globals: { configDir: globals.str("config-dir"), db: globals.str("db"), json: globals.bool("json"), verbose },
      out: new Output(globals.bool("json"), stdout, stderr),
      log,
      env: options.env ?? process.env,
      cwd: options.cwd ?? process.cwd(),
      stdin: options.stdin ?? process.stdin,
    };
    await parsed.command.run(ctx, parsed.input);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      stderr.write(`wb-bridge: ${err.message}\n\n${err.usage}`);
      return 2;
    }
    log?.debug({ err: errorMessage(err), name: err instanceof Error ? err.name : typeof err }, "command failed");
    stderr.write(`wb-bridge: ${describeError(err)}\n`);
    return 1;
  }
}

function describeError(err: unknown): string {
  if (err instanceof ConfigError) return `invalid configuration: ${err.problems.join("; ")}`;
  if (err instanceof CliError || err instanceof AppError) return err.message;
  return errorMessage(err).replace(/\s*\n\s*/g, " ");
}

// EPIPE (e.g. `export | head`): the reader is gone, which is not the command's failure.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

process.exitCode = await runCli(process.argv.slice(2));
