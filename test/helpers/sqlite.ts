import sqlite3 from "sqlite3";

/** Reads rows straight from the SQLite file with its own connection, as an outside observer would. */
export async function readRows(path: string, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  const db = await new Promise<sqlite3.Database>((resolve, reject) => {
    const d = new sqlite3.Database(path, sqlite3.OPEN_READWRITE, (err) => (err ? reject(err) : resolve(d)));
  });
  try {
    return await new Promise((resolve, reject) =>
      db.all<Record<string, unknown>>(sql, params, (err, rows) => (err ? reject(err) : resolve(rows))),
    );
  } finally {
    await new Promise<void>((resolve) => db.close(() => resolve()));
  }
}

export async function readStoredValue(path: string, key: string): Promise<unknown> {
  const rows = await readRows(path, "SELECT value FROM state_store WHERE key = ?", [key]);
  const row = rows[0];
  return row ? JSON.parse(String(row.value)) : null;
}

/** Creates (or opens) the file and runs `sql` on it: for databases laid out as an older bridge left them. */
export async function execSql(path: string, sql: string): Promise<void> {
  const db = await new Promise<sqlite3.Database>((resolve, reject) => {
    const d = new sqlite3.Database(path, sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE, (err) => (err ? reject(err) : resolve(d)));
  });
  try {
    await new Promise<void>((resolve, reject) => db.exec(sql, (err) => (err ? reject(err) : resolve())));
  } finally {
    await new Promise<void>((resolve) => db.close(() => resolve()));
  }
}
