// Answer extraction and equivalence for voting, grading and evaluation. It takes the place of the
// official code's `mathruler.grader` (extract_boxed_content + grade_answer, which call sympy and
// pylatexenc; see VISPLAY.md §3), without a computer algebra system: an answer is classified as an
// option letter, yes/no, a number (evaluated from a small arithmetic/LaTeX grammar) or free text,
// and two answers are equivalent when they are of the same class and agree.
//
// Where this differs from mathruler on purpose (each a choice for voting on a VLM's short answers):
//   - unreduced fractions equal their value (2/4 = 1/2; mathruler compares such fractions as text);
//   - a number followed by unit words equals the number ("12 apples" = "12"; mathruler strips only a
//     fixed list of units such as cm, meter, degree);
//   - option letters in their usual spellings are one answer ("B", "(B)", "B. red", "option B");
//   - "Yes." = "yes", number words zero to twenty = their digits, a leading article is ignored.
// Like mathruler: "%" and "$" are dropped (50% = 50, and 50% != 0.5), case and spaces do not matter,
// \dfrac/\tfrac are \frac, ^\circ and "degree(s)" go, "x = 5" is 5, an integer followed by a
// fraction is a mixed number (1\frac{1}{2} = 1.5).

/** Relative tolerance of numeric equivalence: absorbs decimal renderings of the same fraction. */
export const DEFAULT_REL_TOL = 1e-6;

/**
 * Content of the last `\boxed{...}` (also `\boxed {...}`), trimmed; braces inside are balanced, so
 * `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`. Null when there is no `\boxed{`, or when the last one
 * never closes (a response cut off by the token limit): like mathruler, an earlier box does not
 * stand in for a truncated final one. `\boxed{}` gives ''.
 */
export function lastBoxed(text: string): string | null {
  let contentStart = -1;
  for (const m of text.matchAll(/\\boxed\s*\{/g)) contentStart = m.index + m[0].length;
  if (contentStart === -1) return null;
  let depth = 1;
  for (let i = contentStart; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x7b /* { */) depth++;
    else if (ch === 0x7d /* } */ && --depth === 0) return text.slice(contentStart, i).trim();
  }
  return null;
}

/** What an answer is, after normalization. `canonical` is what normalizeAnswer returns. */
export type ParsedAnswer =
  | { kind: 'empty'; canonical: '' }
  | { kind: 'option'; canonical: string } // the letter, upper case
  | { kind: 'yesno'; canonical: 'yes' | 'no' }
  | { kind: 'number'; canonical: string; value: number }
  | { kind: 'text'; canonical: string };

/** Classifies and normalizes one answer (see the file comment for the rules). */
export function parseAnswer(answer: string): ParsedAnswer {
  const s = clean(answer);
  if (s === '') return { kind: 'empty', canonical: '' };
  const option = optionLetter(s);
  if (option !== null) return { kind: 'option', canonical: option };
  const lower = s.toLowerCase();
  const yn = /^(yes|no)(?:$|[,.;:!])/.exec(lower);
  if (yn) return { kind: 'yesno', canonical: yn[1] as 'yes' | 'no' };
  const value = numericValue(lower);
  if (value !== null) return { kind: 'number', canonical: formatNumber(value), value };
  const text = lower.replace(/^(?:the|a|an)\s+/, '').replace(/\s+/g, '');
  const word = NUMBER_WORDS.get(text);
  if (word !== undefined) return { kind: 'number', canonical: String(word), value: word };
  return { kind: 'text', canonical: text };
}

/** The canonical form of an answer: equal canonical forms mean equivalent answers. */
export function normalizeAnswer(answer: string): string {
  return parseAnswer(answer).canonical;
}

/**
 * Whether a and b are close: equal, or |a - b| <= relTol * max(|a|, |b|) (Python's
 * math.isclose with abs_tol = 0). Strings are read as answers first ("1,000", "\frac{1}{2}",
 * "5 cm"); an answer that is not a number is close to nothing.
 */
export function numbersClose(a: number | string, b: number | string, relTol = DEFAULT_REL_TOL): boolean {
  const x = typeof a === 'number' ? a : answerNumber(a);
  const y = typeof b === 'number' ? b : answerNumber(b);
  if (x === null || y === null || Number.isNaN(x) || Number.isNaN(y)) return false;
  return x === y || Math.abs(x - y) <= relTol * Math.max(Math.abs(x), Math.abs(y));
}

