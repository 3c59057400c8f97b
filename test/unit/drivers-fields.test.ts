import { describe, expect, it } from "vitest";
import { z } from "zod";
import { DeviceUnreachableError } from "../../app/devices/driver.js";
import { sendCommand } from "../../app/devices/drivers/common.js";
import {
  checkFieldSpec,
  decodeField,
  encodeField,
  type FieldValueSpec,
  fieldControl,
  fieldStateSchema,
  writableProblem,
} from "../../app/devices/drivers/fields.js";
import { MqttNotConnectedError } from "../../app/mqtt/gateway.js";

const problemsOf = (spec: FieldValueSpec) => {
  const schema = z.custom<FieldValueSpec>().superRefine((s, ctx) => checkFieldSpec(s, ctx));
  const r = schema.safeParse(spec);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
};

describe("driver fields: wire <-> canonical values", () => {
  it("bool: 0/1 and true/false both ways, invert flips both ways", () => {
    const plain: FieldValueSpec = { type: "bool" };
    expect([decodeField(plain, "1"), decodeField(plain, "0"), decodeField(plain, true), decodeField(plain, 0)]).toEqual([
      true,
      false,
      true,
      false,
    ]);
    expect(decodeField(plain, "on")).toBeUndefined();
    expect([encodeField(plain, true), encodeField(plain, false)]).toEqual(["1", "0"]);
    const inverted: FieldValueSpec = { type: "bool", invert: true };
    expect([decodeField(inverted, "1"), decodeField(inverted, "0")]).toEqual([false, true]);
    expect([encodeField(inverted, true), encodeField(inverted, false)]).toEqual(["0", "1"]);
  });

  it("int and float parse numbers and numeric text only", () => {
    expect(decodeField({ type: "int" }, " 42 ")).toBe(42);
    expect(decodeField({ type: "int" }, "4.5")).toBeUndefined();
    expect(decodeField({ type: "int" }, 4.5)).toBeUndefined();
    expect(decodeField({ type: "float" }, "21.75")).toBe(21.75);
    expect(decodeField({ type: "float" }, 3)).toBe(3);
    expect(decodeField({ type: "float" }, "warm")).toBeUndefined();
    expect(decodeField({ type: "float" }, "")).toBeUndefined();
    expect(encodeField({ type: "int" }, 55)).toBe("55");
  });

  it("enum maps wire -> name and name -> wire; unknown wire values do not parse", () => {
    const mode: FieldValueSpec = { type: "enum", map: { "0": "off", "1": "auto", "2": "boost" } };
    expect(decodeField(mode, "1")).toBe("auto");
    expect(decodeField(mode, 2)).toBe("boost");
    expect(decodeField(mode, "7")).toBeUndefined();
    expect(encodeField(mode, "boost")).toBe("2");
    expect(encodeField(mode, "turbo")).toBeUndefined();
    expect(fieldStateSchema(mode).safeParse("auto").success).toBe(true);
    expect(fieldStateSchema(mode).safeParse("turbo").success).toBe(false);
    expect(fieldStateSchema(mode).safeParse(null).success).toBe(true);
  });

  it("a map on a bool field reads Zigbee2MQTT's ON/OFF", () => {
    const power: FieldValueSpec = { type: "bool", map: { ON: true, OFF: false } };
    expect([decodeField(power, "ON"), decodeField(power, "OFF"), decodeField(power, "TOGGLE")]).toEqual([true, false, undefined]);
    expect(encodeField(power, true)).toBe("ON");
  });

  it("str turns scalars into text; auto keeps any scalar; objects never parse", () => {
    expect(decodeField({ type: "str" }, 12)).toBe("12");
    expect(decodeField({ type: "auto" }, 12)).toBe(12);
    expect(decodeField({ type: "auto" }, { a: 1 })).toBeUndefined();
    expect(decodeField({ type: "str" }, null)).toBeUndefined();
  });

  it("checks values to write against type, enum names and min/max without echoing the value", () => {
    const level: FieldValueSpec = { type: "int", min: 0, max: 100 };
    expect(writableProblem(level, 50)).toBeNull();
    expect(writableProblem(level, 101)).toBe("expected at most 100");
    expect(writableProblem(level, 1.5)).toBe("expected an integer");
    expect(writableProblem(level, null)).toBe("expected an integer");
    expect(writableProblem({ type: "enum", map: { "0": "off", "1": "auto" } }, "turbo")).toBe("expected one of off, auto");
  });

  it("rejects inconsistent field specs", () => {
    expect(problemsOf({ type: "enum" })).toEqual(["map: an enum field needs a map (wire value -> name)"]);
    expect(problemsOf({ type: "int", invert: true })).toEqual(["invert: invert applies only to bool fields"]);
    expect(problemsOf({ type: "bool", min: 0 })).toEqual(["min: min applies only to int or float fields"]);
    expect(problemsOf({ type: "int", min: 5, max: 1 })).toEqual(["min: min is greater than max"]);
    expect(problemsOf({ type: "bool", map: { ON: true, OFF: "no" } })).toEqual(["map.OFF: expected a boolean for a bool field"]);
  });

  it("shows booleans as switches, bounded numbers as ranges, others as value or text", () => {
    expect(fieldControl("power", { type: "bool", title: "Power" })).toEqual({ field: "power", type: "switch", title: "Power" });
    expect(fieldControl("level", { type: "int", min: 0, max: 100 })).toMatchObject({ type: "range", min: 0, max: 100 });
    expect(fieldControl("temp", { type: "float", units: "deg C" })).toMatchObject({ type: "value", units: "deg C" });
    expect(fieldControl("mode", { type: "enum", map: { "0": "off", "1": "auto" } })).toMatchObject({ type: "text", enum: ["off", "auto"] });
  });
});

describe("sendCommand", () => {
  it("publishes QoS 1, not retained", async () => {
    const calls: unknown[] = [];
    await sendCommand({ publish: async (...args) => void calls.push(args), subscribe: async () => async () => undefined }, "/t/on", "1");
    expect(calls).toEqual([["/t/on", "1", { qos: 1, retain: false }]]);
  });

  it("turns a failed or unacknowledged publish into DeviceUnreachableError", async () => {
    const failing = { publish: () => Promise.reject(new MqttNotConnectedError("/t/on")), subscribe: async () => async () => undefined };
    await expect(sendCommand(failing, "/t/on", "1")).rejects.toBeInstanceOf(DeviceUnreachableError);
    const hanging = { publish: () => new Promise<void>(() => undefined), subscribe: async () => async () => undefined };
    await expect(sendCommand(hanging, "/t/on", "1", 20)).rejects.toThrow(/no acknowledgement within 20 ms/);
  });
});
