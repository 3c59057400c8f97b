import autocannon from "autocannon";
import { freePort } from "../helpers/ports.js";
import { ChildUnderTest } from "./child.js";

export interface HttpReadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

/**
 * `GET /devices/:id/state` over keep-alive connections with autocannon, cycling through
 * the devices. The load generator runs here; the server under test in its own process.
 */
export async function benchStateReads(
  baseUrl: string,
  deviceIds: readonly string[],
  settings: { connections: number; seconds: number },
): Promise<HttpReadResult> {
  const result = await autocannon({
    url: baseUrl,
    connections: settings.connections,
    duration: settings.seconds,
    requests: deviceIds.map((id) => ({ method: "GET" as const, path: `/devices/${id}/state` })),
  });
  return {
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
  };
}

/** The baseline server of figure 4 (test/bench/bare-http.ts) in its own process. */
export async function startBareHttp(devices: number, nodeArgs: readonly string[] = []): Promise<{ child: ChildUnderTest; url: string }> {
  const port = await freePort();
  const child = ChildUnderTest.start(
    "test/bench/bare-http.ts",
    { BARE_HTTP_PORT: String(port), BARE_HTTP_DEVICES: String(devices) },
    nodeArgs,
  );
  const url = `http://127.0.0.1:${port}`;
  await child.waitReady(`${url}/health/ready`);
  return { child, url };
}
