// The native group-advantage kernel (native/kernels, through kernels_binding.cpp) against the
// float64 TypeScript reference, within 1e-5 absolute (both see the same float32 rewards; the kernel
// accumulates in double, so the difference is float32 output rounding), and its bad-input backstop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { groupAdvantages, groupAdvantagesReference } from '../../src/advantages.js';
import { VisplayError } from '../../src/errors.js';
import { loadBinding } from '../../src/native.js';
import { rng } from '../unit/helpers/rng.js';

const TOLERANCE = 1e-5;

interface AdvantagesBinding {
  groupAdvantages(rewards: Float32Array, groupSizes: Int32Array, eps: number): Float32Array;
}

function binding(): AdvantagesBinding {
  const b = loadBinding() as unknown as Partial<AdvantagesBinding>;
  assert.equal(typeof b.groupAdvantages, 'function',
    'the addon has no groupAdvantages: compile native/kernels/kernels_binding.cpp into it and call init_kernels from addon.cpp');
  return b as AdvantagesBinding;
}


function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Rewards as float32 (what the kernel sees) and their sizes. */
function batch(sizes: number[], draw: (next: () => number, group: number) => number, seed: number): { rewards: Float32Array; sizes: number[] } {
  const next = rng(seed);
  const rewards = new Float32Array(sizes.reduce((s, n) => s + n, 0));
  let i = 0;
  sizes.forEach((n, g) => { for (let k = 0; k < n; k++) rewards[i++] = draw(next, g); });
  return { rewards, sizes };
}

describe('groupAdvantages (native)', () => {
  const cases: Array<[string, { rewards: Float32Array; sizes: number[] }]> = [
    ['512 prompts x 8 pass/fail samples', batch(Array(512).fill(8), (next) => (next() < 0.3 ? 1 : 0), 1)],
    ['groups of 1..300 samples, uniform rewards', batch(Array.from({ length: 200 }, (_, g) => 1 + ((g * 37) % 300)), (next) => next() * 4 - 2, 2)],
    ['one group of 5000', batch([5000], (next) => next(), 3)],
    ['huge and tiny magnitudes', batch([4, 16, 64], (next, g) => [1e37, 1e-20, -3e5][g]! * (next() - 0.5), 4)],
  ];
  for (const [name, { rewards, sizes }] of cases) {
    it(`matches the float64 reference within ${TOLERANCE}: ${name}`, () => {
      const got = groupAdvantages(rewards, sizes);
      const ref = groupAdvantagesReference(rewards, sizes);
      assert.ok(got instanceof Float32Array);
      assert.ok(maxAbsDiff(got, ref) <= TOLERANCE, `max |diff| ${maxAbsDiff(got, ref)}`);
    });
  }

  it('honours eps', () => {
    const got = groupAdvantages([0, 2], [2], { eps: 1 });
    assert.ok(maxAbsDiff(got, [-1 / (Math.SQRT2 + 1), 1 / (Math.SQRT2 + 1)]) <= 1e-7);
  });

  it('gives exact zeros for a group of one and for equal rewards (also eps = 0), and nothing for an empty batch', () => {
    assert.deepEqual(Array.from(groupAdvantages([5, 0.1, 0.1, 0.1, -3e38, -3e38], [1, 3, 2], { eps: 0 })), [0, 0, 0, 0, 0, 0]);
    const empty = groupAdvantages([], []);
    assert.ok(empty instanceof Float32Array);
    assert.equal(empty.length, 0);
  });

  it('accepts plain arrays and typed arrays alike', () => {
    const a = groupAdvantages([1, 2, 3, 4], [2, 2]);
    const b = groupAdvantages(new Float32Array([1, 2, 3, 4]), new Int32Array([2, 2]));
    assert.deepEqual(Array.from(a), Array.from(b));
  });

  it('the wrapper rejects bad input with VisplayError ERR_INVALID_ARG', () => {
    assert.throws(() => groupAdvantages([1, 2, 3], [2, 2]),
      (e: unknown) => e instanceof VisplayError && e.code === 'ERR_INVALID_ARG' && /sum to 4/.test(e.message));
  });

  it('the binding itself rejects bad input with "[ERR_INVALID_ARG] " messages', () => {
    const b = binding();
    const bad: Array<[string, () => unknown, RegExp]> = [
      ['sizes not summing to the length', () => b.groupAdvantages(new Float32Array(3), new Int32Array([2, 2]), 1e-6), /summing to rewards\.length \(3\) but they sum to 4/],
      ['a size of 0', () => b.groupAdvantages(new Float32Array(3), new Int32Array([3, 0]), 1e-6), /groupSizes\[1\]/],
      ['a negative size', () => b.groupAdvantages(new Float32Array(3), new Int32Array([4, -1]), 1e-6), /groupSizes\[1\]/],
      ['a NaN reward', () => b.groupAdvantages(new Float32Array([1, NaN]), new Int32Array([2]), 1e-6), /rewards\[1\] but received NaN/],
      ['an infinite reward', () => b.groupAdvantages(new Float32Array([Infinity]), new Int32Array([1]), 1e-6), /rewards\[0\] but received Infinity/],
      ['a plain array of rewards', () => b.groupAdvantages([1, 2] as unknown as Float32Array, new Int32Array([2]), 1e-6), /Expected Float32Array for rewards/],
      ['a Float64Array of rewards', () => b.groupAdvantages(new Float64Array(2) as unknown as Float32Array, new Int32Array([2]), 1e-6), /Expected Float32Array for rewards but received a Float64Array/],
      ['float sizes', () => b.groupAdvantages(new Float32Array(2), new Float32Array([2]) as unknown as Int32Array, 1e-6), /Expected Int32Array for groupSizes/],
      ['a negative eps', () => b.groupAdvantages(new Float32Array(2), new Int32Array([2]), -1), /eps but received -1/],
      ['a missing eps', () => (b.groupAdvantages as (...a: unknown[]) => unknown)(new Float32Array(2), new Int32Array([2])), /eps but received undefined/],
    ];
    for (const [what, call, pattern] of bad) {
      assert.throws(call, (e: unknown) => {
        assert.ok(e instanceof Error, `${what}: expected an Error`);
        assert.ok(e.message.startsWith('[ERR_INVALID_ARG] '), `${what}: message ${JSON.stringify(e.message)}`);
        assert.match(e.message, pattern, what);
        return true;
      }, what);
    }
    // The addon is still fine afterwards.
    assert.ok(Math.abs(b.groupAdvantages(new Float32Array([1, 3]), new Int32Array([2]), 0)[1]! - Math.SQRT1_2) < 1e-7);
  });
});
