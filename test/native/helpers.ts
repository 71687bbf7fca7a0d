// Shared fixtures of the native tier: the embedded tiny model (made once, cached) and test images.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { PACKAGE_ROOT } from '../../src/native.js';
import { VisplayError, type VisplayErrorCode } from '../../src/errors.js';
import { Model } from '../../src/model.js';
import type { Policy } from '../../src/policy.js';
import { makeTinyModel, type TinyModelFiles } from '../../src/tiny-model.js';

export const TOOLS_DIR = join(PACKAGE_ROOT, 'build', 'bin');

let files: Promise<TinyModelFiles> | undefined;
export function tinyFiles(): Promise<TinyModelFiles> {
  files ??= makeTinyModel({ seed: 1 });
  return files;
}

export async function loadTiny(): Promise<Model> {
  const f = await tinyFiles();
  return Model.load({ model: f.modelPath, mmproj: f.mmprojPath, threads: 2 });
}

export function scratchDir(): string {
  return mkdtempSync(join(tmpdir(), 'visplay-test-'));
}

/** A deterministic RGB test pattern, encoded as PNG (lossless, so every decoder sees the same pixels). */
export async function patternPng(width: number, height: number, seed = 0): Promise<Buffer> {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      rgb[i] = (x * 4 + seed * 37) & 255;
      rgb[i + 1] = (y * 5 + seed * 11) & 255;
      rgb[i + 2] = ((x + y) * 3 + seed * 53) & 255;
    }
  }
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** Largest absolute difference between two equal-length arrays. */
export function maxAbsDiff(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Asserts that `run` rejects (or throws) a VisplayError with `code` whose message matches every pattern. */
export async function rejectsWith(run: () => Promise<unknown> | unknown, code: VisplayErrorCode, ...patterns: Array<string | RegExp>): Promise<VisplayError> {
  let caught: unknown;
  try {
    await run();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected a ${code} error, but the call succeeded`);
  assert.ok(caught instanceof VisplayError, `expected a VisplayError, got ${String(caught)}`);
  assert.equal(caught.code, code, `wrong code for: ${caught.message}`);
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(caught.message.includes(p), `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(p)}`);
    else assert.match(caught.message, p);
  }
  return caught;
}

/** Deterministic pseudo-random numbers in [-0.5, 0.5). */
export function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

/** Gives every lora_b (the projector's too) a random value so that A receives gradients (B = 0 at initialisation). */
export async function randomizeB(policy: Policy, seed: number, scale = 0.2): Promise<void> {
  const rnd = lcg(seed);
  for (const name of policy.tensorNames()) {
    if (name.endsWith('lora_b')) await policy.setTensor(name, policy.getTensor(name).map(() => rnd() * scale));
  }
}

/**
 * Relative error of the directional derivative of `loss` along tensor `name`'s own gradient `g`
 * against |g|, by central differences with steps 1e-2 and 3e-3 (truncation vs. rounding; the better
 * one counts). The derivative along g is |g|, large enough that float32 noise in the loss (~1e-7)
 * stays far below a 1e-3 tolerance. Restores the tensor.
 */
export async function directionalDerivativeError(policy: Policy, name: string, g: ArrayLike<number>, loss: () => Promise<number>): Promise<number> {
  const norm = Math.hypot(...Array.from(g));
  const t = policy.getTensor(name);
  let best = Infinity;
  try {
    for (const h of [1e-2, 3e-3]) {
      await policy.setTensor(name, t.map((x, i) => x + (h * g[i]!) / norm));
      const plus = await loss();
      await policy.setTensor(name, t.map((x, i) => x - (h * g[i]!) / norm));
      const minus = await loss();
      best = Math.min(best, Math.abs((plus - minus) / (2 * h) - norm) / norm);
    }
  } finally {
    await policy.setTensor(name, t);
  }
  return best;
}

/**
 * For each tensor of `names`: its gradient is not negligible (|g| > 1e-3) and matches the central
 * difference of `loss` along it within a relative error of 1e-3 (directionalDerivativeError).
 */
export async function assertGradientsMatchFiniteDifferences(policy: Policy, names: readonly string[], gradients: Record<string, ArrayLike<number>>,
  loss: () => Promise<number>): Promise<void> {
  for (const name of names) {
    const g = gradients[name]!;
    const norm = Math.hypot(...Array.from(g));
    assert.ok(norm > 1e-3, `${name}: gradient norm ${norm}`);
    const error = await directionalDerivativeError(policy, name, g, loss);
    assert.ok(error <= 1e-3, `${name}: relative error ${error}`);
  }
}
