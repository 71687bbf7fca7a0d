// Typed access to GGUF metadata. A key that is absent reads as undefined; a key present with the
// wrong type is a damaged (or foreign) file and says so, rather than passing NaN or "[object]" on.
import { VisplayError } from './errors.js';
import type { GgufFile, GgufValue } from './gguf-reader.js';

/** The string at `key`; undefined when absent; ERR_GGUF_CORRUPT when present with another type. */
export function metaString(file: GgufFile, key: string): string | undefined {
  const value = file.metadata.get(key);
  if (value === undefined || typeof value === 'string') return value;
  throw wrongType(file, key, 'a string', value);
}

/** The number at `key` (any integer or float type); undefined when absent. */
export function metaNumber(file: GgufFile, key: string): number | undefined {
  const value = file.metadata.get(key);
  if (value === undefined || typeof value === 'number') return value;
  throw wrongType(file, key, 'a number', value);
}

export function metaBoolean(file: GgufFile, key: string): boolean | undefined {
  const value = file.metadata.get(key);
  if (value === undefined || typeof value === 'boolean') return value;
  throw wrongType(file, key, 'a boolean', value);
}

/** The length of the array at `key` (kept whole or not); undefined when absent. */
export function metaArrayLength(file: GgufFile, key: string): number | undefined {
  const value = file.metadata.get(key);
  if (value === undefined) return undefined;
  if (typeof value === 'object') return value.length;
  throw wrongType(file, key, 'an array', value);
}

function wrongType(file: GgufFile, key: string, expected: string, value: GgufValue): VisplayError {
  return new VisplayError('ERR_GGUF_CORRUPT', `${file.label} is corrupt: ${key} should be ${expected} but is ${describeValue(value)}`);
}

/** A value as shown in messages: strings quoted and shortened, arrays by length. */
export function describeValue(value: GgufValue): string {
  if (typeof value === 'object') return `an array of ${value.length} ${value.elementType} items`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  return String(value);
}
