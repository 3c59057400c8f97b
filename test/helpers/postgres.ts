import { randomBytes } from "node:crypto";
import pg from "pg";
import { requireService } from "./services.js";

/**
 * The PostgreSQL server the tests use: TEST_POSTGRES_URL, or the machine's own on
 * 127.0.0.1:5432 with database `wb_bridge_test` (created here when missing, as .ci/run
 * also does). Each test gets its own schema and drops it afterwards.
 */
export const TEST_POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/wb_bridge_test";

/** Null when the server answers; otherwise why not. Creates the test database if the server has none. */
export async function postgresUnavailable(url = TEST_POSTGRES_URL): Promise<string | null> {
  try {
    await withClient(url, async () => undefined);
    return null;
  } catch (err) {
    if ((err as { code?: string }).code !== "3D000") return `PostgreSQL at ${url} does not answer: ${(err as Error).message}`;
  }
  const target = new URL(url);
  const database = target.pathname.slice(1);
  target.pathname = "/postgres";
  try {
    await withClient(target.toString(), (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(database)}`));
    return null;
  } catch (err) {
    if ((err as { code?: string }).code === "42P04") return null;
    return `cannot create test database ${database}: ${(err as Error).message}`;
  }
}

/** See requireService: fails under CI without the server, else skips with the reason. */
export function requirePostgres(): Promise<boolean> {
  return requireService("PostgreSQL", () => postgresUnavailable());
}

export function uniqueSchema(prefix = "t"): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

export async function dropSchema(schema: string, url = TEST_POSTGRES_URL): Promise<void> {
  await withClient(url, (c) => c.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`));
}

export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on("error", () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
