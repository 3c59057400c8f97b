import "./permissions.js";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { DeviceDefinition } from "../config/device.js";
import type { DeviceStateView } from "../devices/manager.js";
import type { Bridge } from "../lifespan.js";
import {
  actionBodySchema,
  deviceDetailSchema,
  deviceStateSchema,
  deviceSummarySchema,
  errorResponseSchema,
  idParamsSchema,
} from "./schemas.js";
import { type AssertTrue, type SameKeys, trustedJsonSerializer } from "./serializer.js";

/** The state route's trusted serializer needs the view to have exactly the documented fields. */
export type StateViewMatchesSchema = AssertTrue<SameKeys<DeviceStateView, z.output<typeof deviceStateSchema>>>;

function summary(device: DeviceDefinition) {
  return {
    id: device.device_id,
    name: device.device_name,
    driver: device.driver,
    room: device.room ?? null,
    actions: Object.keys(device.commands),
  };
}

export function devicesRoutes(bridge: Bridge): FastifyPluginAsyncZod {
  return async (app) => {
    app.get("/devices", { config: { permission: "devices:read" }, schema: { response: { 200: z.array(deviceSummarySchema) } } }, async () =>
      bridge.devices.list().map(summary),
    );

    app.get(
      "/devices/:id",
      {
        config: { permission: "devices:read" },
        schema: { params: idParamsSchema, response: { 200: deviceDetailSchema, 404: errorResponseSchema } },
      },
      async (request) => {
        const device = bridge.devices.get(request.params.id);
        return {
          ...summary(device),
          file: device.file,
          commands: Object.fromEntries(
            Object.entries(device.commands).map(([name, c]) => [name, { description: c.description ?? null, params: c.params }]),
          ),
          controls: bridge.devices.controls(device.device_id).map((c) => ({
            id: c.id,
            type: c.meta.type,
            readonly: c.meta.readonly,
            order: c.meta.order,
          })),
        };
      },
    );

    // The hot read path: DeviceManager validated the state when it was restored or
    // changed, so the answer is not validated again (see trustedJsonSerializer).
    app.get(
      "/devices/:id/state",
      {
        config: { permission: "devices:read" },
        schema: { params: idParamsSchema, response: { 200: deviceStateSchema, 404: errorResponseSchema } },
        serializerCompiler: trustedJsonSerializer,
      },
      async (request) => bridge.devices.getState(request.params.id),
    );

    app.post(
      "/devices/:id/action",
      {
        config: { permission: "devices:control" },
        schema: {
          params: idParamsSchema,
          body: actionBodySchema,
          response: { 200: deviceStateSchema, 400: errorResponseSchema, 404: errorResponseSchema },
        },
      },
      async (request) => bridge.devices.performAction(request.params.id, request.body.action, request.body.params ?? {}, "http"),
    );
  };
}
