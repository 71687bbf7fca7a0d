// Pre-training the world model (src/world/pretrain.ts) on a tiny world: the loss falls, a run
// stopped at a checkpoint and resumed ends with byte-identical files, and the merged model gives
// the logits llama.cpp computes for the base model with the LoRA adapter live (llama.cpp's own
// LoRA path as the independent reference of our merge). Also mergeLora's refusals.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import { mergeLora } from '../../src/quantize.js';
import { makeTinyModel, WORLD_MODEL_SHAPE, type TinyModelFiles } from '../../src/tiny-model.js';
import { reasonerMessages } from '../../src/visplay/prompts.js';
import { writeWorld } from '../../src/world/index.js';
import { pretrain, type PretrainOptions, type PretrainSummary } from '../../src/world/pretrain.js';
import { WORLD_PROMPTS, reasonerTarget } from '../../src/world/prompts.js';
import { maxAbsDiff, scratchDir } from './helpers.js';

describe('world pre-training', () => {
  let files: TinyModelFiles;
  let model: Model;
  let world: string;
  let dir: string;
  let full: PretrainSummary;
  const settings = (out: string): PretrainOptions => ({ world, out, epochs: 1, itemsPerStep: 4, rank: 8, lr: 3e-3, checkpointEvery: 2, threads: 2 });

  before(async () => {
    dir = scratchDir();
    world = join(dir, 'world');
    await writeWorld(world, { pretrain: 24, pool: 2, test: 5, seed: 7 });
    files = await makeTinyModel({ shape: WORLD_MODEL_SHAPE });
    model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, repackWeights: false, threads: 2 });
  });
  after(() => model?.dispose());

  it('6 steps on 24 items lower the loss by more than 1 nat', { timeout: 300_000 }, async () => {
    const summary = await pretrain(model, files, settings(join(dir, 'a')));
    assert.ok(summary !== null);
    full = summary;
    assert.equal(full.settings.steps, 6);
    const log = readFileSync(join(dir, 'a', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });
    assert.deepEqual(log.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
    assert.ok(log.every((l) => Number.isFinite(l.loss)));
    // The first step's loss is the random model's (~16 nats: its head of std 0.25 is confidently wrong).
    assert.ok(full.firstLoss > 10, `first loss ${full.firstLoss}`);
    assert.ok(full.lastLoss < full.firstLoss - 1, `loss ${full.firstLoss} -> ${full.lastLoss}`);
    assert.equal(full.mergedWeights, 4 * 7, 'every adapted weight of the 4 blocks is merged');
  });

  it('a run stopped after a checkpoint resumes to byte-identical adapter and merged model', { timeout: 300_000 }, async () => {
    const out = join(dir, 'b');
    const stop = new AbortController();
    const first = await pretrain(model, files, { ...settings(out), signal: stop.signal, onStep: (p) => { if (p.step === 3) stop.abort(); } });
    assert.equal(first, null, 'stopped at the checkpoint after step 4');
    assert.equal((JSON.parse(readFileSync(join(out, 'state.json'), 'utf8')) as { step: number }).step, 4);
    const resumed = await pretrain(model, files, settings(out));
    assert.ok(resumed !== null);
    assert.equal(resumed.lastLoss, full.lastLoss);
    assert.ok(readFileSync(join(out, 'checkpoint', 'adapter.gguf')).equals(readFileSync(join(dir, 'a', 'checkpoint', 'adapter.gguf'))));
    assert.ok(readFileSync(join(out, 'model.gguf')).equals(readFileSync(join(dir, 'a', 'model.gguf'))));
    await assert.rejects(pretrain(model, files, { ...settings(out), lr: 1e-3 }), (e: Error & { code?: string }) =>
      e.code === 'ERR_CHECKPOINT' && /other settings or data/.test(e.message));
  });

  it('the merged model computes what llama.cpp computes for base + the live adapter (max |Δlogit| < 2e-3)', { timeout: 300_000 }, async () => {
    const request = {
      messages: reasonerMessages('default', 'What color is the star?\nA. red\nB. blue\nC. green\nD. yellow', 'multiple choice', WORLD_PROMPTS),
      images: [join(world, 'images', 'pretrain', '000001.png')],
    };
    const tokens = model.tokenize(reasonerTarget({ question: 'What color is the star?', options: ['red', 'blue', 'green', 'yellow'], answer: 'B', type: 'multiple choice' }));
    const policy = await model.loadPolicy(join(dir, 'a', 'checkpoint'));
    const engine = await model.createRollout({ parallel: 1, kvCacheType: 'f32' });
    const merged = await Model.load({ model: full.modelPath, mmproj: full.mmprojPath, threads: 2 });
    const mergedEngine = await merged.createRollout({ parallel: 1, kvCacheType: 'f32' });
    try {
      const before = await engine.scoreLogits(request, tokens);
      await engine.useLora(policy);
      const live = await engine.scoreLogits(request, tokens);
      const folded = await mergedEngine.scoreLogits(request, tokens);
      // F32 blocks; the delta is summed in double and rounded once when merged, while llama.cpp adds
      // scale * B(Ax) in F32 at run time: differences are float rounding, amplified by the head's
      // logits of magnitude ~30 (std 0.25 rows).
      const diff = maxAbsDiff(Array.from(live), Array.from(folded));
      assert.ok(diff < 2e-3, `max |merged - live LoRA| = ${diff}`);
      assert.ok(maxAbsDiff(Array.from(before), Array.from(live)) > 0.1, 'the adapter changes the logits (else the comparison proves nothing)');
    } finally {
      mergedEngine.dispose();
      merged.dispose();
      engine.dispose();
      policy.dispose();
    }
  });

  it('with a trainable projector, the merged pair computes what the trained policy computes (max |Δlogit| < 2e-3)', { timeout: 300_000 }, async () => {
    const out = join(dir, 'p');
    const summary = await pretrain(model, files, { ...settings(out), limit: 8, projectorRank: 8 });
    assert.ok(summary !== null);
    assert.equal(summary.settings.projectorRank, 8);
    assert.equal(summary.mergedProjectorTensors, 2, 'mm.2.weight and mm.2.bias');
    assert.ok(!readFileSync(summary.mmprojPath).equals(readFileSync(files.mmprojPath)), 'the mmproj changed');
    const request = {
      messages: reasonerMessages('default', 'What color is the star?\nA. red\nB. blue\nC. green\nD. yellow', 'multiple choice', WORLD_PROMPTS),
      images: [join(world, 'images', 'pretrain', '000001.png')],
    };
    const tokens = model.tokenize(reasonerTarget({ question: 'What color is the star?', options: ['red', 'blue', 'green', 'yellow'], answer: 'B', type: 'multiple choice' }));
    const policy = await model.loadPolicy(join(out, 'checkpoint'));
    const merged = await Model.load({ model: summary.modelPath, mmproj: summary.mmprojPath, threads: 2 });
    const mergedEngine = await merged.createRollout({ parallel: 1, kvCacheType: 'f32' });
    try {
      const ours = await policy.logits(request, tokens);
      const folded = await mergedEngine.scoreLogits(request, tokens);
      const V = model.info.vocabSize;
      const tail = Array.from(ours.subarray(ours.length - (tokens.length + 1) * V, ours.length - V));
      const diff = maxAbsDiff(tail, Array.from(folded));
      assert.ok(diff < 2e-3, `max |merged pair - trained policy| = ${diff}`);
    } finally {
      mergedEngine.dispose();
      merged.dispose();
      policy.dispose();
    }
  });

  it('mergeLora refuses a missing adapter, a non-adapter, and writing over its base', async () => {
    const out = join(dir, 'm.gguf');
    await assert.rejects(mergeLora(files.modelPath, join(dir, 'none'), out), (e: Error & { code?: string }) => e.code === 'ERR_FILE_NOT_FOUND');
    await assert.rejects(mergeLora(files.modelPath, files.modelPath, out), (e: Error & { code?: string }) =>
      e.code === 'ERR_CHECKPOINT' && /not a LoRA adapter/.test(e.message));
    await assert.rejects(mergeLora(files.modelPath, join(dir, 'a', 'checkpoint'), files.modelPath), (e: Error & { code?: string }) =>
      e.code === 'ERR_INVALID_ARG' && /must differ/.test(e.message));
    await assert.rejects(mergeLora(files.modelPath, join(dir, 'a', 'checkpoint'), join(dir, 'no-such-folder', 'm.gguf')), (e: Error & { code?: string }) =>
      e.code === 'ERR_OUTPUT');
  });
});
