import "./permissions.js";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { localizedNamesSchema, wbIdSchema } from "../config/device.js";
import { paramValueSchema, type ScenarioDefinition, type ScenarioStep } from "../config/scenario.js";
import type { Bridge } from "../lifespan.js";
import { failedStepSchema, scenarioChangeResultSchema } from "../scenarios/state.js";
import { jsonObjectSchema } from "../shared/json.js";
import { errorResponseSchema, idParamsSchema } from "./schemas.js";

const scenarioSummary = z.object({
  id: z.string(),
  name: z.string(),
  names: localizedNamesSchema.nullable(),
  description: z.string().nullable(),
  room: z.string().nullable(),
  devices: z.array(z.string()),
  roles: z.record(z.string(), z.string()),
});

const stepResponse = z.object({
  device: z.string(),
  /** Set when the step names a role; `device` is then the role's device. */
  role: z.string().nullable(),
  action: z.string(),
  params: z.record(z.string(), paramValueSchema),
  condition: z.string().nullable(),
  delay_after_ms: z.number().nullable(),
});

const definitionResponse = z.object({
  scenario_id: z.string(),
  name: z.string(),
  names: localizedNamesSchema.nullable(),
  description: z.string().nullable(),
  room: z.string().nullable(),
  roles: z.record(z.string(), z.string()),
  devices: z.array(z.string()),
  startup: z.array(stepResponse),
  shutdown: z.array(stepResponse),
  file: z.string(),
});

const scenarioStateResponse = z.object({
  scenario_id: z.string().nullable(),
  devices: z.record(z.string(), jsonObjectSchema),
  switched_at: z.string().nullable(),
  failed_steps: z.array(failedStepSchema),
});

const switchBody = z.object({ id: wbIdSchema, graceful: z.boolean().optional() }).strict();
const startBody = z.object({ id: wbIdSchema }).strict();
const roleActionBody = z
  .object({ role: wbIdSchema, action: wbIdSchema, params: z.record(z.string(), paramValueSchema).optional() })
  .strict();
const roleActionResponse = z.object({
  scenario_id: z.string(),
  role: z.string(),
  device: z.string(),
  action: z.string(),
  state: jsonObjectSchema,
  updated_at: z.string().nullable(),
});

const errors = { 400: errorResponseSchema, 404: errorResponseSchema, 409: errorResponseSchema, 503: errorResponseSchema };

function summary(s: ScenarioDefinition): z.infer<typeof scenarioSummary> {
  return {
    id: s.scenario_id,
    name: s.name,
    names: s.names ?? null,
    description: s.description ?? null,
    room: s.room ?? null,
    devices: [...s.devices],
    roles: { ...s.roles },
  };
}

function step(s: ScenarioStep): z.infer<typeof stepResponse> {
  return {
    device: s.device,
    role: s.role ?? null,
    action: s.action,
    params: { ...s.params },
    condition: s.condition?.source ?? null,
    delay_after_ms: s.delay_after_ms ?? null,
  };
}

function definition(s: ScenarioDefinition): z.infer<typeof definitionResponse> {
  return {
    scenario_id: s.scenario_id,
    name: s.name,
    names: s.names ?? null,
    description: s.description ?? null,
    room: s.room ?? null,
    roles: { ...s.roles },
    devices: [...s.devices],
    startup: s.startup.map(step),
    shutdown: s.shutdown.map(step),
    file: s.file,
  };
}

export function scenariosRoutes(bridge: Bridge): FastifyPluginAsyncZod {
  const scenarios = bridge.scenarios;
  return async (app) => {
    app.get("/scenarios", { config: { permission: "devices:read" }, schema: { response: { 200: z.array(scenarioSummary) } } }, async () =>
      scenarios.list().map(summary),
    );

    app.get(
      "/scenarios/:id",
      {
        config: { permission: "devices:read" },
        schema: { params: idParamsSchema, response: { 200: scenarioSummary, 404: errorResponseSchema } },
      },
      async (request) => summary(scenarios.get(request.params.id)),
    );

    app.get(
      "/scenario/definition/:id",
      {
        config: { permission: "devices:read" },
        schema: { params: idParamsSchema, response: { 200: definitionResponse, 404: errorResponseSchema } },
      },
      async (request) => definition(scenarios.get(request.params.id)),
    );

    app.get(
      "/scenario/state",
      { config: { permission: "devices:read" }, schema: { response: { 200: scenarioStateResponse } } },
      async () => {
        return scenarios.state() ?? { scenario_id: null, devices: {}, switched_at: null, failed_steps: [] };
      },
    );

    app.post(
      "/scenario/switch",
      {
        config: { permission: "scenarios:control" },
        schema: { body: switchBody, response: { 200: scenarioChangeResultSchema, ...errors } },
      },
      async (request) => scenarios.switch(request.body.id, { graceful: request.body.graceful }),
    );

    app.post(
      "/scenario/start",
      {
        config: { permission: "scenarios:control" },
        schema: { body: startBody, response: { 200: scenarioChangeResultSchema, ...errors } },
      },
      async (request) => scenarios.start(request.body.id),
    );

    app.post(
      "/scenario/shutdown",
      {
        config: { permission: "scenarios:control" },
        schema: { response: { 200: scenarioChangeResultSchema, ...errors } },
      },
      async () => scenarios.shutdownActive(),
    );

    app.post(
      "/scenario/role_action",
      {
        config: { permission: "scenarios:control" },
        schema: { body: roleActionBody, response: { 200: roleActionResponse, ...errors } },
      },
      async (request) => {
        const { role, action, params } = request.body;
        return scenarios.roleAction(role, action, params ?? {});
      },
    );
  };
}
