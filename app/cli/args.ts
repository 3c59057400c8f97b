/**
 * The CLI's argument grammar: `<group> <command> [args] [--flags]` or `<command> [args]
 * [--flags]`. Commands declare their positional arguments and flags; parsing checks argv
 * against that declaration and usage text is generated from it, so the two never disagree.
 */

export type FlagKind = "boolean" | "string" | "list";

export interface FlagSpec {
  kind: FlagKind;
  /** Placeholder shown in usage for flags that take a value. */
  value?: string;
  help: string;
}

export interface ArgSpec {
  name: string;
  optional?: boolean;
}

export interface CommandSpec<C> {
  name: string;
  summary: string;
  args?: readonly ArgSpec[];
  flags?: Readonly<Record<string, FlagSpec>>;
  /** Extra lines for the command's --help. */
  notes?: readonly string[];
  run(ctx: C, input: ParsedInput): Promise<void>;
}

export interface GroupSpec<C> {
  name: string;
  summary: string;
  commands: ReadonlyArray<CommandSpec<C>>;
}

export type Entry<C> = GroupSpec<C> | CommandSpec<C>;

export function isGroup<C>(entry: Entry<C>): entry is GroupSpec<C> {
  return "commands" in entry;
}

/** Bad usage: the message, and the usage text of the level it happened at (exit 2). */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

/** Flag values by name, read with the kind they were declared with. */
export class FlagValues {
  constructor(private readonly values: ReadonlyMap<string, boolean | string | string[]>) {}

  bool(name: string): boolean {
    return this.values.get(name) === true;
  }

  str(name: string): string | undefined {
    const value = this.values.get(name);
    return typeof value === "string" ? value : undefined;
  }

  list(name: string): string[] {
    const value = this.values.get(name);
    return Array.isArray(value) ? value : [];
  }

  has(name: string): boolean {
    return this.values.has(name);
  }
}

export interface ParsedInput {
  args: string[];
  flags: FlagValues;
  /** Usage text of the command, for errors the command finds in its own arguments. */
  usage: string;
}

export type Parsed<C> = { kind: "help"; text: string } | { kind: "run"; command: CommandSpec<C>; input: ParsedInput; globals: FlagValues };

export interface Program<C> {
  name: string;
  description: string;
  globalFlags: Readonly<Record<string, FlagSpec>>;
  entries: ReadonlyArray<Entry<C>>;
}

/**
 * Parses argv (without node and script). Flags may come anywhere after the point where
 * they are known: global flags anywhere, a command's own flags after its name. `--name=value`
 * and `--name value` are both accepted; `--` ends flag parsing; `-h`/`--help` asks for the
 * usage of the level reached so far.
 */
