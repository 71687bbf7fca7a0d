// The C++ GPU test executable in its CPU mode (native/test/gpu_test.cpp): on a machine without a
// CUDA device it compares the engine on the CPU at 1 thread against 2 threads with the same checks
// (greedy tokens, scored log-probs and logits, one encode per distinct image), so the harness that
// runs on GPU machines without Node is exercised by every `npm test`.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';
import { buildAndRunGpuTest } from './gpu-exe.js';
import { scratchDir } from './helpers.js';

describe('visplay_gpu_test --cpu', () => {
  it('greedy tokens, log-probs and logits agree between two CPU thread counts; one encode per image', { timeout: 300_000 }, () => {
    const { report, output } = buildAndRunGpuTest(join(PACKAGE_ROOT, 'build'), ['--cpu', '--dir', scratchDir()]);
    assert.equal(report.ok, true, output);
    assert.equal(report.mode, 'cpu-vs-cpu');
    assert.equal(report.greedy?.identical_sequences, 6, 'two CPU thread counts must give the same greedy tokens');
    assert.equal(report.greedy?.image_changes_answer, true, 'the image must change the answer, or the check is blind to it');
    assert.ok(report.score!.tokens > 0);
    assert.ok(report.score!.max_logit_diff <= report.score!.tolerance, output);
    assert.ok(report.score!.other_image_logit_diff > 10 * report.score!.tolerance, 'the tolerance is small against a real fault');
    const enc = report.image_encodes!;
    assert.deepEqual([enc.distinct_images, enc.reference, enc.subject], [2, 2, 2]);
  });
});
