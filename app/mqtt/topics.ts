/**
 * Wiren Board MQTT topic names (wirenboard/conventions). Pure functions: the only place
 * that knows the topic layout.
 */
export const wbTopics = {
  deviceMeta: (device: string) => `/devices/${device}/meta`,
  deviceMetaName: (device: string) => `/devices/${device}/meta/name`,
  deviceError: (device: string) => `/devices/${device}/meta/error`,
  control: (device: string, control: string) => `/devices/${device}/controls/${control}`,
  controlMeta: (device: string, control: string) => `/devices/${device}/controls/${control}/meta`,
  controlError: (device: string, control: string) => `/devices/${device}/controls/${control}/meta/error`,
  controlOn: (device: string, control: string) => `/devices/${device}/controls/${control}/on`,
  /** Subscription filter for commands to every control of every device. */
  allControlCommands: "/devices/+/controls/+/on",
} as const;

const CONTROL_ON = /^\/devices\/([^/+#]+)\/controls\/([^/+#]+)\/on$/;

export function parseControlOnTopic(topic: string): { device: string; control: string } | null {
  const m = CONTROL_ON.exec(topic);
  return m ? { device: m[1] as string, control: m[2] as string } : null;
}

/** MQTT topic filter matching (`+` one level, `#` the rest). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    const part = f[i];
    if (part === "#") return true;
    if (i >= t.length) return false;
    if (part !== "+" && part !== t[i]) return false;
  }
  return f.length === t.length;
}

export function assertPublishableTopic(topic: string): void {
  if (topic === "" || topic.includes("+") || topic.includes("#") || topic.includes("\u0000")) {
    throw new Error(`cannot publish to "${topic}": topic is empty or contains a wildcard`);
  }
}
