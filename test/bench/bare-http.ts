/**
 * Baseline process for figure 4: a bare Fastify route that returns an object from a
 * Map, the least a `GET /devices/:id/state` can cost. Same Fastify, same Node, no hooks.
 */
import Fastify from "fastify";
import { benchDeviceId } from "./fixture.js";

const port = Number(process.env.BARE_HTTP_PORT ?? 0);
const devices = Number(process.env.BARE_HTTP_DEVICES ?? 100);
// The same shape as the bridge's answer, so both serialize about the same bytes.
const states = new Map<
  string,
  { id: string; state: Record<string, unknown>; updated_at: string | null; reachable: boolean; restored: boolean }
>();
for (let i = 0; i < devices; i++) {
  const id = benchDeviceId(i);
  states.set(id, {
    id,
    state: { power: false, volume: 20, muted: false, input: "hdmi1" },
    updated_at: null,
    reachable: true,
    restored: false,
  });
}

const app = Fastify({ logger: false });
app.get<{ Params: { id: string } }>("/devices/:id/state", async (request, reply) => {
  const found = states.get(request.params.id);
  if (!found) return reply.code(404).send({ error: "not found" });
  return found;
});
app.get("/health/ready", async () => ({ ready: true }));
await app.listen({ host: "127.0.0.1", port });

const stop = () => void app.close().finally(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
