/** What a route needs; the auth layer checks a caller's grants against it. */
export type Permission = "public" | "state:read" | "state:write" | "devices:read" | "devices:control" | "scenarios:control" | "admin";

declare module "fastify" {
  interface FastifyContextConfig {
    permission?: Permission;
  }
}
