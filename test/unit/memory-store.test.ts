import { MemoryStateStore } from "../../app/state/memory-store.js";
import { describeStoreContract } from "./store-contract.js";

describeStoreContract("memory", () => {
  const store = new MemoryStateStore();
  return { store, reopen: () => store };
});