/**
 * grade_answer's replacement: equivalent answers after normalization. Integers must be equal
 * (a count of 1000000 is not 1000001); other numbers agree within DEFAULT_REL_TOL.
 */
export function answersEquivalent(a: string, b: string): boolean {
  return parsedEquivalent(parseAnswer(a), parseAnswer(b));
}

/**
 * The official rule for grouping votes (VISPLAY.md §3): equal strings, or both contain "no "
 * (case-insensitive; the code lumps every "no ..." answer together), or equivalent.
 */
export function answersMatch(a: string, b: string): boolean {
  return a === b || bothSayNo(a, b) || answersEquivalent(a, b);
}

/**
 * The majority answer among `answers` grouped by answersMatch, as the official code counts: each
 * answer joins the first earlier group whose representative (its first-seen answer) it matches,
 * else starts a group; the largest group wins, the earliest on ties (Python's max over an
 * insertion-ordered dict). Empty answers ('' = no box) are skipped and never win; with none left the
 * silver answer is '' with count 0.
 */
export function majorityVote(answers: readonly string[]): { silver: string; count: number } {
  const groups: Array<{ rep: string; parsed: ParsedAnswer; count: number }> = [];
  for (const answer of answers) {
    if (answer.trim() === '') continue;
    const parsed = parseAnswer(answer);
    const group = groups.find((g) => answer === g.rep || bothSayNo(answer, g.rep) || parsedEquivalent(parsed, g.parsed));
    if (group) group.count++;
    else groups.push({ rep: answer, parsed, count: 1 });
  }
  let best: { rep: string; count: number } | undefined;
  for (const g of groups) if (best === undefined || g.count > best.count) best = g;
  return best ? { silver: best.rep, count: best.count } : { silver: '', count: 0 };
}

// ---- equivalence ---------------------------------------------------------------------------------

function bothSayNo(a: string, b: string): boolean {
  return a.toLowerCase().includes('no ') && b.toLowerCase().includes('no ');
}

function parsedEquivalent(a: ParsedAnswer, b: ParsedAnswer): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'number' && b.kind === 'number') {
    if (Number.isInteger(a.value) && Number.isInteger(b.value)) return a.value === b.value;
    return numbersClose(a.value, b.value);
  }
  return a.canonical === b.canonical;
}

function answerNumber(answer: string): number | null {
  const parsed = parseAnswer(answer);
  return parsed.kind === 'number' ? parsed.value : null;
}

// ---- normalization -------------------------------------------------------------------------------

/** LaTeX commands that only style their argument: `\text{A}` is A. */
const STYLE_WRAPPER = /\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mathsf|mbox|operatorname|boldsymbol|bm)\s*\{([^{}]*)\}/g;

/**
 * The presentation-free form of an answer, case kept (option letters need it): math delimiters,
 * style commands, spacing commands, degree signs, percent and dollar signs, quotes, trailing
 * sentence punctuation and an "answer is" lead-in removed; \dfrac/\tfrac as \frac; Unicode minus, times, pi and root as LaTeX.
 */
function clean(answer: string): string {
  let s = answer.trim();
  for (let prev = ''; prev !== s;) {
    prev = s;
    s = s.replace(/^\$\$([\s\S]*)\$\$$/, '$1').replace(/^\$([\s\S]*)\$$/, '$1')
      .replace(/^\\\(([\s\S]*)\\\)$/, '$1').replace(/^\\\[([\s\S]*)\\\]$/, '$1').trim();
  }
  for (let prev = ''; prev !== s;) {
    prev = s;
    s = s.replace(STYLE_WRAPPER, '$1');
  }
  s = s
    .replace(/\\[dt]frac/g, '\\frac')
    .replace(/\\(?:left|right|bigg|Bigg|big|Big)(?![a-zA-Z])/g, '')
    .replace(/\^\s*\{?\s*\\circ\s*\}?/g, '')
    .replace(/\\circ|\\degree|°/g, '')
    .replace(/\{,\}/g, ',')
    .replace(/\\[,;:!]/g, '')
    .replace(/\\(?:quad|qquad)(?![a-zA-Z])|\\ |~/g, ' ')
    .replace(/\\?%/g, '')
    .replace(/\\?\$/g, '')
    .replace(/[\u2212\u2013\u2014]/g, '-')
    .replace(/×/g, '\\times ')
    .replace(/[·⋅]/g, '\\cdot ')
    .replace(/÷/g, '/')
    .replace(/π/g, '\\pi ')
    .replace(/√/g, '\\sqrt ')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^["'“”‘’`]+|["'“”‘’`]+$/g, '')
    .replace(/[.。!?！？;；,，:：\s]+$/, '')
    .replace(ANSWER_LEAD_IN, '');
  while (/^\{[^{}]*\}$/.test(s)) s = s.slice(1, -1).trim();
  return s;
}

/** "The final answer is: ...", "Answer: ...": the words before the answer itself. */
const ANSWER_LEAD_IN = /^(?:the\s+)?(?:final\s+|correct\s+)?answer(?:\s+is)?\s*[:：]?\s*(?=\S)/i;
/** Words before an option letter: "option B", "choice: B". */
const OPTION_PREFIX = /^(?:option|choice)\s*:?\s*/i;

/**
 * The option letter (A-J) an answer names: alone in any case ("b", "(B)", "option c"), or as a
 * capital with its delimiter before the option's text ("(B) red", "B. red", "B) red", "B: red").
 * A lower-case letter before text is an article ("a cat"), not an option.
 */
function optionLetter(s: string): string | null {
  const rest = s.replace(OPTION_PREFIX, '');
  const alone = /^\(?([a-j])\)?$/i.exec(rest);
  if (alone) return alone[1]!.toUpperCase();
  const withText = /^(?:\(([A-J])\)|([A-J])[.):])\s/.exec(rest);
  return withText ? (withText[1] ?? withText[2])! : null;
}

