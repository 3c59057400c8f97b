import { MemoryStateStore } from "../../app/state/memory-store.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("memory", (_dir, now) => {
  const store = new MemoryStateStore(now);
  return { store, reopen: () => store };
});
