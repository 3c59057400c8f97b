import { TestMqttClient } from "./mqtt.js";

/** Topic and payload pairs, sorted by topic. */
export type Retained = Array<[string, string]>;

function sorted(entries: Iterable<[string, string]>): Retained {
  return [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The last payload of every topic under /devices/ as one subscriber sees it, sorted:
 * retained messages sent on subscribing, or live ones when the bridge is still
 * republishing (right after a broker restart). Waits until `expectedCount` topics are in.
 */
export async function retainedSnapshot(url: string, expectedCount: number): Promise<Retained> {
  const client = await TestMqttClient.connect(url);
  // An empty payload deletes a retained topic: it is not part of what the broker keeps.
  const topics = () => new Map([...new Map(client.received.map((m) => [m.topic, m.payload]))].filter(([, payload]) => payload !== ""));
  try {
    await client.subscribe("/devices/#");
    await client.waitFor("/devices/#", () => topics().size >= expectedCount, 10_000).catch(() => undefined);
    return sorted(topics().entries());
  } finally {
    await client.close();
  }
}

/**
 * Exactly what the broker retains under `filter` at this moment, without guessing how
 * many topics to wait for: after subscribing, the client publishes a marker to itself.
 * The broker queues a subscription's retained messages before the marker (one client's
 * messages are delivered in order), so when the marker arrives every retained one has.
 * For up to the broker's queue limit of retained topics (mosquitto: 1000).
 */
export async function retainedNow(url: string, filter = "/devices/#", timeoutMs = 5000): Promise<Map<string, string>> {
  const client = await TestMqttClient.connect(url);
  const marker = `wb-bridge-test/marker/${Math.random().toString(16).slice(2)}`;
  try {
    await client.subscribe(filter);
    await client.subscribe(marker);
    await client.publish(marker, "end");
    await client.waitFor(marker, () => true, timeoutMs);
    const retained = new Map<string, string>();
    for (const m of client.received) {
      if (m.topic === marker) break;
      // Live messages (retain flag clear) may interleave; only the stored ones count.
      if (m.retain && m.payload !== "") retained.set(m.topic, m.payload);
    }
    return retained;
  } finally {
    await client.close();
  }
}

/** `actual` against `expected`: topics missing, unexpected, or with another payload. */
export function retainedDiff(expected: ReadonlyMap<string, string>, actual: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  for (const [topic, payload] of expected) {
    const got = actual.get(topic);
    if (got === undefined) problems.push(`missing ${topic} (expected ${JSON.stringify(payload)})`);
    else if (got !== payload) problems.push(`${topic}: ${JSON.stringify(got)}, expected ${JSON.stringify(payload)}`);
  }
  for (const topic of actual.keys()) if (!expected.has(topic)) problems.push(`unexpected ${topic}`);
  return problems;
}
