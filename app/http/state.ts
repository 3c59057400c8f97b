import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Bridge } from "../lifespan.js";
import { ConflictError, NotFoundError, ServiceUnavailableError } from "../shared/errors.js";
import { jsonObjectSchema } from "../shared/json.js";
import { restoreBackupOnline } from "../state/backup-restore.js";
import { type ChangeOptions, INTERNAL_NAMESPACES, namespaceOf } from "../state/service.js";
import { TRANSITIONS } from "../state/store.js";
import "./permissions.js";
import { errorResponseSchema } from "./schemas.js";

/** Namespaces whose values only their managers may write: state changes go through actions. */
const OWNED_NAMESPACES: Record<string, string> = {
  device: "POST /devices/:id/action",
  scenario: "POST /scenario/switch",
};

const entrySchema = z.object({
  key: z.string(),
  value: jsonObjectSchema,
  version: z.number(),
  updated_at: z.string(),
  expires_at: z.string().nullable(),
});
const historyItemSchema = z.object({
  id: z.number(),
  key: z.string(),
  old: jsonObjectSchema.nullable(),
  new: jsonObjectSchema.nullable(),
  transition: z.enum(TRANSITIONS),
  source: z.string(),
  actor: z.string().nullable(),
  at: z.string(),
});
const historyPageSchema = z.object({ items: z.array(historyItemSchema), next_cursor: z.string().nullable() });
const keyParams = z.object({ key: z.string().min(1).max(260) });
const pageQuery = z.object({
  cursor: z.string().max(600).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});
/** What PUT and PATCH /state/:key take: the key, an optional TTL, If-Match, a JSON object. */
const valueWrite = {
  params: keyParams,
  querystring: z.object({
    ttl: z.coerce
      .number()
      .int()
      .min(0)
      .max(10 * 365 * 24 * 3600)
      .optional(),
  }),
  headers: z.object({ "if-match": z.string().optional() }).passthrough(),
  body: jsonObjectSchema,
};
const recoveryInfoSchema = z.object({
  id: z.string(),
  label: z.string(),
  scope: z.union([
    z.object({ type: z.literal("key"), key: z.string() }),
    z.object({ type: z.literal("prefix"), prefix: z.string() }),
    z.object({ type: z.literal("all") }),
  ]),
  created_at: z.string(),
  keys: z.number(),
});
const backupInfoSchema = z.object({ file: z.string(), created_at: z.string(), size_bytes: z.number() });

function writable(key: string): void {
  const namespace = namespaceOf(key);
  const via = OWNED_NAMESPACES[namespace];
  if (via) throw new ConflictError("owned_namespace", `${namespace}:* values change only through ${via}`);
  if (INTERNAL_NAMESPACES.includes(namespace)) {
    throw new ConflictError("internal_namespace", `${namespace}:* is kept by the state layer itself`);
  }
}

function historyView(h: {
  id: number;
  key: string;
  old: unknown;
  new: unknown;
  transition: (typeof TRANSITIONS)[number];
  source: string;
  actor: string | null;
  at: number;
}) {
  return { ...h, at: new Date(h.at).toISOString() } as z.infer<typeof historyItemSchema>;
}

/**
 * The generic state API: any `<namespace>:<id>` key, with ETags for
 * optimistic concurrency, history, recovery points and backups. Each route names the
 * permission it needs in `config.permission`, for the auth layer to enforce.
 */
