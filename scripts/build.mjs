// `npm run build`: app/main.ts into dist/wb-bridge.js, with the optional engines
// (PostgreSQL, Redis, the docs) in chunks of their own, loaded when first used.
//
// Packages are loaded from node_modules at run time, but for zod and the Fastify type
// provider built on it: zod's entry points are some 80 modules, its 64 locales among them
// (340 KB of source), and bundled they are one. Measured idle 25 s after ready, 100
// devices on mosquitto, alternating: 69.3, 69.7, 69.3 MB against 70.7, 70.8, 69.8 MB.
import { build } from "esbuild";

const BUNDLED = new Set(["zod", "fastify-type-provider-zod"]);

/** `@scope/name/sub/path` -> `@scope/name`, `name/sub` -> `name`. */
function packageOf(specifier) {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

await build({
  entryPoints: ["app/main.ts"],
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  splitting: true,
  outdir: "dist",
  entryNames: "wb-bridge",
  logLevel: "warning",
  plugins: [
    {
      name: "node-modules-external",
      setup(esbuild) {
        // Bare specifiers only: node: builtins and packages; relative and absolute paths are the app's.
        esbuild.onResolve({ filter: /^[^./]/ }, ({ path }) => (BUNDLED.has(packageOf(path)) ? undefined : { external: true }));
      },
    },
  ],
});
