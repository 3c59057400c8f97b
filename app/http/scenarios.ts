import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { ScenarioDefinition } from "../config/scenario.js";
import type { Bridge } from "../lifespan.js";
import { failedStepSchema, scenarioStateSchema } from "../scenarios/state.js";
import { jsonObjectSchema } from "../shared/json.js";
import { errorResponseSchema, idParamsSchema, scenarioSummarySchema, switchBodySchema } from "./schemas.js";

const scenarioStateResponse = z.object({
  scenario_id: z.string().nullable(),
  devices: z.record(z.string(), jsonObjectSchema),
  switched_at: z.string().nullable(),
  failed_steps: z.array(failedStepSchema),
});

function summary(s: ScenarioDefinition) {
  return {
    id: s.scenario_id,
    name: s.name,
    description: s.description ?? null,
    room: s.room ?? null,
    devices: [...s.devices],
    roles: { ...s.roles },
  };
}

export function scenariosRoutes(bridge: Bridge): FastifyPluginAsyncZod {
  return async (app) => {
    app.get("/scenarios", { schema: { response: { 200: z.array(scenarioSummarySchema) } } }, async () =>
      bridge.scenarios.list().map(summary),
    );

    app.get(
      "/scenarios/:id",
      { schema: { params: idParamsSchema, response: { 200: scenarioSummarySchema, 404: errorResponseSchema } } },
      async (request) => summary(bridge.scenarios.get(request.params.id)),
    );

    app.get("/scenario/state", { schema: { response: { 200: scenarioStateResponse } } }, async () => {
      const state = bridge.scenarios.state();
      return state ?? { scenario_id: null, devices: {}, switched_at: null, failed_steps: [] };
    });

    app.post(
      "/scenario/switch",
      {
        schema: {
          body: switchBodySchema,
          response: { 200: scenarioStateSchema, 400: errorResponseSchema, 404: errorResponseSchema },
        },
      },
      async (request) => bridge.scenarios.switch(request.body.id),
    );
  };
}
