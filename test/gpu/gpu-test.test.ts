// GPU tier, rollouts: runs the plain C++ executable visplay_gpu_test (native/test/gpu_test.cpp) with
// --require-gpu: the tiny model (F32) on the CPU against every layer, the KV cache and the projector
// on the GPU (greedy tokens identical; log-probs and logits within the tolerance stated there; one
// encode per distinct image). It needs a CUDA device and a CUDA build: build/ when the addon was
// built with VISPLAY_CUDA=1, else the folder named by VISPLAY_CUDA_BUILD_DIR (e.g. one built with
// `VISPLAY_CUDA=1 VISPLAY_BUILD_DIR=build-cuda node scripts/build-native.mjs`). Elsewhere it is
// skipped with the reason. GPU machines without Node run the executable directly
// (scripts/device/gpu-check.sh).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';
import { buildAndRunGpuTest, isCudaBuild } from '../native/gpu-exe.js';
import { scratchDir } from '../native/helpers.js';

const buildDir = process.env.VISPLAY_CUDA_BUILD_DIR ? resolve(PACKAGE_ROOT, process.env.VISPLAY_CUDA_BUILD_DIR) : join(PACKAGE_ROOT, 'build');

function whyNot(): string | false {
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  if (smi.error || smi.status !== 0 || !/^GPU \d+:/m.test(smi.stdout)) return 'no CUDA device is visible (nvidia-smi -L lists none)';
  if (!isCudaBuild(buildDir)) {
    return `${buildDir} is not a CUDA build (build with VISPLAY_CUDA=1, or set VISPLAY_CUDA_BUILD_DIR to one)`;
  }
  return false;
}

const skip = whyNot();
if (skip) console.log(`# gpu rollout executable skipped: ${skip}`);

describe('visplay_gpu_test on the GPU', { skip }, () => {
  it('greedy tokens equal, log-probs and logits within tolerance, one encode per image: CPU vs GPU', { timeout: 600_000 }, () => {
    const { report, output } = buildAndRunGpuTest(buildDir, ['--require-gpu', '--dir', scratchDir()]);
    assert.equal(report.ok, true, output);
    assert.equal(report.mode, 'cpu-vs-gpu');
    assert.equal(report.greedy?.image_changes_answer, true);
  });
});
