/**
 * Step conditions: a tiny expression language over one device's state, parsed once at
 * config load and evaluated right before the step runs.
 *
 *   expr       := and ( "||" and )*
 *   and        := primary ( "&&" primary )*          -- && binds tighter than ||
 *   primary    := "(" expr ")" | comparison
 *   comparison := field ( "==" | "!=" ) literal
 *   literal    := number | true | false | 'text' | "text"
 *
 * Pure and dependency-free, so the config layer can use it without importing anything
 * else from the scenario system.
 */

export type ConditionLiteral = string | number | boolean;

export type ConditionExpr =
  | { kind: "compare"; field: string; op: "==" | "!="; value: ConditionLiteral }
  | { kind: "and" | "or"; terms: ConditionExpr[] };

export type ConditionParse = { ok: true; expr: ConditionExpr } | { ok: false; error: string };

type TokenKind = "field" | "number" | "string" | "bool" | "op" | "and" | "or" | "lparen" | "rparen" | "end" | "bad";

interface Token {
  kind: TokenKind;
  text: string;
  value?: ConditionLiteral;
  /** 1-based, so messages match what an editor shows. */
  column: number;
}

class ConditionSyntaxError extends Error {}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*/;
const NUMBER = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?/;

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const ch = source[i] as string;
    if (/\s/.test(ch)) {
      i += 1;
      continue;
    }
    const column = i + 1;
    const rest = source.slice(i);
    const two = rest.slice(0, 2);
    if (two === "==" || two === "!=") {
      tokens.push({ kind: "op", text: two, column });
      i += 2;
    } else if (two === "&&" || two === "||") {
      tokens.push({ kind: two === "&&" ? "and" : "or", text: two, column });
      i += 2;
    } else if (ch === "(" || ch === ")") {
      tokens.push({ kind: ch === "(" ? "lparen" : "rparen", text: ch, column });
      i += 1;
    } else if (ch === "'" || ch === '"') {
      const close = source.indexOf(ch, i + 1);
      if (close < 0) throw new ConditionSyntaxError(`unterminated string starting at column ${column}`);
      const text = source.slice(i, close + 1);
      tokens.push({ kind: "string", text, value: source.slice(i + 1, close), column });
      i = close + 1;
    } else if (NUMBER.test(rest)) {
      const text = (NUMBER.exec(rest) as RegExpExecArray)[0];
      tokens.push({ kind: "number", text, value: Number(text), column });
      i += text.length;
    } else if (IDENT.test(rest)) {
      const text = (IDENT.exec(rest) as RegExpExecArray)[0];
      if (text === "true" || text === "false") tokens.push({ kind: "bool", text, value: text === "true", column });
      else tokens.push({ kind: "field", text, column });
      i += text.length;
    } else {
      // Kept as a token so the parser can say what it expected at this point.
      tokens.push({ kind: "bad", text: ch, column });
      i += 1;
    }
  }
  tokens.push({ kind: "end", text: "", column: source.length + 1 });
  return tokens;
}

class Parser {
  private pos = 0;

  constructor(private readonly tokens: Token[]) {}

  parse(): ConditionExpr {
    const expr = this.or();
    const next = this.peek();
    if (next.kind !== "end") {
      const what = next.kind === "rparen" ? `unmatched ")"` : `expected && or || before ${describe(next)}`;
      throw new ConditionSyntaxError(`${what} at column ${next.column}`);
    }
    return expr;
  }

  private or(): ConditionExpr {
    const terms = [this.and()];
    while (this.peek().kind === "or") {
      this.pos += 1;
      terms.push(this.and());
    }
    return terms.length === 1 ? (terms[0] as ConditionExpr) : { kind: "or", terms };
  }

  private and(): ConditionExpr {
    const terms = [this.primary()];
    while (this.peek().kind === "and") {
      this.pos += 1;
      terms.push(this.primary());
    }
    return terms.length === 1 ? (terms[0] as ConditionExpr) : { kind: "and", terms };
  }

  private primary(): ConditionExpr {
    const token = this.next();
    if (token.kind === "lparen") {
      const inner = this.or();
      const close = this.next();
      if (close.kind !== "rparen") {
        throw new ConditionSyntaxError(
          `expected ")" to close the "(" at column ${token.column}, found ${describe(close)} at column ${close.column}`,
        );
      }
      return inner;
    }
    if (token.kind !== "field") {
      throw new ConditionSyntaxError(`expected a state field name, found ${describe(token)} at column ${token.column}`);
    }
    const op = this.next();
    if (op.kind !== "op") {
      throw new ConditionSyntaxError(`expected ==/!= after "${token.text}" at column ${op.column}`);
    }
    const literal = this.next();
    if (literal.value === undefined) {
      throw new ConditionSyntaxError(`expected a number, true, false or a quoted string after "${op.text}" at column ${literal.column}`);
    }
    return { kind: "compare", field: token.text, op: op.text as "==" | "!=", value: literal.value };
  }

  private peek(): Token {
    return this.tokens[this.pos] as Token;
  }

  private next(): Token {
    const token = this.peek();
    if (token.kind !== "end") this.pos += 1;
    return token;
  }
}

function describe(token: Token): string {
  return token.kind === "end" ? "the end" : `"${token.text}"`;
}

/** Parses a condition; a syntax error names what was expected and the 1-based column. */
export function parseCondition(source: string): ConditionParse {
  try {
    return { ok: true, expr: new Parser(tokenize(source)).parse() };
  } catch (err) {
    if (err instanceof ConditionSyntaxError) return { ok: false, error: err.message };
    throw err;
  }
}

/** A field the condition reads is not in the device's state: a broken step, not a false condition. */
export class UnknownConditionFieldError extends Error {
  constructor(readonly field: string) {
    super(`condition reads state field "${field}", which the device does not have`);
    this.name = "UnknownConditionFieldError";
  }
}

/**
 * Evaluates against a state snapshot. Comparison is strict (`volume == '20'` is false
 * for a number 20): state values are typed, and guessing conversions would hide typos.
 */
export function evaluateCondition(expr: ConditionExpr, state: Readonly<Record<string, unknown>>): boolean {
  switch (expr.kind) {
    case "compare": {
      if (!Object.hasOwn(state, expr.field)) throw new UnknownConditionFieldError(expr.field);
      const equal = state[expr.field] === expr.value;
      return expr.op === "==" ? equal : !equal;
    }
    case "and":
      return expr.terms.every((t) => evaluateCondition(t, state));
    case "or":
      return expr.terms.some((t) => evaluateCondition(t, state));
  }
}

/** Every state field the condition reads, for checks against a device's state. */
export function conditionFields(expr: ConditionExpr): string[] {
  if (expr.kind === "compare") return [expr.field];
  return [...new Set(expr.terms.flatMap(conditionFields))];
}
