// One validation module, after sharp's lib/is.js: every check throws ERR_INVALID_ARG with the same
// sentence shape, "Expected <what> for <name> but received <value> of type <typeof>", so users see
// uniform messages and tests can assert them exactly. Each check returns the value narrowed to its
// type, so call sites read `const n = is.integer('n', options.n, 1, 1024)`.
//
// `name` is what the user typed: the CLI passes flag names ('max-tokens'), the library its option
// names ('maxTokens').
import { VisplayError } from './errors.js';

/** The error every check throws; exported for checks that do not fit the helpers below. */
export function invalidArg(name: string, expected: string, value: unknown): VisplayError {
  return new VisplayError('ERR_INVALID_ARG',
    `Expected ${expected} for ${name} but received ${formatValue(value)} of type ${typeOf(value)}`);
}

export function integer(name: string, value: unknown, min: number, max: number): number {
  if (!isInteger(value) || value < min || value > max) {
    throw invalidArg(name, `integer between ${min} and ${max}`, value);
  }
  return value;
}

export function positiveInteger(name: string, value: unknown): number {
  if (!isInteger(value) || value < 1) throw invalidArg(name, 'positive integer', value);
  return value;
}

export function nonNegativeInteger(name: string, value: unknown): number {
  if (!isInteger(value) || value < 0) throw invalidArg(name, 'non-negative integer', value);
  return value;
}

export function number(name: string, value: unknown, min: number, max: number): number {
  if (!isFiniteNumber(value) || value < min || value > max) {
    throw invalidArg(name, `number between ${min} and ${max}`, value);
  }
  return value;
}

export function positiveNumber(name: string, value: unknown): number {
  if (!isFiniteNumber(value) || value <= 0) throw invalidArg(name, 'positive number', value);
  return value;
}

export function nonNegativeNumber(name: string, value: unknown): number {
  if (!isFiniteNumber(value) || value < 0) throw invalidArg(name, 'non-negative number', value);
  return value;
}

export function string(name: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidArg(name, 'string', value);
  return value;
}

export function nonEmptyString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw invalidArg(name, 'non-empty string', value);
  return value;
}

export function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidArg(name, 'boolean', value);
  return value;
}

export function oneOf<const T extends readonly string[]>(name: string, value: unknown, choices: T): T[number] {
  if (typeof value !== 'string' || !choices.includes(value)) {
    throw invalidArg(name, `one of ${choices.join(', ')}`, value);
  }
  return value;
}

/** An array whose every item passes `check`; items are named `name[i]` in messages. */
export function arrayOf<T>(name: string, value: unknown, check: (name: string, item: unknown) => T): T[] {
  if (!Array.isArray(value)) throw invalidArg(name, 'array', value);
  return value.map((item, i) => check(`${name}[${i}]`, item));
}

/** `check(value)` unless the option was left out (undefined). */
export function optional<T>(value: unknown, check: (value: unknown) => T): T | undefined {
  return value === undefined ? undefined : check(value);
}

// ---- helpers ------------------------------------------------------------------------------------

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value);
}

/** Longest rendering of a received value; a pasted document should not flood the terminal. */
const MAX_VALUE_CHARS = 60;

function formatValue(value: unknown): string {
  let text: string;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' ||
      typeof value === 'boolean' || typeof value === 'symbol' || value === undefined || value === null) {
    text = String(value);
  } else if (typeof value === 'function') {
    text = `function ${value.name || '(anonymous)'}`;
  } else {
    text = safeJson(value);
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 3)}...` : text;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    // Cycles and BigInts inside objects: fall back to the tag, e.g. "[object Object]".
    return Object.prototype.toString.call(value);
  }
}

/** typeof, except that null reads as "null" (what a user means) rather than "object". */
function typeOf(value: unknown): string {
  return value === null ? 'null' : typeof value;
}
