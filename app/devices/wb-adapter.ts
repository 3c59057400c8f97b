import type { Logger } from "pino";
import type { CommandSpec } from "../config/device.js";
import { parsePayload } from "../config/params.js";
import type { ParamValues } from "../config/scenario.js";
import type { InboundMessage, MqttGateway, OutboundMessage } from "../mqtt/gateway.js";
import { parseControlOnTopic, wbTopics } from "../mqtt/topics.js";
import { encodeWbError, encodeWbValue } from "../mqtt/wb-values.js";
import { errorMessage } from "../shared/errors.js";
import type { EventSource } from "../shared/event-bus.js";
import type { ActionFailedEvent, DeviceReachabilityEvent, DeviceStateEvent } from "./events.js";
import type { DeviceEvents, DeviceManager, DeviceSnapshot } from "./manager.js";

type ErrorFlag = "r" | "w";

export interface WbAdapterDeps {
  devices: DeviceManager;
  mqtt: MqttGateway;
  bus: EventSource<DeviceEvents>;
  log: Logger;
}

const retained = (topic: string, payload: string): OutboundMessage => ({ topic, payload, retain: true, qos: 1 });

/**
 * Presents every device as a Wiren Board virtual device (wirenboard/conventions):
 * retained meta and values, commands from `/on` topics, error flags. Driven only by
 * DeviceManager's events, so HTTP, MQTT, scenario and hardware changes publish the same way.
 */
export class WbDeviceAdapter {
  /** device -> control -> error flags currently published. */
  private readonly errors = new Map<string, Map<string, Set<ErrorFlag>>>();
  private readonly removers: Array<() => void> = [];
  private stopCommands: (() => Promise<void>) | null = null;
  private readonly log: Logger;

  constructor(private readonly deps: WbAdapterDeps) {
    this.log = deps.log.child({ module: "wb-adapter" });
  }

  async start(): Promise<void> {
    const { bus, mqtt } = this.deps;
    this.removers.push(
      bus.on("device.state", (e) => this.onState(e)),
      bus.on("device.reachability", (e) => this.onReachability(e)),
      bus.on("action.failed", (e) => this.onActionFailed(e)),
    );
    this.stopCommands = await mqtt.subscribe(wbTopics.allControlCommands, (m) => this.onCommand(m));
    this.removers.push(await mqtt.onEveryConnection(() => this.publishAll()));
  }

