import { it } from "vitest";
import { PostgresStateStore } from "../../app/state/postgres-store.js";
import { dropSchema, requirePostgres, TEST_POSTGRES_URL, uniqueSchema } from "../helpers/postgres.js";
import { describeStoreContract } from "./store-contract.js";

const ready = await requirePostgres();

if (ready) {
  describeStoreContract("postgres", (_dir, now) => {
    const schema = uniqueSchema("contract");
    const make = () => new PostgresStateStore({ url: TEST_POSTGRES_URL, schema, now });
    return { store: make(), reopen: make, cleanup: () => dropSchema(schema) };
  });
} else {
  it.skip("StateStore contract: postgres (PostgreSQL not reachable, see the printed reason)", () => undefined);
}
