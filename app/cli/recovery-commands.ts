import type { RecoveryPointInfo, RecoveryScope } from "../state/recovery.js";
import { type GroupSpec, intFlag, numberFlag, UsageError } from "./args.js";
import { type CommandContext, cliChange, withState } from "./context.js";
import { plural, table } from "./output.js";

function describeScope(scope: RecoveryScope): string {
  if (scope.type === "key") return `key ${scope.key}`;
  if (scope.type === "prefix") return `prefix ${scope.prefix}`;
  return "all";
}

function idArg(args: readonly string[]): string {
  return args[0] ?? "";
}

export const recoveryGroup: GroupSpec<CommandContext> = {
  name: "recovery",
  summary: "Named snapshots of one key, a prefix or all state, kept inside the database.",
  commands: [
    {
      name: "create",
      summary: "snapshot the current values of a key, a prefix, or everything",
      flags: {
        label: { kind: "string", value: "l", help: "what the point is for (required)" },
        key: { kind: "string", value: "k", help: "only this key" },
        prefix: { kind: "string", value: "p", help: "only keys starting with p" },
      },
      async run(ctx, input) {
        const label = input.flags.str("label");
        if (label === undefined || label.trim() === "") throw new UsageError("--label is required", input.usage);
        const key = input.flags.str("key");
        const prefix = input.flags.str("prefix");
        if (key !== undefined && prefix !== undefined) throw new UsageError("give --key or --prefix, not both", input.usage);
        const point = await withState(ctx, "write", ({ recovery }) => recovery.create({ label, key, prefix }, cliChange()));
        ctx.out.result(point, () => `recovery point ${point.id} created (${describeScope(point.scope)}, ${plural(point.keys, "key")})`);
      },
    },
    {
      name: "list",
      summary: "list recovery points, newest first",
      async run(ctx) {
        const points: RecoveryPointInfo[] = await withState(ctx, "read", ({ recovery }) => recovery.list());
        ctx.out.result(points, () =>
          points.length === 0
            ? "(no recovery points)"
            : table(
                ["ID", "CREATED_AT", "KEYS", "SCOPE", "LABEL"],
                points.map((p) => [p.id, p.created_at, String(p.keys), describeScope(p.scope), p.label]),
              ),
        );
      },
    },
    {
      name: "restore",
      summary: "put every key of the point's scope back as it was (keys created since are deleted)",
      args: [{ name: "id" }],
      async run(ctx, input) {
        const id = idArg(input.args);
        const result = await withState(ctx, "write", ({ recovery }) => recovery.restore(id, cliChange()));
        ctx.out.result(
          { id, ...result },
          () => `restored ${plural(result.restored, "key")} from ${id}; deleted ${plural(result.deleted, "key")} created since`,
        );
      },
    },
    {
      name: "delete",
      summary: "delete a recovery point",
      args: [{ name: "id" }],
      async run(ctx, input) {
        const id = idArg(input.args);
        await withState(ctx, "write", ({ recovery }) => recovery.delete(id, cliChange()));
        ctx.out.result({ id, deleted: true }, () => `deleted recovery point ${id}`);
      },
    },
    {
      name: "prune",
      summary: "delete old recovery points",
      flags: {
        keep: { kind: "string", value: "n", help: "keep the newest n" },
        "older-than-days": { kind: "string", value: "d", help: "delete those older than d days" },
      },
      notes: ["At least one of --keep and --older-than-days is required; a point matching either rule goes."],
      async run(ctx, input) {
        const keep = intFlag(input, "keep", { min: 0 });
        const days = numberFlag(input, "older-than-days", { above: 0 });
        if (keep === undefined && days === undefined) throw new UsageError("give --keep or --older-than-days", input.usage);
        const rule = { keep, olderThanMs: days === undefined ? undefined : days * 24 * 3600 * 1000 };
        const removed = await withState(ctx, "write", ({ recovery }) => recovery.prune(rule, cliChange()));
        ctx.out.result({ deleted: removed }, () => `deleted ${plural(removed, "recovery point")}`);
      },
    },
  ],
};
