import { type EncodedOp, lit } from "./stored-text.js";

/**
 * SQL text for one group-commit transaction. Values are inlined as SQL literals so the
 * whole transaction is one `exec()` — one round trip to the driver's thread pool instead
 * of one per statement, which is what limits the sqlite3 driver's commit rate.
 * Inputs are JSON text, base64 tokens and validated keys; NUL is refused upstream.
 */

export const SCHEMA_SQL = `
  CREATE TABLE IF NOT EXISTS state_store (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    expires_at INTEGER
  );
  -- No AUTOINCREMENT: it writes the sqlite_sequence page on every commit. Ids still only
  -- grow because pruning never deletes the newest row (see pruneHistory).
  CREATE TABLE IF NOT EXISTS state_history (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT,
    transition TEXT NOT NULL,
    source TEXT NOT NULL,
    actor TEXT,
    at INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS state_history_key ON state_history (key, id);
  -- Every index is one more page written per commit (flash wear, WAL bytes). Searches by
  -- transition walk the id order, and age pruning already scans (per-key retention is a
  -- window over the table), so neither index paid for itself; older databases lose them.
  DROP INDEX IF EXISTS state_history_transition;
  DROP INDEX IF EXISTS state_history_at;
  CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

/** Columns added after the first release; added in place to databases that lack them. */
export const ADDED_COLUMNS: ReadonlyArray<[string, string]> = [
  ["version", "ALTER TABLE state_store ADD COLUMN version INTEGER NOT NULL DEFAULT 1"],
  ["expires_at", "ALTER TABLE state_store ADD COLUMN expires_at INTEGER"],
];

const live = (now: number) => `(s.expires_at IS NULL OR s.expires_at > ${now})`;

const INSERT_HISTORY = "INSERT INTO state_history (key, old, new, transition, source, actor, at)";

/**
 * History rows for the ops, in order: one plain INSERT per op. SQLite parses every
 * statement of an `exec()` afresh, and a VALUES-list CTE joined back to the store cost
 * about twice the CPU of these per commit (most commits carry one or a few ops). Each
 * op's `old` is the previous op's value for that key, or the stored one.
 */
function historySql(ops: readonly EncodedOp[], now: number): string {
  const seen = new Map<string, string | null>();
  return ops
    .map((op) => {
      const earlier = seen.has(op.key);
      const old = seen.get(op.key) ?? null;
      seen.set(op.key, op.text);
      const key = lit(op.key);
      const tail = `${lit(op.source)}, ${lit(op.actor)}, ${now}`;
      if (earlier) {
        if (old === null && op.text === null) return "";
        const transition = op.transition ?? (op.text === null ? "delete" : old === null ? "create" : "update");
        return `${INSERT_HISTORY} VALUES (${key}, ${lit(old)}, ${lit(op.text)}, ${lit(transition)}, ${tail});`;
      }
      const stored = `(SELECT s.value FROM state_store s WHERE s.key = ${key} AND ${live(now)})`;
      // The state service names every transition: a plain VALUES row parses in about 15% less
      // of a batch's CPU than the derived table below, which exists to work one out.
      if (op.text !== null && op.transition !== undefined) {
        return `${INSERT_HISTORY} VALUES (${key}, ${stored}, ${lit(op.text)}, ${lit(op.transition)}, ${tail});`;
      }
      const given = lit(op.transition ?? null);
      // A delete of a key that holds nothing (or only an expired value) leaves no row.
      return op.text === null
        ? `${INSERT_HISTORY} SELECT ${key}, o.v, NULL, COALESCE(${given}, 'delete'), ${tail} FROM (SELECT ${stored} AS v) o WHERE o.v IS NOT NULL;`
        : `${INSERT_HISTORY} SELECT ${key}, o.v, ${lit(op.text)}, COALESCE(${given}, CASE WHEN o.v IS NULL THEN 'create' ELSE 'update' END), ${tail} FROM (SELECT ${stored} AS v) o;`;
    })
    .join("\n");
}

const ROWS_PER_STATEMENT = 500;

/** The whole transaction for a batch, as one script. */
export function batchSql(ops: readonly EncodedOp[], now: number, withHistory: boolean): string {
  const last = new Map<string, EncodedOp>();
  for (const op of ops) last.set(op.key, op);
  const upserts = [...last.values()].filter((op) => op.text !== null);
  const deletes = [...last.values()].filter((op) => op.text === null).map((op) => op.key);

  const parts = ["BEGIN IMMEDIATE;"];
  if (withHistory) parts.push(historySql(ops, now));
  for (let i = 0; i < upserts.length; i += ROWS_PER_STATEMENT) {
    const rows = upserts
      .slice(i, i + ROWS_PER_STATEMENT)
      .map((op) => `(${lit(op.key)}, ${lit(op.text)}, ${now}, ${op.version}, ${lit(op.expiresAt)})`);
    parts.push(
      `INSERT INTO state_store (key, value, updated_at, version, expires_at) VALUES ${rows.join(", ")}
       ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
         version = excluded.version, expires_at = excluded.expires_at;`,
    );
  }
  for (let i = 0; i < deletes.length; i += ROWS_PER_STATEMENT) {
    parts.push(
      `DELETE FROM state_store WHERE key IN (${deletes
        .slice(i, i + ROWS_PER_STATEMENT)
        .map(lit)
        .join(", ")});`,
    );
  }
  parts.push("COMMIT;");
  return parts.join("\n");
}
