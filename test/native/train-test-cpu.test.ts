// The C++ trainer test executable in its CPU modes (native/test/train_test.cpp), so the harness that
// runs on GPU machines without Node is exercised by every `npm test`:
//   - parity: the trainer at 1 thread against 2 threads (F32 with a projector adapter, and Q8_0
//     blocks), the second with the GPU trainer's head backward (out_prod from W_out instead of a
//     transposed copy): log-probs, gradients, one AdamW update, save/restore; the GPU run compares
//     the CPU trainer with the GPU trainer the same way (test/gpu/train-test.test.ts);
//   - --grads: the JSON exchange with the PEFT reference (scripts/device/peft_reference.py) on a
//     text-only model given as token ids.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';
import { makeTinyModel } from '../../src/tiny-model.js';
import { buildAndRunExe, type TrainTestReport } from './gpu-exe.js';
import { scratchDir } from './helpers.js';

const buildDir = join(PACKAGE_ROOT, 'build');

interface GradsOut {
  device: string;
  on_gpu: boolean;
  loss: number;
  clip_fraction: number;
  logprobs: number[][];
  lora_scale: number;
  tensors: { name: string; base: string; kind: 'a' | 'b'; shape: [number, number]; value: number[]; grad: number[] }[];
}

describe('visplay_train_test --cpu', () => {
  it('trainer parity between two CPU thread counts: log-probs, gradients, update, save/restore', { timeout: 300_000 }, () => {
    const { report, output } = buildAndRunExe<TrainTestReport>(buildDir, 'visplay_train_test', ['--cpu', '--dir', scratchDir()]);
    assert.equal(report.ok, true, output);
    assert.equal(report.mode, 'cpu-vs-cpu');
    assert.deepEqual(report.variants!.map((v) => v.variant), ['f32+projector', 'q8_0']);
    for (const v of report.variants!) {
      assert.equal(v.subject_on_gpu, false);
      assert.ok(v.logprob_max_diff <= v.tolerance.logprob_abs, `${v.variant}: ${v.logprob_max_diff}`);
      assert.ok(v.grad_max_rel_err <= v.tolerance.grad_rel, `${v.variant}: ${v.grad_max_rel_err}`);
      assert.ok(v.update_max_rel_err <= v.tolerance.update_rel, `${v.variant}: ${v.update_max_rel_err}`);
      assert.ok(v.flipped_advantages_min_rel_diff > 10 * v.tolerance.grad_rel, 'the tolerance must be small against a sign error');
      assert.ok(v.clip_fraction[0] > 0, 'the second batch must clip some tokens');
      assert.equal(v.restore_bitwise_equal, true);
      assert.deepEqual(v.step_applied, [true, true]);
    }
    assert.equal(report.variants![0].tensors, 30, '28 LoRA tensors + the projector pair');
  });

  it('--grads: loss, log-probs and LoRA values + gradients of one GRPO step for a token-id batch', { timeout: 300_000 }, async () => {
    const dir = scratchDir();
    const tiny = await makeTinyModel({ embeddingType: 'f32' });
    const batch = {
      rank: 4, alpha: 8, seed: 2, b_std: 0.02, kl_coef: 0, clip_low: 0.2, clip_high: 0.3, dual_clip: 3,
      prompt: [9707, 11, 1879, 0, 358, 1079, 264, 1273],
      samples: [
        { tokens: [40, 1097, 264], advantage: 1.0 },
        { tokens: [785, 4226, 374, 220, 19], advantage: -0.8 },
      ],
    };
    const run = (b: object, name: string): GradsOut => {
      const bp = join(dir, `${name}.json`);
      const op = join(dir, `${name}-out.json`);
      writeFileSync(bp, JSON.stringify(b));
      const { report, output } = buildAndRunExe<{ ok: boolean }>(buildDir, 'visplay_train_test', ['--grads', tiny.modelPath, '--batch', bp, '--out', op, '--cpu']);
      assert.equal(report.ok, true, output);
      return JSON.parse(readFileSync(op, 'utf8')) as GradsOut;
    };
    const first = run(batch, 'first');
    assert.equal(first.on_gpu, false);
    assert.equal(first.lora_scale, 2);
    assert.deepEqual(first.logprobs.map((l) => l.length), [3, 5]);
    assert.equal(first.tensors.length, 2 * 7 * 2, '7 modules x 2 layers, A and B');
    const q = first.tensors.find((t) => t.name === 'blk.0.attn_q.weight.lora_a')!;
    assert.deepEqual(q.shape, [128, 4]);
    assert.equal(q.value.length, 128 * 4);
    const b = first.tensors.find((t) => t.name === 'blk.0.attn_q.weight.lora_b')!;
    assert.ok(b.value.some((x) => x !== 0), 'B is drawn from N(0, b_std) so that A has gradients');
    assert.ok(q.grad.some((x) => x !== 0));
    // Old log-probs offset so that some tokens clip; the same batch twice gives the same numbers.
    const offs = [0.5, -0.5, 0.1];
    const clipped = { ...batch, samples: batch.samples.map((s, i) => ({ ...s, old_logprobs: first.logprobs[i].map((x, j) => x + offs[(i + j) % 3]) })) };
    const second = run(clipped, 'second');
    const again = run(clipped, 'again');
    assert.ok(second.clip_fraction > 0 && second.clip_fraction < 1, `clip fraction ${second.clip_fraction}`);
    assert.deepEqual(again.tensors.map((t) => t.grad), second.tensors.map((t) => t.grad));
    assert.ok(Number.isFinite(second.loss));
  });
});
