import type { FastifySchema, FastifySerializerCompiler } from "fastify";

/**
 * A route-level `serializerCompiler` for answers the route builds from values the bridge
 * has validated itself. The app-wide zod serializer re-validates (encodes) every answer
 * against its schema before `JSON.stringify`; on `GET /devices/:id/state` that cost more
 * than everything else the bridge adds to a request (figure 4 of `npm run bench`). The response
 * schemas stay on the route: the OpenAPI document and the handler's types still come
 * from them. Only for routes whose answer type has exactly the schema's fields and no
 * codecs (dates, transforms): nothing strips unknown fields or encodes values here.
 */
export const trustedJsonSerializer: FastifySerializerCompiler<FastifySchema> = () => (data: unknown) => JSON.stringify(data);

/**
 * `true` when `A` and `B` have the same keys. A route using `trustedJsonSerializer`
 * asserts this between its answer type and the schema's output, so a field added to one
 * and not the other fails to compile instead of going undocumented (or missing).
 */
export type SameKeys<A, B> = [keyof A] extends [keyof B] ? ([keyof B] extends [keyof A] ? true : false) : false;

/** Fails to compile unless `T` is `true`: `AssertTrue<SameKeys<View, z.output<typeof schema>>>`. */
export type AssertTrue<T extends true> = T;
