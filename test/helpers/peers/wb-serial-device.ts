import { type Received, TestMqttClient } from "../mqtt.js";

/**
 * An emulated wb-mqtt-serial device (a WB-MR6C relay module, a dimmer): publishes its
 * controls retained, answers a command on `/devices/<id>/controls/<c>/on` by publishing
 * the value retained on `/devices/<id>/controls/<c>`, and can be told to report errors
 * on `.../meta/error` the way wb-mqtt-serial does when the module stops answering.
 */
export class EmulatedWbSerialDevice {
  readonly values = new Map<string, string>();

  private constructor(
    readonly id: string,
    readonly mqtt: TestMqttClient,
  ) {}

  static async start(url: string, id: string, controls: Record<string, string>): Promise<EmulatedWbSerialDevice> {
    const mqtt = await TestMqttClient.connect(url, `serial-${id}-${Math.random().toString(16).slice(2)}`);
    const device = new EmulatedWbSerialDevice(id, mqtt);
    mqtt.client.on("message", (topic, payload, packet) => {
      const m = /^\/devices\/[^/]+\/controls\/([^/]+)\/on$/.exec(topic);
      // Like the real driver, a retained command is not executed.
      if (m && !packet.retain) void device.set(m[1] as string, payload.toString("utf8"));
    });
    await mqtt.subscribe(`/devices/${id}/controls/+/on`);
    await mqtt.publish(`/devices/${id}/meta`, JSON.stringify({ driver: "wb-modbus", title: { en: id } }), true);
    for (const [control, value] of Object.entries(controls)) {
      await mqtt.publish(`/devices/${id}/controls/${control}/meta`, JSON.stringify({ type: "value", readonly: false }), true);
      await device.set(control, value);
    }
    return device;
  }

  /** The hardware changed (a command, or someone at the wall switch): retained value. */
  async set(control: string, value: string): Promise<void> {
    this.values.set(control, value);
    await this.mqtt.publish(`/devices/${this.id}/controls/${control}`, value, true);
  }

  /** Commands received on `<control>/on`, in arrival order. */
  commands(control?: string): Received[] {
    return this.mqtt.on(`/devices/${this.id}/controls/${control ?? "+"}/on`);
  }

  /** The next command on the control (one not among those already received). */
  nextCommand(control: string): Promise<Received> {
    const before = this.commands(control);
    return this.mqtt.waitFor(`/devices/${this.id}/controls/${control}/on`, (m) => !before.includes(m));
  }

  /** wb-mqtt-serial's error flags for one control: `r` read failed, `w` write failed, `p` poll period missed. */
  async fail(control: string, flags: "r" | "w" | "rw" | "p" = "r"): Promise<void> {
    await this.mqtt.publish(`/devices/${this.id}/controls/${control}/meta/error`, flags, true);
  }

  /** Clears the flags the way wb-mqtt-serial does: an empty retained payload. */
  async recover(control: string): Promise<void> {
    await this.mqtt.publish(`/devices/${this.id}/controls/${control}/meta/error`, "", true);
  }

  /** Removes every retained value it published (empty retained payloads), as if the module was never there. */
  async forgetRetained(): Promise<void> {
    for (const control of this.values.keys()) {
      await this.mqtt.publish(`/devices/${this.id}/controls/${control}`, "", true);
    }
  }

  async close(): Promise<void> {
    await this.mqtt.close();
  }
}