const NUMBER_WORDS: ReadonlyMap<string, number> = new Map([
  'zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve',
  'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen', 'eighteen', 'nineteen', 'twenty',
].map((w, i) => [w, i]));

/** "approximately 5", "≈ 5": the hedge is not part of the value. */
const HEDGE = /^(?:approximately|approx\.?|about|around|roughly|nearly|\\approx|≈)\s*/;
/** mathd's rule: "x = 5" or "k=5" is 5 (a name of at most two characters before one "="). */
const NAMED_VALUE = /^[a-z][a-z0-9_]?\s*=\s*(?!.*=)/;
/** Thousands separated by spaces: "1 000 000". */
const SPACED_THOUSANDS = /^-?\d{1,3}(?: \d{3})+(?:\.\d+)?$/;
/** One unit word, optionally squared or cubed: cm, m^2, m², km. */
const UNIT_WORD = String.raw`[a-zµμω]+(?:\^\{?-?\d\}?|[²³])?`;
/** A number followed by up to four unit words: "12 apples", "5cm", "60 km/h", "3 square meters". */
const UNIT_SUFFIX = new RegExp(String.raw`^(.*?[0-9)}.])\s*${UNIT_WORD}(?:\s*(?:/|\s)\s*${UNIT_WORD}){0,3}$`);

/** The value of a lower-cased, cleaned answer that is a number or simple expression; else null. */
function numericValue(s: string): number | null {
  let t = s.replace(HEDGE, '').replace(NAMED_VALUE, '').trim();
  if (SPACED_THOUSANDS.test(t)) t = t.replace(/ /g, '');
  const whole = evaluate(t);
  if (whole !== null) return whole;
  const unit = UNIT_SUFFIX.exec(t);
  return unit ? evaluate(unit[1]!) : null;
}

function formatNumber(value: number): string {
  return Object.is(value, -0) ? '0' : String(value);
}

// ---- a small evaluator for numeric answers ---------------------------------------------------------
//
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/' | \times | \cdot | \div) unary | implicit)*
//   implicit:= a following '(' '{' \frac \sqrt \pi pi (2\sqrt{3}, 3\pi, 2(4))
//   unary   := ('-' | '+') unary | power
//   power   := primary ('^' unary)?
//   primary := number | '(' expr ')' | '{' expr '}' | '[' expr ']' | \frac A A | \sqrt A | \pi | pi
//   A       := '{' expr '}' | one digit | \pi           (\frac12 is 1/2, as LaTeX reads it)
//   number  := 1,000,000.5 | 12.5 | .5 | 12. with an optional exponent e-3
//
// An integer immediately followed by \frac of two integers is a mixed number: 1\frac{1}{2} = 1.5.
// A hyphen between digits is not a minus (see evaluate). Anything else (letters, a second number
// without an operator, a trailing symbol) fails: null.

class Parser {
  pos = 0;
  constructor(readonly s: string) {}

  peek(): string {
    this.skipSpaces();
    return this.s[this.pos] ?? '';
  }

