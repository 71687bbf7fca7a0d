// The world experiment end to end at toy size (src/world/experiment.ts): world, pre-training, every
// arm's VisPlay run on the pool, held-out scores per iteration, the report; then a rerun finds
// everything done (no second evaluation), and a folder holding other settings is refused. The toy
// model learns nothing in 3 steps: this checks the pipeline, not the gain (bench/world-experiment.ts
// measures that).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { runWorldExperiment, type ExperimentEvent, type ExperimentOptions } from '../../src/world/experiment.js';
import { writeWorldReport } from '../../src/world/report.js';
import { scratchDir } from './helpers.js';

describe('world experiment', () => {
  it('runs every arm, scores each iteration in both modes, writes the report, and resumes to a no-op', { timeout: 900_000 }, async () => {
    const out = scratchDir();
    const options: ExperimentOptions = {
      out,
      pretrainCache: join(out, 'cache'),  // not the user's cache: this run must pre-train
      worldOptions: { pretrain: 12, pool: 6, test: 5, seed: 5 },
      pretrain: { epochs: 1, itemsPerStep: 4, rank: 4, checkpointEvery: 3 },
      seeds: [0],
      evolve: {
        iterations: 1, questionerSteps: 1, reasonerSteps: 1, groupSize: 2, votes: 2, labelVotes: 2, imagesPerStep: 2, candidateImages: 2,
        candidatesPerImage: 2, questionerMaxTokens: 24, reasonerMaxTokens: 16, parallel: 8, contextSize: 2048,
      },
      evalSamples: 2,
      threads: 2,
    };
    const events: ExperimentEvent[] = [];
    const summary = await runWorldExperiment({ ...options, onEvent: (e) => events.push(e) });
    assert.ok(summary !== null);
    assert.equal(summary.pretrained.summary.settings.steps, 3);
    assert.ok(existsSync(summary.pretrained.modelPath) && existsSync(summary.pretrained.mmprojPath));
    // Baseline once, then each arm's iteration 1, each in greedy and mean@2.
    const keys = summary.scores.map((s) => `${s.arm}/${s.seed}/${s.iteration}/${s.mode}`).sort();
    assert.deepEqual(keys, [
      'frozen-questioner/0/1/greedy', 'frozen-questioner/0/1/mean@2', 'pretrained/null/0/greedy', 'pretrained/null/0/mean@2',
      'shuffled-rewards/0/1/greedy', 'shuffled-rewards/0/1/mean@2', 'visplay/0/1/greedy', 'visplay/0/1/mean@2',
    ]);
    for (const s of summary.scores) {
      assert.equal(s.overall.total, s.mode === 'greedy' ? 5 : 10, `${s.arm} ${s.mode}`);
      assert.equal(Object.values(s.byFamily).reduce((a, f) => a + f.total, 0), s.overall.total);
      assert.ok(s.overall.accuracy >= 0 && s.overall.accuracy <= 1);
    }
    // The controls ran as controls: the frozen Questioner took no step, the shuffled run has its flag.
    const frozen = JSON.parse(readFileSync(join(out, 'runs', 'frozen-questioner-seed0', 'run.json'), 'utf8')) as { config: { questionerSteps: number } };
    assert.equal(frozen.config.questionerSteps, 0);
    const shuffled = JSON.parse(readFileSync(join(out, 'runs', 'shuffled-rewards-seed0', 'run.json'), 'utf8')) as { config: { shuffleRewards: boolean } };
    assert.equal(shuffled.config.shuffleRewards, true);
    assert.ok(summary.seconds.total >= summary.seconds.pretrain + summary.seconds.eval);
    assert.ok(events.some((e) => e.type === 'pretrain') && events.some((e) => e.type === 'evolve'));

    const report = await writeWorldReport(out);
    assert.ok(existsSync(report.html));
    const meta = await sharp(join(out, 'report', 'accuracy.png')).metadata();
    assert.equal(meta.format, 'png');

    // A rerun finds the pre-trained model, the runs and the scores: nothing is trained or scored again.
    const again: ExperimentEvent[] = [];
    const second = await runWorldExperiment({ ...options, onEvent: (e) => again.push(e) });
    assert.ok(second !== null);
    assert.equal(second.scores.length, summary.scores.length);
    assert.ok(!again.some((e) => e.type === 'pretrain' || e.type === 'evolve' || e.type === 'score'));

    await assert.rejects(runWorldExperiment({ ...options, evalSamples: 3 }), (e: Error & { code?: string }) =>
      e.code === 'ERR_CHECKPOINT' && /other settings/.test(e.message));
  });
});
