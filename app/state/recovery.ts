import { randomBytes } from "node:crypto";
import { z } from "zod";
import { BadRequestError, NotFoundError } from "../shared/errors.js";
import { type JsonObject, jsonObjectSchema } from "../shared/json.js";
import { assertValidKey, type ChangeOptions, INTERNAL_NAMESPACES, namespaceOf, type StateService } from "./service.js";
import { isUndecodable } from "./store.js";

const PREFIX = "recovery:";

export const recoveryScopeSchema = z.union([
  z.object({ type: z.literal("key"), key: z.string() }),
  z.object({ type: z.literal("prefix"), prefix: z.string() }),
  z.object({ type: z.literal("all") }),
]);
export type RecoveryScope = z.infer<typeof recoveryScopeSchema>;

const pointSchema = z.object({
  id: z.string(),
  label: z.string(),
  scope: recoveryScopeSchema,
  created_at: z.string(),
  entries: z.array(z.object({ key: z.string(), value: jsonObjectSchema, version: z.number().int() })),
});
type Point = z.infer<typeof pointSchema>;

export interface RecoveryPointInfo {
  id: string;
  label: string;
  scope: RecoveryScope;
  created_at: string;
  keys: number;
}

function info(point: Point): RecoveryPointInfo {
  return { id: point.id, label: point.label, scope: point.scope, created_at: point.created_at, keys: point.entries.length };
}

function inScope(scope: RecoveryScope, key: string): boolean {
  if (INTERNAL_NAMESPACES.includes(namespaceOf(key))) return false;
  if (scope.type === "key") return key === scope.key;
  if (scope.type === "prefix") return key.startsWith(scope.prefix);
  return true;
}

/**
 * Named snapshots of one key, a prefix or everything, kept as `recovery:<id>` values.
 * Restoring one puts every key of its scope back as it was (keys created since are
 * deleted) in one transaction, recorded in history as `restore`.
 */
export class RecoveryPoints {
  constructor(
    private readonly state: StateService,
    private readonly now: () => number = Date.now,
  ) {}

  async create(request: { label: string; key?: string; prefix?: string }, options: ChangeOptions): Promise<RecoveryPointInfo> {
    if (request.key !== undefined && request.prefix !== undefined) {
      throw new BadRequestError("invalid_scope", "give a key or a prefix, not both");
    }
    if (request.key !== undefined) assertValidKey(request.key);
    const scope: RecoveryScope =
      request.key !== undefined
        ? { type: "key", key: request.key }
        : request.prefix !== undefined
          ? { type: "prefix", prefix: request.prefix }
          : { type: "all" };
    const entries = (await this.state.store.list(scope.type === "key" ? scope.key : scope.type === "prefix" ? scope.prefix : ""))
      .filter((e) => inScope(scope, e.key))
      .flatMap((e) => (isUndecodable(e) ? [] : [{ key: e.key, value: e.value, version: e.version }]));
    const created = new Date(this.now());
    const id = `rp-${created.toISOString().replace(/[-:.]/g, "").replace("T", "-")}-${randomBytes(3).toString("hex")}`;
    const point: Point = { id, label: request.label, scope, created_at: created.toISOString(), entries };
    await this.state.store.write([
      {
        key: PREFIX + id,
        value: point as unknown as JsonObject,
        meta: { transition: "create", source: options.source, actor: options.actor },
      },
    ]);
    return info(point);
  }

  /** Newest first. */
  async list(): Promise<RecoveryPointInfo[]> {
    const points = (await this.state.store.list(PREFIX)).flatMap((e) => {
      if (isUndecodable(e)) return [];
      const parsed = pointSchema.safeParse(e.value);
      return parsed.success ? [parsed.data] : [];
    });
    return points.map(info).sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  }

  async restore(id: string, options: ChangeOptions): Promise<{ restored: number; deleted: number }> {
    const point = await this.load(id);
    const kept = new Set(point.entries.map((e) => e.key));
    const now = await this.state.store.list(
      point.scope.type === "key" ? point.scope.key : point.scope.type === "prefix" ? point.scope.prefix : "",
    );
    const stale = now.filter((e) => inScope(point.scope, e.key) && !kept.has(e.key)).map((e) => e.key);
    // A key-scoped point of a key that did not exist then means: it should not exist.
    await this.state.restoreEntries(
      [...point.entries.map((e) => ({ key: e.key, value: e.value, version: e.version })), ...stale.map((key) => ({ key, value: null }))],
      { ...options, transition: "restore" },
    );
    return { restored: point.entries.length, deleted: stale.length };
  }

  async delete(id: string, options: ChangeOptions): Promise<void> {
    await this.load(id);
    await this.state.store.write([
      { key: PREFIX + id, value: null, meta: { transition: "delete", source: options.source, actor: options.actor } },
    ]);
  }

  /** Keeps the newest `keep` and removes those older than `olderThanMs`; returns how many went. */
  async prune(rule: { keep?: number; olderThanMs?: number }, options: ChangeOptions): Promise<number> {
    const points = await this.list();
    const cutoff = rule.olderThanMs !== undefined ? this.now() - rule.olderThanMs : null;
    const doomed = points.filter(
      (p, i) => (rule.keep !== undefined && i >= rule.keep) || (cutoff !== null && Date.parse(p.created_at) < cutoff),
    );
    for (const p of doomed) await this.delete(p.id, options);
    return doomed.length;
  }

  private async load(id: string): Promise<Point> {
    const value = /^[A-Za-z0-9-]{1,80}$/.test(id) ? await this.state.store.get(PREFIX + id) : null;
    const parsed = value ? pointSchema.safeParse(value) : null;
    if (!parsed?.success) throw new NotFoundError("recovery_point_not_found", `unknown recovery point "${id}"`);
    return parsed.data;
  }
}
