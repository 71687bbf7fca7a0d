// Group-relative advantages: the float64 reference against hand-computed values and the formula's
// invariants, and the input rules, which both groupAdvantages and the reference enforce before any
// native code runs (so these tests need no addon).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_ADVANTAGE_EPS, groupAdvantages, groupAdvantagesReference } from '../../src/advantages.js';
import { VisplayError } from '../../src/errors.js';
import { rng } from './helpers/rng.js';

/** Asserts that `fn` throws ERR_INVALID_ARG with exactly `message`. */
function throwsInvalid(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VisplayError, `expected a VisplayError, got ${String(e)}`);
    assert.equal(e.code, 'ERR_INVALID_ARG');
    assert.equal(e.message, message);
    return true;
  });
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number): void {
  assert.equal(actual.length, expected.length, 'lengths differ');
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol, `[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tol})`);
  }
}


describe('groupAdvantagesReference', () => {
  it('matches hand-computed values: [1,2,3] and [10,20]', () => {
    const e = DEFAULT_ADVANTAGE_EPS;
    const a = groupAdvantagesReference([1, 2, 3, 10, 20], [3, 2]);
    // Group 1: mean 2, unbiased std 1. Group 2: mean 15, std sqrt(50).
    assertClose(a, [-1 / (1 + e), 0, 1 / (1 + e), -5 / (Math.sqrt(50) + e), 5 / (Math.sqrt(50) + e)], 1e-15);
  });

  it('pass/fail rewards: one success in four gets 1.5, the failures -0.5', () => {
    // mean 0.25, unbiased variance (0.75^2 + 3 * 0.25^2) / 3 = 0.25, std 0.5
    assertClose(groupAdvantagesReference([1, 0, 0, 0], [4], { eps: 0 }), [1.5, -0.5, -0.5, -0.5], 1e-15);
  });

  it('a group of one and a group of equal rewards give exact zeros, also with eps = 0', () => {
    const a = groupAdvantagesReference([42, 0.1, 0.1, 0.1, 7, 7], [1, 3, 2], { eps: 0 });
    assert.deepEqual(Array.from(a), [0, 0, 0, 0, 0, 0]);
    assert.ok(!a.some(Number.isNaN));
  });

  it('an empty batch gives an empty result', () => {
    const a = groupAdvantagesReference([], []);
    assert.ok(a instanceof Float64Array);
    assert.equal(a.length, 0);
  });

  it('handles huge and negative rewards without overflow', () => {
    // mean 0, unbiased variance 2e76, std 1.414e38: +-1/sqrt(2)
    assertClose(groupAdvantagesReference([-1e38, 1e38], [2], { eps: 0 }), [-Math.SQRT1_2, Math.SQRT1_2], 1e-15);
    assertClose(groupAdvantagesReference([-1003, -1001], [2], { eps: 0 }), [-Math.SQRT1_2, Math.SQRT1_2], 1e-12);
  });

  it('is invariant to shifting and positive scaling of a group (eps aside)', () => {
    const next = rng(1);
    const r = Array.from({ length: 16 }, () => next());
    const base = groupAdvantagesReference(r, [16], { eps: 0 });
    assertClose(groupAdvantagesReference(r.map((x) => 3 * x - 7), [16], { eps: 0 }), base, 1e-12);
  });

  it('each group sums to zero and has unit unbiased std (eps = 0)', () => {
    const next = rng(2);
    const sizes = [2, 3, 8, 17, 100];
    const r = sizes.flatMap((n) => Array.from({ length: n }, () => next() * 10 - 5));
    const a = groupAdvantagesReference(r, sizes, { eps: 0 });
    let begin = 0;
    for (const n of sizes) {
      const g = Array.from(a.subarray(begin, begin + n));
      const sum = g.reduce((s, x) => s + x, 0);
      const variance = g.reduce((s, x) => s + x * x, 0) / (n - 1);
      assert.ok(Math.abs(sum) < 1e-12, `group of ${n} sums to ${sum}`);
      assert.ok(Math.abs(variance - 1) < 1e-12, `group of ${n} has variance ${variance}`);
      begin += n;
    }
  });

  it('eps shrinks advantages toward zero: (r - mean) / (std + eps)', () => {
    const a = groupAdvantagesReference([0, 2], [2], { eps: 1 });
    // std sqrt(2): -1 / (sqrt(2) + 1)
    assertClose(a, [-1 / (Math.SQRT2 + 1), 1 / (Math.SQRT2 + 1)], 1e-15);
  });

  it('accepts typed arrays', () => {
    const a = groupAdvantagesReference(new Float32Array([1, 2, 3]), new Int32Array([3]));
    assertClose(a, groupAdvantagesReference([1, 2, 3], [3]), 0);
  });
});

describe('groupAdvantages input rules (checked before the addon is loaded)', () => {
  for (const [name, fn] of [['groupAdvantages', groupAdvantages], ['groupAdvantagesReference', groupAdvantagesReference]] as const) {
    it(`${name}: rewards and groupSizes must be arrays or typed arrays`, () => {
      throwsInvalid(() => fn('abc' as unknown as number[], [3]),
        'Expected array or typed array of numbers for rewards but received abc of type string');
      throwsInvalid(() => fn(undefined as unknown as number[], [3]),
        'Expected array or typed array of numbers for rewards but received undefined of type undefined');
      throwsInvalid(() => fn([1, 2], 2 as unknown as number[]),
        'Expected array or typed array of positive integers for groupSizes but received 2 of type number');
    });

    it(`${name}: every reward is a finite float32 number`, () => {
      throwsInvalid(() => fn([1, NaN, 3], [3]), 'Expected finite number within float32 range for rewards[1] but received NaN of type number');
      throwsInvalid(() => fn([Infinity], [1]), 'Expected finite number within float32 range for rewards[0] but received Infinity of type number');
      throwsInvalid(() => fn([0, 1e39], [2]), 'Expected finite number within float32 range for rewards[1] but received 1e+39 of type number');
      throwsInvalid(() => fn([0, '1' as unknown as number], [2]), 'Expected finite number within float32 range for rewards[1] but received 1 of type string');
    });

    it(`${name}: every group size is a positive integer`, () => {
      throwsInvalid(() => fn([1, 2, 3], [3, 0]), 'Expected positive integer for groupSizes[1] but received 0 of type number');
      throwsInvalid(() => fn([1, 2, 3], [1.5, 1.5]), 'Expected positive integer for groupSizes[0] but received 1.5 of type number');
      throwsInvalid(() => fn([1, 2, 3], [-1, 4]), 'Expected positive integer for groupSizes[0] but received -1 of type number');
    });

    it(`${name}: the sizes sum to rewards.length`, () => {
      throwsInvalid(() => fn([1, 2, 3], [2, 2]), 'Expected groupSizes summing to rewards.length (3) but they sum to 4');
      throwsInvalid(() => fn([1, 2, 3], [2]), 'Expected groupSizes summing to rewards.length (3) but they sum to 2');
      throwsInvalid(() => fn([1], []), 'Expected groupSizes summing to rewards.length (1) but they sum to 0');
    });

    it(`${name}: eps is a finite number >= 0 and options an object`, () => {
      throwsInvalid(() => fn([1, 2], [2], { eps: -1 }), 'Expected non-negative number for eps but received -1 of type number');
      throwsInvalid(() => fn([1, 2], [2], { eps: NaN }), 'Expected non-negative number for eps but received NaN of type number');
      throwsInvalid(() => fn([1, 2], [2], 5 as unknown as { eps: number }), 'Expected object for options but received 5 of type number');
    });
  }
});
