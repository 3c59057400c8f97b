import { describe, expect, it } from "vitest";
import {
  type ConditionExpr,
  conditionFields,
  evaluateCondition,
  parseCondition,
  UnknownConditionFieldError,
} from "../../app/config/condition.js";

function parse(source: string): ConditionExpr {
  const result = parseCondition(source);
  if (!result.ok) throw new Error(`unexpected parse error: ${result.error}`);
  return result.expr;
}

function errorOf(source: string): string {
  const result = parseCondition(source);
  if (result.ok) throw new Error(`"${source}" parsed, expected an error`);
  return result.error;
}

const tv = { power: true, volume: 20, muted: false, input: "hdmi1", level: -1.5 };
const holds = (source: string, state: Record<string, unknown> = tv) => evaluateCondition(parse(source), state);

describe("condition parser", () => {
  it("parses comparisons with every literal kind", () => {
    expect(parse("power == false")).toEqual({ kind: "compare", field: "power", op: "==", value: false });
    expect(parse("volume!=20")).toEqual({ kind: "compare", field: "volume", op: "!=", value: 20 });
    expect(parse("level == -1.5")).toEqual({ kind: "compare", field: "level", op: "==", value: -1.5 });
    expect(parse("input == 'hdmi1'")).toEqual({ kind: "compare", field: "input", op: "==", value: "hdmi1" });
    expect(parse('input == "with space && ||"')).toEqual({
      kind: "compare",
      field: "input",
      op: "==",
      value: "with space && ||",
    });
  });

  it("binds && tighter than || and honours parentheses", () => {
    const a = { kind: "compare", field: "a", op: "==", value: 1 };
    const b = { kind: "compare", field: "b", op: "==", value: 2 };
    const c = { kind: "compare", field: "c", op: "==", value: 3 };
    expect(parse("a == 1 || b == 2 && c == 3")).toEqual({ kind: "or", terms: [a, { kind: "and", terms: [b, c] }] });
    expect(parse("(a == 1 || b == 2) && c == 3")).toEqual({ kind: "and", terms: [{ kind: "or", terms: [a, b] }, c] });
    expect(parse("a == 1 && b == 2 && c == 3")).toEqual({ kind: "and", terms: [a, b, c] });
  });

  it("reports what was expected and the 1-based column", () => {
    expect(errorOf("power = false")).toBe('expected ==/!= after "power" at column 7');
    expect(errorOf("power false")).toBe('expected ==/!= after "power" at column 7');
    expect(errorOf("power")).toBe('expected ==/!= after "power" at column 6');
    expect(errorOf("power == ")).toBe('expected a number, true, false or a quoted string after "==" at column 10');
    expect(errorOf("power == on")).toBe('expected a number, true, false or a quoted string after "==" at column 10');
    expect(errorOf("input == 'hdmi1")).toBe("unterminated string starting at column 10");
    expect(errorOf("")).toBe("expected a state field name, found the end at column 1");
    expect(errorOf("== 1")).toBe('expected a state field name, found "==" at column 1');
    expect(errorOf("power == true &&")).toBe("expected a state field name, found the end at column 17");
    expect(errorOf("power == true & muted == false")).toBe('expected && or || before "&" at column 15');
    expect(errorOf("power == true muted == false")).toBe('expected && or || before "muted" at column 15');
    expect(errorOf("(power == true")).toBe('expected ")" to close the "(" at column 1, found the end at column 15');
    expect(errorOf("power == true)")).toBe('unmatched ")" at column 14');
  });
});

describe("condition evaluation", () => {
  it("compares strictly against the state", () => {
    expect(holds("power == true")).toBe(true);
    expect(holds("power == false")).toBe(false);
    expect(holds("power != false")).toBe(true);
    expect(holds("volume == 20")).toBe(true);
    expect(holds("volume == '20'")).toBe(false);
    expect(holds("input == 'hdmi1'")).toBe(true);
    expect(holds('input != "hdmi1"')).toBe(false);
    expect(holds("level == -1.5")).toBe(true);
  });

  it("combines with && and || at their precedence", () => {
    expect(holds("input != 'hdmi1' && power == true")).toBe(false);
    expect(holds("input != 'hdmi2' && power == true")).toBe(true);
    // false || (true && true): true only because && binds tighter.
    expect(holds("muted == true || power == true && volume == 20")).toBe(true);
    expect(holds("(muted == true || power == true) && volume == 21")).toBe(false);
    expect(holds("muted == true || volume == 21")).toBe(false);
  });

  it("fails on a field the state does not have instead of guessing", () => {
    expect(() => holds("powr == true")).toThrow(UnknownConditionFieldError);
    expect(() => holds("powr == true")).toThrow(/state field "powr"/);
  });

  it("lists the fields a condition reads", () => {
    expect(conditionFields(parse("power == true && (input == 'tv' || power != false)"))).toEqual(["power", "input"]);
  });
});
