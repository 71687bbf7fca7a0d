// GPU tier, GRPO kernels: on a machine with a CUDA device and the CUDA toolkit, builds the
// standalone kernels project with --cuda (scripts/build-kernels.mjs, incremental) and runs
// visplay_kernels_test --require-cuda, which checks every CUDA kernel against its CPU reference
// (tolerances in native/kernels/kernels_test.cpp) and fails if the CUDA checks could not run.
// Elsewhere the test is skipped with the reason. The executable is plain C++ so the same check
// also runs on GPU machines without Node.js (`node scripts/build-kernels.mjs --cuda --test` there
// becomes `cmake -S native/kernels -B /tmp/kb -DVISPLAY_CUDA=ON && cmake --build /tmp/kb &&
// /tmp/kb/visplay_kernels_test --require-cuda`).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';

const BUILD_DIR = join(PACKAGE_ROOT, process.env.VISPLAY_KERNELS_BUILD_DIR ?? 'build-kernels');

function whyNot(): string | false {
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
  if (smi.error || smi.status !== 0) return 'no CUDA device is visible (nvidia-smi is missing or failed)';
  if (!/^GPU \d+:/m.test(smi.stdout)) return 'no CUDA device is visible (nvidia-smi -L lists none)';
  const nvcc = process.env.CUDACXX ?? 'nvcc';
  const hasNvcc = spawnSync(nvcc, ['--version'], { stdio: 'ignore' }).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
  if (!hasNvcc) return 'the CUDA toolkit (nvcc) is not installed, so the kernels cannot be built';
  return false;
}

const skip = whyNot();
if (skip) console.log(`# gpu kernels skipped: ${skip}`);

describe('CUDA GRPO kernels', { skip }, () => {
  it('visplay_kernels_test --require-cuda passes (advantages, AdamW, grad norm vs the CPU references)', () => {
    const build = spawnSync(process.execPath, [join(PACKAGE_ROOT, 'scripts', 'build-kernels.mjs'), '--cuda'], { cwd: PACKAGE_ROOT, encoding: 'utf8' });
    assert.equal(build.status, 0, `the kernels build failed:\n${build.stdout}\n${build.stderr}`);
    const run = spawnSync(join(BUILD_DIR, 'visplay_kernels_test'), ['--require-cuda'], { encoding: 'utf8' });
    const output = `${run.stdout}\n${run.stderr}`;
    assert.equal(run.status, 0, `visplay_kernels_test failed:\n${output}`);
    assert.match(run.stdout, /^cuda: \d+ checks, 0 failed$/m, output);
    assert.doesNotMatch(run.stdout, /SKIP cuda/, output);
  });
});
