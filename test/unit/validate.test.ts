import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VisplayError } from '../../src/errors.js';
import * as is from '../../src/validate.js';

/** Asserts that `fn` throws ERR_INVALID_ARG with exactly `message`. */
function throwsInvalid(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VisplayError);
    assert.equal(e.code, 'ERR_INVALID_ARG');
    assert.equal(e.message, message);
    return true;
  });
}

describe('validate', () => {
  it('integer: accepts the bounds, rejects outside, fractions, NaN and strings', () => {
    assert.equal(is.integer('n', 1, 1, 1024), 1);
    assert.equal(is.integer('n', 1024, 1, 1024), 1024);
    throwsInvalid(() => is.integer('n', 0, 1, 1024), 'Expected integer between 1 and 1024 for n but received 0 of type number');
    throwsInvalid(() => is.integer('n', 1025, 1, 1024), 'Expected integer between 1 and 1024 for n but received 1025 of type number');
    throwsInvalid(() => is.integer('n', 2.5, 1, 1024), 'Expected integer between 1 and 1024 for n but received 2.5 of type number');
    throwsInvalid(() => is.integer('n', NaN, 1, 1024), 'Expected integer between 1 and 1024 for n but received NaN of type number');
    throwsInvalid(() => is.integer('n', '4', 1, 1024), 'Expected integer between 1 and 1024 for n but received 4 of type string');
  });

  it('positive and non-negative numbers', () => {
    assert.equal(is.positiveNumber('temperature', 0.7), 0.7);
    throwsInvalid(() => is.positiveNumber('temperature', -1), 'Expected positive number for temperature but received -1 of type number');
    throwsInvalid(() => is.positiveNumber('temperature', 0), 'Expected positive number for temperature but received 0 of type number');
    throwsInvalid(() => is.positiveNumber('temperature', Infinity), 'Expected positive number for temperature but received Infinity of type number');
    assert.equal(is.nonNegativeNumber('temperature', 0), 0);
    throwsInvalid(() => is.nonNegativeNumber('temperature', -0.5), 'Expected non-negative number for temperature but received -0.5 of type number');
  });

  it('number between bounds', () => {
    assert.equal(is.number('top-p', 0.9, 0, 1), 0.9);
    throwsInvalid(() => is.number('top-p', 1.5, 0, 1), 'Expected number between 0 and 1 for top-p but received 1.5 of type number');
  });

  it('positive and non-negative integers', () => {
    assert.equal(is.positiveInteger('parallel', 8), 8);
    throwsInvalid(() => is.positiveInteger('parallel', 0), 'Expected positive integer for parallel but received 0 of type number');
    assert.equal(is.nonNegativeInteger('seed', 0), 0);
    throwsInvalid(() => is.nonNegativeInteger('seed', -3), 'Expected non-negative integer for seed but received -3 of type number');
    throwsInvalid(() => is.nonNegativeInteger('seed', 2 ** 60), 'Expected non-negative integer for seed but received 1152921504606847000 of type number');
  });

  it('strings', () => {
    assert.equal(is.string('prompt', ''), '');
    throwsInvalid(() => is.string('model', undefined), 'Expected string for model but received undefined of type undefined');
    throwsInvalid(() => is.string('model', null), 'Expected string for model but received null of type null');
    throwsInvalid(() => is.nonEmptyString('model', ''), 'Expected non-empty string for model but received  of type string');
  });

  it('boolean, oneOf and arrays', () => {
    assert.equal(is.boolean('json', true), true);
    throwsInvalid(() => is.boolean('json', 'yes'), 'Expected boolean for json but received yes of type string');
    assert.equal(is.oneOf('role', 'user', ['system', 'user', 'assistant'] as const), 'user');
    throwsInvalid(() => is.oneOf('role', 'robot', ['system', 'user', 'assistant'] as const),
      'Expected one of system, user, assistant for role but received robot of type string');
    assert.deepEqual(is.arrayOf('image', ['a.png', 'b.png'], is.nonEmptyString), ['a.png', 'b.png']);
    throwsInvalid(() => is.arrayOf('image', ['a.png', 7], is.nonEmptyString), 'Expected non-empty string for image[1] but received 7 of type number');
    throwsInvalid(() => is.arrayOf('image', 'a.png', is.nonEmptyString), 'Expected array for image but received a.png of type string');
  });

  it('renders objects as JSON and truncates long values', () => {
    throwsInvalid(() => is.string('model', ['a', 'b']), 'Expected string for model but received ["a","b"] of type object');
    throwsInvalid(() => is.integer('n', 'y'.repeat(100), 1, 2),
      `Expected integer between 1 and 2 for n but received ${'y'.repeat(57)}... of type string`);
  });

  it('optional passes undefined through and checks anything else', () => {
    assert.equal(is.optional(undefined, (v) => is.integer('seed', v, 0, 9)), undefined);
    assert.equal(is.optional(3, (v) => is.integer('seed', v, 0, 9)), 3);
    throwsInvalid(() => is.optional(10, (v) => is.integer('seed', v, 0, 9)), 'Expected integer between 0 and 9 for seed but received 10 of type number');
  });
});