  skipSpaces(): void {
    while (this.s[this.pos] === ' ') this.pos++;
  }

  /** Consumes `token` (a symbol or a backslash command not followed by a letter) if it is next. */
  eat(token: string): boolean {
    this.skipSpaces();
    if (!this.s.startsWith(token, this.pos)) return false;
    const after = this.s[this.pos + token.length] ?? '';
    if (/^[a-z]/i.test(token) || token.startsWith('\\')) {
      if (/[a-z]/i.test(after)) return false;
    }
    this.pos += token.length;
    return true;
  }

  expr(): number {
    let v = this.term();
    for (;;) {
      if (this.eat('+')) v += this.term();
      else if (this.eat('-')) v -= this.term();
      else return v;
    }
  }

  term(): number {
    let v = this.unary();
    for (;;) {
      if (this.eat('*') || this.eat('\\times') || this.eat('\\cdot')) v *= this.unary();
      else if (this.eat('/') || this.eat('\\div')) v /= this.unary();
      else if (this.startsImplicitFactor()) v *= this.power();
      else return v;
    }
  }

  startsImplicitFactor(): boolean {
    const c = this.peek();
    if (c === '(' || c === '{') return true;
    const rest = this.s.slice(this.pos);
    return /^(?:\\frac|\\sqrt|\\pi|pi)(?![a-z])/i.test(rest);
  }

  unary(): number {
    if (this.eat('-')) return -this.unary();
    if (this.eat('+')) return this.unary();
    return this.power();
  }

  power(): number {
    const base = this.primary();
    return this.eat('^') ? base ** this.unary() : base;
  }

  primary(): number {
    const c = this.peek();
    if (c === '(' || c === '{' || c === '[') {
      this.pos++;
      const v = this.expr();
      if (!this.eat(c === '(' ? ')' : c === '{' ? '}' : ']')) throw SYNTAX;
      return v;
    }
    if (this.eat('\\frac')) return this.frac().value;
    if (this.eat('\\sqrt')) return Math.sqrt(this.argument().value);
    if (this.eat('\\pi') || this.eat('pi')) return Math.PI;
    const literal = this.number();
    if (literal === null) throw SYNTAX;
    if (literal.integer) {
      // A mixed number: 1\frac{1}{2}. Otherwise the fraction multiplies (2\frac{\pi}{3}).
      const save = this.pos;
      if (this.eat('\\frac')) {
        const f = this.frac();
        if (f.integers) return literal.value + f.value;
        this.pos = save;
      }
    }
    return literal.value;
  }

  frac(): { value: number; integers: boolean } {
    const num = this.argument();
    const den = this.argument();
    return { value: num.value / den.value, integers: num.integer && den.integer };
  }

  /** A command's argument: a braced expression, a single digit, or \pi. */
  argument(): { value: number; integer: boolean } {
    const c = this.peek();
    if (c === '{') {
      this.pos++;
      const start = this.pos;
      const v = this.expr();
      const inner = this.s.slice(start, this.pos).trim();
      if (!this.eat('}')) throw SYNTAX;
      return { value: v, integer: /^\d+$/.test(inner) };
    }
    if (c >= '0' && c <= '9') {
      this.pos++;
      return { value: Number(c), integer: true };
    }
    if (this.eat('\\pi')) return { value: Math.PI, integer: false };
    throw SYNTAX;
  }

  number(): { value: number; integer: boolean } | null {
    this.skipSpaces();
    const m = /^(?:(\d{1,3}(?:,\d{3})+(?!\d))(\.\d+)?|(\d+)(\.\d*)?|(\.\d+))(e[-+]?\d+)?/.exec(this.s.slice(this.pos));
    if (!m) return null;
    this.pos += m[0].length;
    const value = Number(m[0].replace(/,/g, ''));
    return { value, integer: m[2] === undefined && m[4] === undefined && m[5] === undefined && m[6] === undefined };
  }
}

const SYNTAX = new Error('not a numeric answer');

function evaluate(s: string): number | null {
  // A hyphen between digits is a range, a date or a code ("10-20", "2020-01-01"), not a difference.
  if (s === '' || !/\d|\\pi|pi/.test(s) || /\d-\d/.test(s)) return null;
  const p = new Parser(s);
  try {
    const v = p.expr();
    p.skipSpaces();
    return p.pos === s.length && Number.isFinite(v) ? v : null;
  } catch (e) {
    if (e === SYNTAX) return null;
    throw e;
  }
}
