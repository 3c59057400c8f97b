/**
 * Where the CLI's words go: results on stdout (human text, or one JSON document with
 * --json), warnings and errors on stderr prefixed with the program name.
 */

export interface Sink {
  write(text: string): unknown;
}

export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: Sink = process.stdout,
    private readonly stderr: Sink = process.stderr,
  ) {}

  /** The command's result: `human()` lines normally, `data` as one JSON line with --json. */
  result(data: unknown, human: () => string | readonly string[]): void {
    if (this.json) {
      this.stdout.write(`${JSON.stringify(data)}\n`);
      return;
    }
    const text = human();
    const lines = typeof text === "string" ? [text] : text;
    if (lines.length > 0) this.stdout.write(`${lines.join("\n")}\n`);
  }

  /** Raw stdout text (a generated key, JSON lines of an export), the same in both modes. */
  raw(text: string): void {
    this.stdout.write(text);
  }

  warn(message: string): void {
    this.stderr.write(`wb-bridge: ${message}\n`);
  }
}

/** Left-aligned columns with a header row. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** Compact JSON cut to `max` characters, for one-line listings. */
export function preview(value: unknown, max = 60): string {
  const text = JSON.stringify(value);
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
