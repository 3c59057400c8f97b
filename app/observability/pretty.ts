import type { DestinationStream } from "pino";

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO ", 40: "WARN ", 50: "ERROR", 60: "FATAL" };
const COLORS: Record<number, string> = { 10: "90", 20: "36", 30: "32", 40: "33", 50: "31", 60: "35" };
/** Fields every line has, shown in the prefix (or not at all) instead of as key=value. */
const SHOWN = new Set(["level", "time", "msg", "module", "pid", "hostname", "service"]);

function field(value: unknown): string {
  if (typeof value === "string") return /^[\w./:@-]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** One pino JSON line as `12:34:56.789 INFO  [module] message key=value ...`; other text as is. */
export function formatLine(line: string, color: boolean): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const level = typeof record.level === "number" ? record.level : 30;
  const time = typeof record.time === "number" ? new Date(record.time).toISOString().slice(11, 23) : "";
  const label = LEVELS[level] ?? String(level);
  const levelText = color ? `\u001b[${COLORS[level] ?? "0"}m${label}\u001b[0m` : label;
  const module = typeof record.module === "string" ? ` [${record.module}]` : "";
  const rest = Object.entries(record)
    .filter(([k]) => !SHOWN.has(k))
    .map(([k, v]) => `${k}=${field(v)}`)
    .join(" ");
  return `${time} ${levelText}${module} ${String(record.msg ?? "")}${rest ? ` ${rest}` : ""}`;
}

/**
 * A human-readable destination for an interactive terminal: the same records as the
 * JSON lines, one per line. No dependency (pino-pretty is not installed); pino calls
 * `write` once per record.
 */
export function prettyDestination(out: NodeJS.WriteStream = process.stdout): DestinationStream {
  const color = out.hasColors?.() ?? false;
  return {
    write(chunk: string) {
      for (const line of chunk.split("\n")) if (line) out.write(`${formatLine(line, color)}\n`);
    },
  };
}
