import { describe, expect, it } from "vitest";
import { sameJson } from "../../app/shared/json.js";

describe("sameJson", () => {
  it("compares primitives by value and containers by their JSON text", () => {
    expect(sameJson(1, 1)).toBe(true);
    expect(sameJson(0, -0)).toBe(true);
    expect(sameJson("1", 1)).toBe(false);
    expect(sameJson(null, undefined)).toBe(false);
    expect(sameJson(undefined, undefined)).toBe(true);
    expect(sameJson(false, null)).toBe(false);
    expect(sameJson([1, { a: "x" }], [1, { a: "x" }])).toBe(true);
    expect(sameJson([1, 2], [2, 1])).toBe(false);
    expect(sameJson({ a: 1 }, { a: 2 })).toBe(false);
    expect(sameJson({ a: 1 }, null)).toBe(false);
    expect(sameJson([], {})).toBe(false);
  });
});
