import { describe, expect, it } from "vitest";
import { paramsSchema, parsePayload } from "../../app/config/params.js";
import { assertPublishableTopic, parseControlOnTopic, topicMatches, wbTopics } from "../../app/mqtt/topics.js";
import { encodeWbError, encodeWbValue } from "../../app/mqtt/wb-values.js";

describe("Wiren Board topics", () => {
  it("builds the convention's topic names", () => {
    expect(wbTopics.deviceMeta("tv")).toBe("/devices/tv/meta");
    expect(wbTopics.control("tv", "volume")).toBe("/devices/tv/controls/volume");
    expect(wbTopics.controlMeta("tv", "volume")).toBe("/devices/tv/controls/volume/meta");
    expect(wbTopics.controlError("tv", "volume")).toBe("/devices/tv/controls/volume/meta/error");
    expect(wbTopics.controlOn("tv", "volume")).toBe("/devices/tv/controls/volume/on");
  });

  it("parses only well-formed command topics", () => {
    expect(parseControlOnTopic("/devices/tv/controls/volume/on")).toEqual({ device: "tv", control: "volume" });
    expect(parseControlOnTopic("/devices/tv/controls/Play from ROM1/on")).toEqual({ device: "tv", control: "Play from ROM1" });
    expect(parseControlOnTopic("/devices/tv/controls/volume")).toBeNull();
    expect(parseControlOnTopic("/devices/tv/controls/volume/on/extra")).toBeNull();
    expect(parseControlOnTopic("devices/tv/controls/volume/on")).toBeNull();
  });

  it("matches MQTT wildcards", () => {
    expect(topicMatches("/devices/+/controls/+/on", "/devices/tv/controls/power/on")).toBe(true);
    expect(topicMatches("/devices/+/controls/+/on", "/devices/tv/controls/power")).toBe(false);
    expect(topicMatches("/devices/#", "/devices/tv/meta")).toBe(true);
    expect(topicMatches("/devices/tv/#", "/devices/amp/meta")).toBe(false);
    expect(topicMatches("a/b", "a/b/c")).toBe(false);
  });

  it("refuses to publish to wildcard or empty topics", () => {
    expect(() => assertPublishableTopic("/devices/+/meta")).toThrow(/wildcard/);
    expect(() => assertPublishableTopic("/devices/#")).toThrow(/wildcard/);
    expect(() => assertPublishableTopic("")).toThrow();
    expect(() => assertPublishableTopic("/devices/tv/meta")).not.toThrow();
  });

  it("encodes values per control type and never yields an empty retained payload", () => {
    expect(encodeWbValue({ type: "switch" }, true)).toBe("1");
    expect(encodeWbValue({ type: "switch" }, false)).toBe("0");
    expect(encodeWbValue({ type: "range" }, 42)).toBe("42");
    expect(encodeWbValue({ type: "value" }, 21.5)).toBe("21.5");
    expect(encodeWbValue({ type: "range" }, "x")).toBeNull();
    expect(encodeWbValue({ type: "text" }, "hdmi1")).toBe("hdmi1");
    expect(encodeWbValue({ type: "text" }, "")).toBeNull();
    expect(encodeWbValue({ type: "text" }, null)).toBeNull();
    expect(encodeWbValue({ type: "pushbutton" }, true)).toBeNull();
    expect(encodeWbValue({ type: "value", precision: 0.1 }, 21.04)).toBe("21.0");
    expect(encodeWbValue({ type: "value", precision: 0.5 }, 21.8)).toBe("22.0");
    expect(encodeWbValue({ type: "value", precision: 1 }, 21.5)).toBe("22");
    expect(encodeWbValue({ type: "value" }, Number.NaN)).toBeNull();
    expect(encodeWbValue({ type: "rgb" }, { r: 255, g: 0, b: 12 })).toBe("255;0;12");
    expect(encodeWbValue({ type: "rgb" }, [1, 2, 3])).toBe("1;2;3");
    expect(encodeWbValue({ type: "rgb" }, "10;20;30")).toBe("10;20;30");
    expect(encodeWbValue({ type: "rgb" }, "10;20")).toBeNull();
    expect(encodeWbValue({ type: "rgb" }, [256, 0, 0])).toBeNull();
    expect(encodeWbValue({ type: "alarm" }, 1)).toBe("1");
  });
});

describe("error flags", () => {
  it("combines r, w and p in a fixed order and clears with an empty string", () => {
    expect(encodeWbError(new Set(["w", "r"]))).toBe("rw");
    expect(encodeWbError(new Set(["p"]))).toBe("p");
    expect(encodeWbError(new Set())).toBe("");
  });
});

describe("command params", () => {
  const specs = [
    { name: "level", type: "integer" as const, required: true, min: 0, max: 100 },
    { name: "label", type: "string" as const, required: false },
    { name: "fast", type: "boolean" as const, required: false, default: false },
  ];

  it("validates declared params, applies defaults, rejects unknown ones", () => {
    const schema = paramsSchema(specs);
    expect(schema.parse({ level: 5 })).toEqual({ level: 5, fast: false });
    expect(schema.safeParse({ level: 5.5 }).success).toBe(false);
    expect(schema.safeParse({ level: 101 }).success).toBe(false);
    expect(schema.safeParse({}).success).toBe(false);
    expect(schema.safeParse({ level: 1, other: 1 }).success).toBe(false);
  });

  it("turns WB payload text into typed values, or undefined when it cannot", () => {
    const [level, label, fast] = specs as [(typeof specs)[0], (typeof specs)[1], (typeof specs)[2]];
    expect(parsePayload(level, "42")).toBe(42);
    expect(parsePayload(level, " 7 ")).toBe(7);
    expect(parsePayload(level, "4e1")).toBe(40);
    expect(parsePayload(level, "loud")).toBeUndefined();
    expect(parsePayload(level, "")).toBeUndefined();
    expect(parsePayload(level, "0x10")).toBeUndefined();
    expect(parsePayload(fast, "1")).toBe(true);
    expect(parsePayload(fast, "0")).toBe(false);
    expect(parsePayload(fast, "yes")).toBeUndefined();
    expect(parsePayload(label, "hello world")).toBe("hello world");
  });
});
