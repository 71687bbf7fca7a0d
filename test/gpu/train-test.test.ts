// GPU tier, training: runs the plain C++ executable visplay_train_test (native/test/train_test.cpp)
// with --require-gpu: the GRPO trainer on the GPU (every weight, the LoRA tensors, gradients and
// AdamW moments in GPU memory; our CUDA AdamW) against the CPU trainer on the tiny model, F32 with
// a projector adapter and Q8_0 blocks (the quantized backward pass of native/patches/0003):
// log-probs, gradients and one update within the tolerances stated there, save/restore exact.
// Needs a CUDA device and a CUDA build (build/ when built with VISPLAY_CUDA=1, else
// VISPLAY_CUDA_BUILD_DIR); elsewhere it is skipped with the reason. GPU machines without Node run
// the executable directly (scripts/device/gpu-check.sh).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';
import { buildAndRunExe, isCudaBuild, type TrainTestReport } from '../native/gpu-exe.js';
import { scratchDir } from '../native/helpers.js';

const buildDir = process.env.VISPLAY_CUDA_BUILD_DIR ? resolve(PACKAGE_ROOT, process.env.VISPLAY_CUDA_BUILD_DIR) : join(PACKAGE_ROOT, 'build');

function whyNot(): string | false {
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  if (smi.error || smi.status !== 0 || !/^GPU \d+:/m.test(smi.stdout)) return 'no CUDA device is visible (nvidia-smi -L lists none)';
  if (!isCudaBuild(buildDir)) return `${buildDir} is not a CUDA build (build with VISPLAY_CUDA=1, or set VISPLAY_CUDA_BUILD_DIR to one)`;
  return false;
}

const skip = whyNot();
if (skip) console.log(`# gpu trainer executable skipped: ${skip}`);

describe('visplay_train_test on the GPU', { skip }, () => {
  it('log-probs, gradients and one AdamW update within tolerance of the CPU trainer; save/restore exact', { timeout: 600_000 }, () => {
    const { report, output } = buildAndRunExe<TrainTestReport>(buildDir, 'visplay_train_test', ['--require-gpu', '--dir', scratchDir()]);
    assert.equal(report.ok, true, output);
    assert.equal(report.mode, 'cpu-vs-gpu');
    for (const v of report.variants!) {
      assert.equal(v.subject_on_gpu, true, `${v.variant}: the subject trainer must run on the GPU`);
      assert.ok(v.grad_max_rel_err <= v.tolerance.grad_rel, `${v.variant}: ${v.grad_max_rel_err}`);
      assert.ok(v.flipped_advantages_min_rel_diff > 10 * v.tolerance.grad_rel);
    }
  });
});