export function stateRoutes(bridge: Bridge): FastifyPluginAsyncZod {
  const bodyLimit = bridge.config.system.persistence.max_value_bytes + 64 * 1024;
  const change = (source: string, ifMatch?: string, ttlS?: number): ChangeOptions => ({
    source,
    ifMatch,
    ttlMs: ttlS === undefined ? undefined : ttlS === 0 ? null : ttlS * 1000,
  });

  return async (app) => {
    app.get(
      "/state/:key",
      {
        config: { permission: "state:read" },
        schema: { params: keyParams, response: { 200: entrySchema, 404: errorResponseSchema } },
      },
      async (request, reply) => {
        const entry = await bridge.state.getEntry(request.params.key);
        if (!entry) throw new NotFoundError("state_not_found", `no value for ${request.params.key}`);
        const { etag, ...body } = entry;
        return reply.header("etag", etag).send(body);
      },
    );

    app.put(
      "/state/:key",
      {
        bodyLimit,
        config: { permission: "state:write" },
        schema: { ...valueWrite, response: { 200: entrySchema, 201: entrySchema } },
      },
      async (request, reply) => {
        writable(request.params.key);
        const existed = (await bridge.state.getEntry(request.params.key)) !== null;
        const { etag, ...body } = await bridge.state.set(
          request.params.key,
          request.body,
          change("http", request.headers["if-match"], request.query.ttl),
        );
        return reply
          .status(existed ? 200 : 201)
          .header("etag", etag)
          .send(body);
      },
    );

    app.patch(
      "/state/:key",
      {
        bodyLimit,
        config: { permission: "state:write" },
        schema: { ...valueWrite, response: { 200: entrySchema } },
      },
      async (request, reply) => {
        writable(request.params.key);
        const { etag, ...body } = await bridge.state.update(
          request.params.key,
          request.body,
          change("http", request.headers["if-match"], request.query.ttl),
        );
        return reply.header("etag", etag).send(body);
      },
    );

    app.delete(
      "/state/:key",
      {
        config: { permission: "state:write" },
        schema: {
          params: keyParams,
          headers: z.object({ "if-match": z.string().optional() }).passthrough(),
          response: { 204: z.null(), 404: errorResponseSchema },
        },
      },
      async (request, reply) => {
        writable(request.params.key);
        const removed = await bridge.state.remove(request.params.key, change("http", request.headers["if-match"]));
        if (!removed) throw new NotFoundError("state_not_found", `no value for ${request.params.key}`);
        return reply.status(204).send(null);
      },
    );

    app.get(
      "/state",
      {
        config: { permission: "state:read" },
        schema: {
          querystring: pageQuery.extend({
            prefix: z.string().max(200).optional(),
            filter: z.union([z.string(), z.array(z.string())]).optional(),
          }),
          response: { 200: z.object({ items: z.array(entrySchema), next_cursor: z.string().nullable() }) },
        },
      },
      async (request) => {
        const { filter, ...rest } = request.query;
        const page = await bridge.state.search({ ...rest, filter: filter === undefined ? [] : [filter].flat() });
        return { items: page.items.map(({ etag: _etag, ...e }) => e), next_cursor: page.next_cursor };
      },
    );

    app.get(
      "/state/:key/history",
      { config: { permission: "state:read" }, schema: { params: keyParams, querystring: pageQuery, response: { 200: historyPageSchema } } },
      async (request) => {
        const page = await bridge.state.history({ key: request.params.key, ...request.query });
        return { items: page.items.map(historyView), next_cursor: page.next_cursor };
      },
    );

    app.get(
      "/history",
      {
        config: { permission: "state:read" },
        schema: {
          querystring: pageQuery.extend({ key: z.string().optional(), transition: z.enum(TRANSITIONS).optional() }),
          response: { 200: historyPageSchema },
        },
      },
      async (request) => {
        const page = await bridge.state.history(request.query);
        return { items: page.items.map(historyView), next_cursor: page.next_cursor };
      },
    );

    app.post(
      "/recovery-points",
      {
        config: { permission: "admin" },
        schema: {
          body: z
            .object({ label: z.string().min(1).max(200), key: z.string().optional(), prefix: z.string().max(200).optional() })
            .strict(),
          response: { 201: recoveryInfoSchema },
        },
      },
      async (request, reply) => reply.status(201).send(await bridge.recovery.create(request.body, { source: "http" })),
    );

    app.get("/recovery-points", { config: { permission: "admin" }, schema: { response: { 200: z.array(recoveryInfoSchema) } } }, async () =>
      bridge.recovery.list(),
    );

    app.post(
      "/recovery-points/:id/restore",
      {
        config: { permission: "admin" },
        schema: { params: z.object({ id: z.string() }), response: { 200: z.object({ restored: z.number(), deleted: z.number() }) } },
      },
      async (request) => bridge.recovery.restore(request.params.id, { source: "http" }),
    );

    app.delete(
      "/recovery-points/:id",
      { config: { permission: "admin" }, schema: { params: z.object({ id: z.string() }), response: { 204: z.null() } } },
      async (request, reply) => {
        await bridge.recovery.delete(request.params.id, { source: "http" });
        return reply.status(204).send(null);
      },
    );

    app.post(
      "/recovery-points/prune",
      {
        config: { permission: "admin" },
        schema: {
          body: z.object({ keep: z.number().int().min(0).optional(), older_than_days: z.number().min(0).optional() }).strict(),
          response: { 200: z.object({ removed: z.number() }) },
        },
      },
      async (request) => ({
        removed: await bridge.recovery.prune(
          {
            keep: request.body.keep,
            olderThanMs: request.body.older_than_days === undefined ? undefined : request.body.older_than_days * 86_400_000,
          },
          { source: "http" },
        ),
      }),
    );

    const backups = () => {
      if (!bridge.backups) throw new ServiceUnavailableError("backups_unavailable", "backups need the SQLite store");
      return bridge.backups;
    };

    app.get(
      "/backups",
      {
        config: { permission: "admin" },
        schema: {
          response: {
            200: z.object({
              backups: z.array(backupInfoSchema),
              last_result: z
                .object({
                  at: z.string(),
                  ok: z.boolean(),
                  reason: z.string(),
                  file: z.string().optional(),
                  error: z.string().optional(),
                  duration_ms: z.number(),
                })
                .nullable(),
              restored_at_start: z
                .object({ backup: z.string(), backup_created_at: z.string(), quarantined_to: z.string(), at: z.string() })
                .nullable(),
            }),
          },
        },
      },
      async () => ({
        backups: (await backups().list()).map(({ path: _path, ...b }) => b),
        last_result: backups().lastResult,
        restored_at_start: bridge.restoredFromBackup,
      }),
    );

    app.post("/backups", { config: { permission: "admin" }, schema: { response: { 201: backupInfoSchema } } }, async (_request, reply) => {
      const { path: _path, ...info } = await backups().create("manual");
      return reply.status(201).send(info);
    });

    app.post(
      "/backups/:file/restore",
      {
        config: { permission: "admin" },
        schema: {
          params: z.object({ file: z.string().max(200) }),
          response: { 200: z.object({ restored: z.number(), deleted: z.number(), safety_backup: z.string() }) },
        },
      },
      async (request) =>
        restoreBackupOnline({
          backups: backups(),
          state: bridge.state,
          codec: bridge.codec,
          file: request.params.file,
          log: request.log,
          change: { source: "http" },
        }),
    );
  };
}
