import { isJsonObject, type JsonObject } from "../shared/json.js";
import { INTERNAL_NAMESPACES, namespaceOf } from "../state/service.js";
import { TRANSITIONS, type Transition } from "../state/store.js";
import { type GroupSpec, intFlag, numberFlag, type ParsedInput, UsageError } from "./args.js";
import { CliError, type CommandContext, cliChange, withState } from "./context.js";
import { preview, table } from "./output.js";

const pageFlags = {
  limit: { kind: "string", value: "n", help: "at most this many (1-1000, default 50)" },
  cursor: { kind: "string", value: "c", help: "continue after the previous page (its next cursor)" },
} as const;

function limitOf(input: ParsedInput): number | undefined {
  return intFlag(input, "limit", { min: 1, max: 1000 });
}

function arg(input: ParsedInput, index: number): string {
  const value = input.args[index];
  if (value === undefined) throw new UsageError("missing argument", input.usage);
  return value;
}

/** Recovery points are kept by the state layer: they change only through the recovery commands. */
function writable(key: string): string {
  const namespace = namespaceOf(key);
  if (INTERNAL_NAMESPACES.includes(namespace)) {
    throw new CliError(`${namespace}:* is kept by the state layer itself; use the ${namespace} commands`);
  }
  return key;
}

function parseValue(text: string, input: ParsedInput): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`<json> is not valid JSON: ${err instanceof Error ? err.message : String(err)}`, input.usage);
  }
  if (!isJsonObject(value)) throw new UsageError("<json> must be a JSON object, e.g. '{\"on\":true}'", input.usage);
  return value as JsonObject;
}

export const stateGroup: GroupSpec<CommandContext> = {
  name: "state",
  summary: "Read and change state keys (<namespace>:<id>).",
  commands: [
    {
      name: "get",
      summary: "print a key's value (JSON) with its version, updated_at and expires_at",
      args: [{ name: "key" }],
      async run(ctx, input) {
        const key = arg(input, 0);
        const entry = await withState(ctx, "read", ({ state }) => state.getEntry(key));
        if (!entry) throw new CliError(`no such key: ${key}`);
        ctx.out.result(entry, () => [
          JSON.stringify(entry.value, null, 2),
          `version: ${entry.version}`,
          `updated_at: ${entry.updated_at}`,
          `expires_at: ${entry.expires_at ?? "never"}`,
        ]);
      },
    },
    {
      name: "set",
      summary: "replace a key's value (validated, size-limited, recorded in history with source cli)",
      args: [{ name: "key" }, { name: "json" }],
      flags: { ttl: { kind: "string", value: "seconds", help: "expire the key this many seconds from now" } },
      notes: [
        "Without --ttl an existing expiry is kept. Keys of any namespace but recovery: can be set,",
        "device:* and scenario:* included (the bridge checks them against its schemas when it starts).",
      ],
      async run(ctx, input) {
        const key = writable(arg(input, 0));
        const value = parseValue(arg(input, 1), input);
        const ttl = numberFlag(input, "ttl", { above: 0 });
        const options = cliChange(ttl === undefined ? {} : { ttlMs: Math.round(ttl * 1000) });
        const entry = await withState(ctx, "create", ({ state }) => state.set(key, value, options));
        ctx.out.result(entry, () => `set ${key} (version ${entry.version}, expires ${entry.expires_at ?? "never"})`);
      },
    },
    {
      name: "delete",
      summary: "delete a key (recorded in history)",
      args: [{ name: "key" }],
      async run(ctx, input) {
        const key = writable(arg(input, 0));
        const removed = await withState(ctx, "write", ({ state }) => state.remove(key, cliChange()));
        if (!removed) throw new CliError(`no such key: ${key}`);
        ctx.out.result({ key, deleted: true }, () => `deleted ${key}`);
      },
    },
    {
      name: "list",
      summary: "list keys in key order (the internal recovery: namespace is not listed)",
      flags: {
        prefix: { kind: "string", value: "p", help: "only keys starting with p, e.g. device:" },
        filter: { kind: "list", value: "path=value", help: "only values whose field at path (a.b.c) equals value; repeatable" },
        ...pageFlags,
      },
      async run(ctx, input) {
        const query = {
          prefix: input.flags.str("prefix"),
          filter: input.flags.list("filter"),
          limit: limitOf(input),
          cursor: input.flags.str("cursor"),
        };
        for (const f of query.filter) {
          if (f.indexOf("=") <= 0) throw new UsageError(`--filter "${f}" is not path=value`, input.usage);
        }
        const page = await withState(ctx, "read", ({ state }) => state.search(query));
        ctx.out.result(page, () => {
          if (page.items.length === 0) return "(no keys)";
          const rows = page.items.map((e) => [e.key, String(e.version), e.updated_at, e.expires_at ?? "-", preview(e.value)]);
          const lines = table(["KEY", "VERSION", "UPDATED_AT", "EXPIRES_AT", "VALUE"], rows);
          if (page.next_cursor) lines.push(`(more: --cursor ${page.next_cursor})`);
          return lines;
        });
      },
    },
    {
      name: "history",
      summary: "show changes, newest first (all keys, or one)",
      args: [{ name: "key", optional: true }],
      flags: {
        transition: { kind: "string", value: "t", help: `only this transition: ${TRANSITIONS.join(", ")}` },
        ...pageFlags,
      },
      notes: ["Values before and after each change are in the --json output."],
      async run(ctx, input) {
        const transition = input.flags.str("transition");
        if (transition !== undefined && !(TRANSITIONS as readonly string[]).includes(transition)) {
          throw new UsageError(`--transition: expected one of ${TRANSITIONS.join(", ")}, got "${transition}"`, input.usage);
        }
        // Checked by the state service, like state list's: only a cursor it issued passes.
        const cursor = input.flags.str("cursor");
        const query = { key: input.args[0], transition: transition as Transition | undefined, limit: limitOf(input), cursor };
        const page = await withState(ctx, "read", ({ state }) => state.history(query));
        const items = page.items.map((h) => ({ ...h, at: new Date(h.at).toISOString() }));
        ctx.out.result({ items, next_cursor: page.next_cursor }, () => {
          if (page.items.length === 0) return "(no history)";
          const rows = items.map((h) => [String(h.id), h.at, h.key, h.transition, h.source, h.actor ?? "-"]);
          const lines = table(["ID", "AT", "KEY", "TRANSITION", "SOURCE", "ACTOR"], rows);
          if (page.next_cursor) lines.push(`(more: --cursor ${page.next_cursor})`);
          return lines;
        });
      },
    },
  ],
};