  /** Stops listening and marks every device offline (device-level error `r`), as the convention asks. */
  async stop(): Promise<void> {
    for (const remove of this.removers.splice(0)) remove();
    await this.stopCommands?.().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, "unsubscribe failed"));
    this.stopCommands = null;
    await this.deps.mqtt.publishMany(this.published().map((s) => retained(wbTopics.deviceError(s.definition.device_id), "r")));
  }

  /** Every device's meta, values and error flags; at start and after every reconnect. */
  private async publishAll(): Promise<void> {
    const messages: OutboundMessage[] = [];
    for (const snapshot of this.published()) messages.push(...this.deviceMessages(snapshot));
    await this.deps.mqtt.publishMany(messages);
  }

  private deviceMessages(s: DeviceSnapshot): OutboundMessage[] {
    const id = s.definition.device_id;
    const names = s.definition.names;
    const title = { en: names?.en ?? s.definition.device_name, ...(names?.ru ? { ru: names.ru } : {}) };
    const out = [
      retained(wbTopics.deviceMeta(id), JSON.stringify({ driver: "wb-bridge", title })),
      retained(wbTopics.deviceMetaName(id), title.en),
      retained(wbTopics.deviceError(id), s.reachable ? "" : "r"),
    ];
    const errors = this.errorsOf(id);
    for (const control of s.controls) {
      out.push(retained(wbTopics.controlMeta(id, control.id), JSON.stringify(control.meta)));
      const value = control.field ? encodeWbValue(control.meta, s.state[control.field]) : null;
      if (value !== null) out.push(retained(wbTopics.control(id, control.id), value));
      // Also clears flags a previous run may have left retained.
      out.push(retained(wbTopics.controlError(id, control.id), encodeWbError(errors.get(control.id) ?? new Set())));
    }
    return out;
  }

  private onState(e: DeviceStateEvent): void {
    if (e.restored) return;
    const s = this.presented(e.deviceId);
    if (!s) return;
    const messages: OutboundMessage[] = [];
    for (const control of s.controls) {
      if (control.field && (e.changed.includes(control.field) || control.action === e.action)) {
        // The commanded control answers even when its value did not change.
        const value = encodeWbValue(control.meta, s.state[control.field]);
        if (value !== null) messages.push(retained(wbTopics.control(e.deviceId, control.id), value));
      } else if (control.meta.type === "pushbutton" && control.action === e.action) {
        messages.push({ topic: wbTopics.control(e.deviceId, control.id), payload: "1", retain: false, qos: 1 });
      }
    }
    const commanded = s.controls.find((c) => c.action !== undefined && c.action === e.action);
    // A command that succeeded reached the device: neither a write nor a read error stands.
    if (commanded) messages.push(...this.clearFlags(e.deviceId, commanded.id, ["w", "r"]));
    void this.deps.mqtt.publishMany(messages);
  }

  private onReachability(e: DeviceReachabilityEvent): void {
    const s = this.presented(e.deviceId);
    if (!s) return;
    const messages = [retained(wbTopics.deviceError(e.deviceId), e.reachable ? "" : "r")];
    for (const control of s.controls) {
      // Only value controls go unreadable with the device, but any control may hold an `r`
      // (a button pressed while it was away); all of them clear once it answers.
      if (control.field) messages.push(...this.setFlag(e.deviceId, control.id, "r", !e.reachable));
      else if (e.reachable) messages.push(...this.setFlag(e.deviceId, control.id, "r", false));
    }
    void this.deps.mqtt.publishMany(messages);
  }

  private onActionFailed(e: ActionFailedEvent): void {
    const s = this.presented(e.deviceId);
    const control = s?.controls.find((c) => c.action === e.action);
    if (!control) return;
    void this.deps.mqtt.publishMany(this.setFlag(e.deviceId, control.id, e.unreachable ? "r" : "w", true));
  }

  private onCommand(message: InboundMessage): void {
    const target = parseControlOnTopic(message.topic);
    // Other devices on the same broker (real WB hardware) are not ours to handle.
    const s = target ? this.presented(target.device) : undefined;
    if (!target || !s) return;
    if (message.retain) {
      this.log.debug({ device: target.device, control: target.control }, "ignoring retained command");
      return;
    }
    // An empty publish is how a client clears the command it retained; the broker hands it
    // to live subscribers as an ordinary message. It is nobody's command.
    if (message.payload.length === 0) {
      this.log.debug({ device: target.device, control: target.control }, "ignoring an empty command");
      return;
    }
    const control = s.controls.find((c) => c.id === target.control);
    if (!control) {
      // Answered, but neither retained nor tracked: each made-up control name would
      // otherwise add a retained topic and a flag entry that live forever.
      this.log.warn({ device: target.device, control: target.control, reason: "no such control" }, "MQTT command rejected");
      void this.deps.mqtt.publishMany([
        { topic: wbTopics.controlError(target.device, target.control), payload: "w", retain: false, qos: 1 },
      ]);
      return;
    }
    const command = control.action ? s.definition.commands[control.action] : undefined;
    if (!control.action || !command) {
      this.reject(target.device, target.control, `control "${target.control}" accepts no commands`);
      return;
    }
    // A button press carries no value: its payload must not become the first param.
    const params =
      control.meta.type === "pushbutton" ? ({ ok: true, value: {} } as const) : payloadParams(command, message.payload.toString("utf8"));
    if (!params.ok) {
      this.reject(target.device, target.control, params.reason);
      return;
    }
    // A failure arrives as an action.failed event, which sets the flag.
    this.deps.devices.performAction(target.device, control.action, params.value, "mqtt").catch((err: unknown) => {
      this.log.debug({ device: target.device, control: target.control, err: errorMessage(err) }, "MQTT command failed");
    });
  }

  private reject(device: string, control: string, reason: string): void {
    this.log.warn({ device, control, reason }, "MQTT command rejected");
    void this.deps.mqtt.publishMany(this.setFlag(device, control, "w", true, true));
  }

  /** One message clearing several flags of a control; nothing when none was set. */
  private clearFlags(device: string, control: string, clear: readonly ErrorFlag[]): OutboundMessage[] {
    const flags = this.errorsOf(device).get(control);
    if (!flags || !clear.some((f) => flags.has(f))) return [];
    for (const f of clear) flags.delete(f);
    return [retained(wbTopics.controlError(device, control), encodeWbError(flags))];
  }

  /** Messages for a changed error flag; nothing when the flag already had that value. */
  private setFlag(device: string, control: string, flag: ErrorFlag, on: boolean, force = false): OutboundMessage[] {
    const errors = this.errorsOf(device);
    const flags = errors.get(control) ?? new Set<ErrorFlag>();
    if (flags.has(flag) === on && !force) return [];
    if (on) flags.add(flag);
    else flags.delete(flag);
    errors.set(control, flags);
    return [retained(wbTopics.controlError(device, control), encodeWbError(flags))];
  }

  private errorsOf(device: string): Map<string, Set<ErrorFlag>> {
    let errors = this.errors.get(device);
    if (!errors) {
      errors = new Map();
      this.errors.set(device, errors);
    }
    return errors;
  }

  private presented(id: string): DeviceSnapshot | undefined {
    if (!this.deps.devices.has(id)) return undefined;
    const s = this.deps.devices.snapshot(id);
    return s.publishesWbDevice ? s : undefined;
  }

  private published(): DeviceSnapshot[] {
    return this.deps.devices
      .ids()
      .map((id) => this.deps.devices.snapshot(id))
      .filter((s) => s.publishesWbDevice);
  }
}

/** The `/on` payload becomes the command's first param; a command without params ignores it. */
function payloadParams(command: CommandSpec, payload: string): { ok: true; value: ParamValues } | { ok: false; reason: string } {
  const first = command.params[0];
  if (!first) return { ok: true, value: {} };
  const value = parsePayload(first, payload);
  if (value === undefined) {
    return { ok: false, reason: `payload is not a valid ${first.type} for param "${first.name}"` };
  }
  return { ok: true, value: { [first.name]: value } };
}
