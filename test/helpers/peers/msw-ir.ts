import { TestMqttClient } from "../mqtt.js";

export interface Playback {
  rom: number;
  payload: string;
  qos: number;
}

/**
 * An emulated WB-MSW v3 IR blaster: records every playback command it receives on
 * `/devices/<id>/controls/Play from ROM<n>/on`.
 */
export class EmulatedIrBlaster {
  readonly playbacks: Playback[] = [];
  private waiters: Array<{ count: number; resolve: () => void }> = [];

  private constructor(
    readonly id: string,
    readonly mqtt: TestMqttClient,
  ) {}

  static async start(url: string, id: string, roms = 8): Promise<EmulatedIrBlaster> {
    const mqtt = await TestMqttClient.connect(url, `msw-${id}-${Math.random().toString(16).slice(2)}`);
    const blaster = new EmulatedIrBlaster(id, mqtt);
    mqtt.client.on("message", (topic, payload, packet) => {
      const m = /^\/devices\/[^/]+\/controls\/Play from ROM(\d+)\/on$/.exec(topic);
      if (!m || packet.retain) return;
      blaster.playbacks.push({ rom: Number(m[1]), payload: payload.toString("utf8"), qos: packet.qos });
      blaster.waiters = blaster.waiters.filter((w) => {
        if (blaster.playbacks.length < w.count) return true;
        w.resolve();
        return false;
      });
    });
    await mqtt.subscribe(`/devices/${id}/controls/+/on`);
    await mqtt.publish(`/devices/${id}/meta`, JSON.stringify({ driver: "wb-modbus", title: { en: id } }), true);
    for (let n = 1; n <= roms; n++) {
      await mqtt.publish(`/devices/${id}/controls/Play from ROM${n}/meta`, JSON.stringify({ type: "pushbutton" }), true);
    }
    return blaster;
  }

  /** The ROM positions played so far, in order. */
  get roms(): number[] {
    return this.playbacks.map((p) => p.rom);
  }

  /** Resolves once `count` playbacks in total have been received. */
  waitForPlaybacks(count: number, timeoutMs = 5000): Promise<void> {
    if (this.playbacks.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.id}: ${this.playbacks.length} of ${count} playbacks within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  async close(): Promise<void> {
    await this.mqtt.close();
  }
}
