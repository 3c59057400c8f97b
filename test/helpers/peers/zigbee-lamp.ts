import { type Received, TestMqttClient } from "../mqtt.js";

export type LampState = {
  state: "ON" | "OFF";
  brightness: number;
  color_temp: number;
  sensors: { temp: number };
  linkquality: number;
};

/**
 * An emulated Zigbee2MQTT lamp: answers JSON on `<base>/set` by publishing its whole new
 * state as JSON on `<base>` (not retained, as Zigbee2MQTT does by default), and reports
 * availability retained on `<base>/availability`.
 */
export class EmulatedZigbeeLamp {
  state: LampState = { state: "OFF", brightness: 10, color_temp: 300, sensors: { temp: 21.5 }, linkquality: 90 };

  private constructor(
    readonly base: string,
    readonly mqtt: TestMqttClient,
  ) {}

  static async start(url: string, base: string, availability: "text" | "json" = "text"): Promise<EmulatedZigbeeLamp> {
    const mqtt = await TestMqttClient.connect(url, `z2m-${Math.random().toString(16).slice(2)}`);
    const lamp = new EmulatedZigbeeLamp(base, mqtt);
    mqtt.client.on("message", (topic, payload, packet) => {
      if (topic !== `${base}/set` || packet.retain) return;
      let request: Record<string, unknown>;
      try {
        request = JSON.parse(payload.toString("utf8")) as Record<string, unknown>;
      } catch (err) {
        // A real Zigbee2MQTT logs and drops it; the tests assert the bridge never sends such a thing.
        throw new Error(`lamp received invalid JSON on ${topic}`, { cause: err });
      }
      void lamp.apply(request);
    });
    await mqtt.subscribe(`${base}/set`);
    await lamp.setAvailable(true, availability);
    return lamp;
  }

  /** Requests received on `<base>/set`, parsed, in arrival order. */
  get requests(): unknown[] {
    return this.mqtt.on(`${this.base}/set`).map((m) => JSON.parse(m.payload) as unknown);
  }

  /** The next request on `<base>/set` (one not among those already received). */
  nextRequest(): Promise<Received> {
    const before = this.mqtt.on(`${this.base}/set`);
    return this.mqtt.waitFor(`${this.base}/set`, (m) => !before.includes(m));
  }

  private async apply(request: Record<string, unknown>): Promise<void> {
    const next = { ...this.state };
    if (request.state === "ON" || request.state === "OFF") next.state = request.state;
    if (request.state === "TOGGLE") next.state = next.state === "ON" ? "OFF" : "ON";
    if (typeof request.brightness === "number") next.brightness = request.brightness;
    if (typeof request.color_temp === "number") next.color_temp = request.color_temp;
    await this.report(next);
  }

  /** Publishes the lamp's full state (something changed on the device itself, or after a /set). */
  async report(state: LampState = this.state): Promise<void> {
    this.state = state;
    await this.mqtt.publish(this.base, JSON.stringify(state));
  }

  async setAvailable(online: boolean, format: "text" | "json" = "text"): Promise<void> {
    const word = online ? "online" : "offline";
    await this.mqtt.publish(`${this.base}/availability`, format === "json" ? JSON.stringify({ state: word }) : word, true);
  }

  /** Anything on the state topic, e.g. a broken message. */
  async publishRaw(payload: string): Promise<void> {
    await this.mqtt.publish(this.base, payload);
  }

  async close(): Promise<void> {
    await this.mqtt.close();
  }
}
