// Group-relative advantages, GRPO's learning signal: each sampled response is scored against the
// other samples of the same prompt,
//
//   A_i = (r_i - mean_g) / (std_g + eps),   std_g = sqrt(sum_j (r_j - mean_g)^2 / (n_g - 1))
//
// with the unbiased std (as TRL's GRPOTrainer computes it with torch.std), and zeros for a group of
// one sample or of equal rewards (no preference to learn; never 0/0, even with eps = 0).
//
// `groupAdvantages` runs the native CPU kernel (native/kernels/grpo_kernels.cpp, accumulating in
// double); `groupAdvantagesReference` is the same formula in float64 TypeScript, the reference the
// tests compare the kernel against. Both validate their input the same way, before any native code.
import { VisplayError, fromNative } from './errors.js';
import { loadBinding } from './native.js';
import * as check from './validate.js';

export interface GroupAdvantagesOptions {
  /** Added to the std before dividing (default 1e-6); a finite number >= 0. */
  eps?: number;
}

export const DEFAULT_ADVANTAGE_EPS = 1e-6;

/** Largest finite float32: rewards beyond it would become Infinity in the Float32Array. */
const FLOAT32_MAX = 3.4028234663852886e38;

/** The part of the binding this module uses (typed here so this file stands alone). */
interface AdvantagesBinding {
  groupAdvantages(rewards: Float32Array, groupSizes: Int32Array, eps: number): Float32Array;
}

interface Checked {
  rewards: ArrayLike<number>;
  sizes: number[];
  eps: number;
}

function isArrayLikeOfNumbers(value: unknown): value is ArrayLike<number> {
  return Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
}

/**
 * The rules both functions enforce, each failure an ERR_INVALID_ARG in validate.ts's sentence shape:
 * rewards and groupSizes are arrays or typed arrays; every reward is a finite number that float32
 * can hold; every group size a positive integer; the sizes sum to rewards.length.
 */
function validate(rewards: unknown, groupSizes: unknown, options: GroupAdvantagesOptions | undefined): Checked {
  if (!isArrayLikeOfNumbers(rewards)) throw check.invalidArg('rewards', 'array or typed array of numbers', rewards);
  if (!isArrayLikeOfNumbers(groupSizes)) throw check.invalidArg('groupSizes', 'array or typed array of positive integers', groupSizes);
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw check.invalidArg('options', 'object', options);
  }
  const eps = check.optional(options?.eps, (v) => check.nonNegativeNumber('eps', v)) ?? DEFAULT_ADVANTAGE_EPS;
  for (let i = 0; i < rewards.length; i++) {
    const r = rewards[i];
    if (typeof r !== 'number' || !Number.isFinite(r) || Math.abs(r) > FLOAT32_MAX) {
      throw check.invalidArg(`rewards[${i}]`, 'finite number within float32 range', r);
    }
  }
  const sizes: number[] = [];
  let total = 0;
  for (let g = 0; g < groupSizes.length; g++) {
    const size = check.positiveInteger(`groupSizes[${g}]`, groupSizes[g]);
    sizes.push(size);
    total += size;
  }
  if (total !== rewards.length) {
    throw new VisplayError('ERR_INVALID_ARG',
      `Expected groupSizes summing to rewards.length (${rewards.length}) but they sum to ${total}`);
  }
  return { rewards, sizes, eps };
}

/**
 * Advantages of `rewards`, whose consecutive runs of `groupSizes[g]` samples form group g (the
 * samples of one prompt). Returns one float32 advantage per reward, in the same order.
 *
 * Throws VisplayError ERR_INVALID_ARG on bad input (see the rules above), before any native code.
 */
export function groupAdvantages(rewards: ArrayLike<number>, groupSizes: ArrayLike<number>, options?: GroupAdvantagesOptions): Float32Array {
  const { rewards: r, sizes, eps } = validate(rewards, groupSizes, options);
  const binding = loadBinding() as unknown as Partial<AdvantagesBinding>;
  if (typeof binding.groupAdvantages !== 'function') {
    throw new VisplayError('ERR_ADDON_LOAD',
      'the native addon predates groupAdvantages: rebuild it with `npm run build:native`');
  }
  const f32 = r instanceof Float32Array ? r : Float32Array.from(r);
  try {
    return binding.groupAdvantages(f32, Int32Array.from(sizes), eps);
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * The same formula in float64, straight from the definition: two passes per group (mean, then the
 * sum of squared deviations). The reference the native kernel is tested against; for inputs that
 * are float32 values (as the kernel sees them) the two agree to float32 rounding. Equal rewards are
 * tested for explicitly: in float64 a mean of equal values need not round back to the value
 * (0.1 + 0.1 + 0.1 = 0.30000000000000004), which would leave a 1e-11 advantage instead of zero.
 */
export function groupAdvantagesReference(rewards: ArrayLike<number>, groupSizes: ArrayLike<number>, options?: GroupAdvantagesOptions): Float64Array {
  const { rewards: r, sizes, eps } = validate(rewards, groupSizes, options);
  const out = new Float64Array(r.length);
  let begin = 0;
  for (const n of sizes) {
    const end = begin + n;
    if (n > 1 && !allEqual(r, begin, end)) {
      let sum = 0;
      for (let i = begin; i < end; i++) sum += r[i]!;
      const mean = sum / n;
      let ss = 0;
      for (let i = begin; i < end; i++) ss += (r[i]! - mean) ** 2;
      if (ss !== 0) {
        const denom = Math.sqrt(ss / (n - 1)) + eps;
        for (let i = begin; i < end; i++) out[i] = (r[i]! - mean) / denom;
      }
    }
    begin = end;
  }
  return out;
}

function allEqual(r: ArrayLike<number>, begin: number, end: number): boolean {
  for (let i = begin + 1; i < end; i++) if (r[i] !== r[begin]) return false;
  return true;
}
