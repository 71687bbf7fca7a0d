// Builds and runs the plain C++ GPU test executables (native/test/gpu_test.cpp, train_test.cpp) for
// the native and gpu tiers. Each prints one JSON object as its last line and exits 0 when every check
// passes.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/native.js';

export interface GpuTestReport {
  ok: boolean;
  mode?: 'cpu-vs-gpu' | 'cpu-vs-cpu';
  device?: string;
  error?: string;
  greedy?: { ok: boolean; identical_sequences: number; differing_sequences: number; worst_reference_logit_gap: number; image_changes_answer: boolean };
  score?: { ok: boolean; tokens: number; max_logprob_diff: number; max_logit_diff: number; tolerance: number; other_image_logit_diff: number; sensitive: boolean };
  image_encodes?: { ok: boolean; distinct_images: number; reference: number; subject: number };
}

/** Whether the CMake build in `dir` was configured with VISPLAY_CUDA=ON. */
export function isCudaBuild(dir: string): boolean {
  const cache = join(dir, 'CMakeCache.txt');
  return existsSync(cache) && /^VISPLAY_CUDA:BOOL=ON$/m.test(readFileSync(cache, 'utf8'));
}

/** One variant of visplay_train_test's trainer parity (native/test/train_test.cpp). */
export interface TrainParityVariant {
  variant: string;
  ok: boolean;
  subject_on_gpu: boolean;
  logprob_max_diff: number;
  grad_max_rel_err: number;
  update_max_rel_err: number;
  flipped_advantages_min_rel_diff: number;
  restore_bitwise_equal: boolean;
  clip_fraction: [number, number];
  step_applied: [boolean, boolean];
  tensors: number;
  tolerance: { logprob_abs: number; grad_rel: number; update_rel: number };
}

export interface TrainTestReport {
  ok: boolean;
  mode?: 'cpu-vs-gpu' | 'cpu-vs-cpu';
  error?: string;
  variants?: TrainParityVariant[];
}

/** Builds `target` in an already configured build folder (incremental) and runs it with `args`. */
export function buildAndRunExe<T extends { ok: boolean }>(buildDir: string, target: string, args: string[]): { report: T; output: string } {
  const build = spawnSync('cmake', ['--build', buildDir, '--target', target], { cwd: PACKAGE_ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`building ${target} failed:\n${build.stdout}\n${build.stderr}`);
  const run = spawnSync(join(buildDir, target), args, { cwd: PACKAGE_ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  const output = `${run.stdout}\n${run.stderr}`;
  const last = run.stdout.trim().split('\n').at(-1) ?? '';
  let report: T;
  try {
    report = JSON.parse(last) as T;
  } catch {
    throw new Error(`${target} printed no JSON report (exit ${run.status}):\n${output}`);
  }
  if ((run.status === 0) !== report.ok) throw new Error(`exit status ${run.status} disagrees with the report:\n${output}`);
  return { report, output };
}

/** Builds visplay_gpu_test in an already configured build folder (incremental) and runs it. */
export function buildAndRunGpuTest(buildDir: string, args: string[]): { report: GpuTestReport; output: string } {
  return buildAndRunExe<GpuTestReport>(buildDir, 'visplay_gpu_test', args);
}