export function parseArgv<C>(program: Program<C>, argv: readonly string[]): Parsed<C> {
  let entry: Entry<C> | undefined;
  let command: CommandSpec<C> | undefined;
  const path: string[] = [];
  const args: string[] = [];
  const values = new Map<string, boolean | string | string[]>();
  let help = false;

  const usage = () => usageFor(program, entry, command, path);
  const position = (token: string) => {
    if (command) {
      args.push(token);
    } else if (!entry) {
      entry = program.entries.find((e) => e.name === token);
      if (!entry) throw new UsageError(`unknown command "${token}"`, usage());
      path.push(token);
      if (!isGroup(entry)) command = entry;
    } else if (isGroup(entry)) {
      command = entry.commands.find((c) => c.name === token);
      if (!command) throw new UsageError(`unknown command "${token}" for "${entry.name}"`, usage());
      path.push(token);
    }
  };

  for (let i = 0; i < argv.length; i++) {
    const token = argv[i] as string;
    if (token === "--") {
      for (const rest of argv.slice(i + 1)) position(rest);
      break;
    }
    if (token === "-h" || token === "--help") {
      help = true;
      continue;
    }
    if (token.startsWith("--")) {
      const eq = token.indexOf("=");
      const name = token.slice(2, eq === -1 ? undefined : eq);
      const inline = eq === -1 ? undefined : token.slice(eq + 1);
      const spec = program.globalFlags[name] ?? command?.flags?.[name];
      if (!spec) throw new UsageError(`unknown flag --${name}`, usage());
      if (spec.kind === "boolean") {
        if (inline !== undefined) throw new UsageError(`--${name} takes no value`, usage());
        values.set(name, true);
        continue;
      }
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`, usage());
      if (spec.kind === "list") values.set(name, [...((values.get(name) as string[] | undefined) ?? []), value]);
      else if (values.has(name)) throw new UsageError(`--${name} given twice`, usage());
      else values.set(name, value);
      continue;
    }
    if (token.startsWith("-") && token !== "-") throw new UsageError(`unknown flag ${token}`, usage());
    position(token);
  }

  if (help) return { kind: "help", text: usage() };
  if (!entry) throw new UsageError("no command given", usage());
  if (!command) throw new UsageError(`"${entry.name}" needs a command`, usage());
  const declared = command.args ?? [];
  const required = declared.filter((a) => !a.optional).length;
  if (args.length < required) {
    const missing = declared.slice(args.length).find((a) => !a.optional);
    throw new UsageError(`missing argument <${missing?.name ?? "?"}>`, usage());
  }
  if (args.length > declared.length) throw new UsageError(`unexpected argument "${args[declared.length]}"`, usage());
  const flags = new FlagValues(values);
  const commandFlags = command.flags ?? {};
  const own = new Map([...values].filter(([name]) => name in commandFlags));
  return { kind: "run", command, input: { args, flags: new FlagValues(own), usage: usage() }, globals: flags };
}

function flagRows(flags: Readonly<Record<string, FlagSpec>>): Array<readonly [string, string]> {
  return Object.entries(flags).map(([name, spec]) => {
    const left = `--${name}${spec.value ? ` <${spec.value}>` : ""}${spec.kind === "list" ? "..." : ""}`;
    return [left, spec.help] as const;
  });
}

function flagLines(flags: Readonly<Record<string, FlagSpec>>): string[] {
  return columns(flagRows(flags));
}

function columns(rows: ReadonlyArray<readonly [string, string]>): string[] {
  const width = Math.max(0, ...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}

function synopsis<C>(command: CommandSpec<C>): string {
  const args = (command.args ?? []).map((a) => (a.optional ? `[<${a.name}>]` : `<${a.name}>`));
  const flags = Object.keys(command.flags ?? {}).length > 0 ? ["[flags]"] : [];
  return [command.name, ...args, ...flags].join(" ");
}

/** Usage of the deepest level reached: the program, a group or a command. */
export function usageFor<C>(
  program: Program<C>,
  entry: Entry<C> | undefined,
  command: CommandSpec<C> | undefined,
  path: readonly string[],
): string {
  const globals = ["Global flags:", ...columns([...flagRows(program.globalFlags), ["-h, --help", "show this help"]])];
  if (command) {
    const prefix = [program.name, ...path.slice(0, -1)].join(" ");
    return [
      `Usage: ${prefix} ${synopsis(command)}`,
      "",
      command.summary,
      ...(command.notes?.length ? ["", ...command.notes] : []),
      ...(Object.keys(command.flags ?? {}).length ? ["", "Flags:", ...flagLines(command.flags ?? {})] : []),
      "",
      ...globals,
      "",
    ].join("\n");
  }
  if (entry && isGroup(entry)) {
    return [
      `Usage: ${program.name} ${entry.name} <command> [args] [flags]`,
      "",
      entry.summary,
      "",
      "Commands:",
      ...columns(entry.commands.map((c) => [`${entry.name} ${synopsis(c)}`, c.summary])),
      "",
      ...globals,
      "",
      `Run "${program.name} ${entry.name} <command> --help" for a command's flags.`,
      "",
    ].join("\n");
  }
  const rows = program.entries.flatMap(
    (e): Array<readonly [string, string]> =>
      isGroup(e) ? e.commands.map((c) => [`${e.name} ${synopsis(c)}`, c.summary] as const) : [[synopsis(e), e.summary]],
  );
  return [
    `Usage: ${program.name} <group> <command> [args] [flags]`,
    `       ${program.name} <command> [args] [flags]`,
    "",
    program.description,
    "",
    "Commands:",
    ...columns(rows),
    "",
    ...globals,
    "",
    `Run "${program.name} <group> --help" or "${program.name} <group> <command> --help" for more.`,
    "",
  ].join("\n");
}

/** An integer flag within bounds, or undefined when absent; anything else is a usage error. */
export function intFlag(input: ParsedInput, name: string, bounds: { min: number; max?: number }): number | undefined {
  const text = input.flags.str(name);
  if (text === undefined) return undefined;
  const value = Number(text);
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER;
  if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < bounds.min || value > max) {
    const range = bounds.max === undefined ? `>= ${bounds.min}` : `from ${bounds.min} to ${bounds.max}`;
    throw new UsageError(`--${name}: expected a whole number ${range}, got "${text}"`, input.usage);
  }
  return value;
}

/** A number flag (fractions allowed) above `min`, or undefined when absent. */
export function numberFlag(input: ParsedInput, name: string, bounds: { above: number }): number | undefined {
  const text = input.flags.str(name);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value <= bounds.above) {
    throw new UsageError(`--${name}: expected a number greater than ${bounds.above}, got "${text}"`, input.usage);
  }
  return value;
}
