import { type EncodedOp, lit } from "./stored-text.js";

/**
 * SQL text for the PostgreSQL store. A batch is one simple-protocol script (one round
 * trip per group commit, as in SQLite), with values inlined as literals.
 */

/** Advisory lock key spaces (the two-int4 form): the bridge's hold on a schema, keys within a commit, keys across a read-modify-write. */
export const LOCK_SPACE = { holder: 0x77620001, key: 0x77620002, update: 0x77620003 } as const;

/** Schema names are inlined as identifiers: plain lower-case names only. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export function schemaSql(schema: string): string {
  return `
  CREATE SCHEMA IF NOT EXISTS ${schema};
  CREATE TABLE IF NOT EXISTS ${schema}.state_store (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    expires_at BIGINT
  );
  CREATE TABLE IF NOT EXISTS ${schema}.state_history (
    id BIGSERIAL PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    old TEXT,
    new TEXT,
    transition TEXT NOT NULL,
    source TEXT NOT NULL,
    actor TEXT,
    at BIGINT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS state_history_key ON ${schema}.state_history (key, id);
  CREATE INDEX IF NOT EXISTS state_store_expiry ON ${schema}.state_store (expires_at) WHERE expires_at IS NOT NULL;
  CREATE TABLE IF NOT EXISTS ${schema}.state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
  -- The fencing token: bumped by each bridge that takes the hold; a commit carrying an
  -- older one is refused, so a bridge that lost its hold cannot overwrite a newer value.
  -- The newest fencing token of a distributed key lock that wrote each key.
  CREATE TABLE IF NOT EXISTS ${schema}.state_fence (key TEXT PRIMARY KEY, token BIGINT NOT NULL);
  CREATE TABLE IF NOT EXISTS ${schema}.state_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL,
    since BIGINT NOT NULL
  );`;
}

/** SQLSTATE of a commit refused because its fencing token is stale. */
export const FENCED_SQLSTATE = "WBL01";
/** SQLSTATE of a write refused because its key lock's fencing token is older than the key's. */
export const STALE_LOCK_SQLSTATE = "WBL02";

/** The channel other bridges LISTEN on for this schema's commits. */
export function changeChannel(schema: string): string {
  return `wb_${schema}`.slice(0, 63);
}

export interface BatchExtras {
  /** Refuse the commit unless the lease is still at this epoch. */
  fence: number | null;
  /** Tell listeners of other bridges which keys changed (delivered on commit only). */
  notify: { channel: string; instance: string } | null;
}

/** One notification payload per changed key; short fields keep it far below PostgreSQL's 8000 bytes. */
export function changePayload(instance: string, op: Pick<EncodedOp, "key" | "transition" | "source" | "actor">, deleted: boolean): string {
  return JSON.stringify({ i: instance, k: op.key, t: op.transition ?? null, d: deleted, s: op.source, a: op.actor });
}

/**
 * The whole transaction for a batch. Per-key transaction locks, taken in one order,
 * serialize writers of the same key across bridges (also for keys not yet stored, which
 * row locks cannot cover), so each history entry's `old` is the value it replaced.
 */
export function batchSql(
  schema: string,
  ops: readonly EncodedOp[],
  now: number,
  withHistory: boolean,
  extras: BatchExtras = { fence: null, notify: null },
): string {
  const last = new Map<string, EncodedOp>();
  for (const op of ops) last.set(op.key, op);
  const keys = [...last.keys()];
  const upserts = [...last.values()].filter((op) => op.text !== null);
  const deletes = [...last.values()].filter((op) => op.text === null).map((op) => op.key);
  const parts = [
    "BEGIN;",
    `SELECT pg_advisory_xact_lock(${LOCK_SPACE.key}, h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(ARRAY[${keys.map(lit).join(", ")}]::text[]) AS k ORDER BY h) AS locks;`,
  ];
  if (extras.fence !== null) {
    parts.push(
      `DO $fence$ BEGIN IF (SELECT epoch FROM ${schema}.state_lease WHERE id = 1) IS DISTINCT FROM ${lit(extras.fence)} THEN
         RAISE EXCEPTION 'the lease on schema ${schema} has moved to another bridge' USING ERRCODE = '${FENCED_SQLSTATE}';
       END IF; END $fence$;`,
    );
  }
  for (const op of ops) {
    if (op.fenceToken === undefined) continue;
    parts.push(
      `DO $fence$ BEGIN
         INSERT INTO ${schema}.state_fence (key, token) VALUES (${lit(op.key)}, ${lit(op.fenceToken)})
           ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token WHERE ${schema}.state_fence.token <= EXCLUDED.token;
         IF NOT FOUND THEN
           RAISE EXCEPTION 'the lock on % was lost: a newer holder has written it', ${lit(op.key)} USING ERRCODE = '${STALE_LOCK_SQLSTATE}';
         END IF;
       END $fence$;`,
    );
  }
  if (withHistory) parts.push(historySql(schema, ops, now));
  if (upserts.length > 0) {
    const rows = upserts.map((op) => `(${lit(op.key)}, ${lit(op.text)}, ${now}, ${op.version}, ${lit(op.expiresAt)}::bigint)`);
    parts.push(
      `INSERT INTO ${schema}.state_store (key, value, updated_at, version, expires_at) VALUES ${rows.join(", ")}
       ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at,
         version = EXCLUDED.version, expires_at = EXCLUDED.expires_at;`,
    );
  }
  if (deletes.length > 0) parts.push(`DELETE FROM ${schema}.state_store WHERE key IN (${deletes.map(lit).join(", ")});`);
  const notify = extras.notify;
  if (notify) {
    const rows = [...last.values()].map((op) => `(${lit(changePayload(notify.instance, op, op.text === null))})`);
    parts.push(`SELECT pg_notify(${lit(notify.channel)}, p) FROM (VALUES ${rows.join(", ")}) AS n(p);`);
  }
  parts.push("COMMIT;");
  return parts.join("\n");
}

function historySql(schema: string, ops: readonly EncodedOp[], now: number): string {
  const seen = new Map<string, string | null>();
  const rows = ops.map((op, i) => {
    const hasPrev = seen.has(op.key);
    const prev = hasPrev ? (seen.get(op.key) ?? null) : null;
    seen.set(op.key, op.text);
    return `(${i}, ${lit(op.key)}, ${lit(op.text)}::text, ${lit(prev)}::text, ${hasPrev}, ${lit(op.transition ?? null)}::text, ${lit(op.source)}, ${lit(op.actor)}::text)`;
  });
  return `
    WITH v(i, key, new, prev, has_prev, transition, source, actor) AS (VALUES ${rows.join(", ")}),
    o AS (
      SELECT v.*, CASE WHEN has_prev THEN prev
        ELSE (SELECT s.value FROM ${schema}.state_store s WHERE s.key = v.key AND (s.expires_at IS NULL OR s.expires_at > ${now})) END AS old
      FROM v
    )
    INSERT INTO ${schema}.state_history (key, old, new, transition, source, actor, at)
    SELECT key, old, new,
      COALESCE(transition, CASE WHEN new IS NULL THEN 'delete' WHEN old IS NULL THEN 'create' ELSE 'update' END),
      source, actor, ${now}
    FROM o WHERE NOT (new IS NULL AND old IS NULL) ORDER BY i;`;
}
