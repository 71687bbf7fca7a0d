// The projector adapter (PolicyOptions.projectorRank): a trainable low-rank update of the image rows,
// x = e + B A e, that mergeProjector folds into the mmproj's last linear layer. Checked against
// independent references: central finite differences for its gradients, and llama.cpp's own
// inference (mtmd encoding with the merged mmproj, llama_decode with the merged model) for the merge.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import type { TrainGroup } from '../../src/policy.js';
import { mergeLora, mergeProjector } from '../../src/quantize.js';
import { makeTinyModel, type TinyModelFiles } from '../../src/tiny-model.js';
import { assertGradientsMatchFiniteDifferences, patternPng, randomizeB, scratchDir } from './helpers.js';

const PROMPT = { messages: [{ role: 'user' as const, content: 'Describe the picture.' }] };
const TOKENS = [100, 2000, 35, 9000, 77];

/** Largest |a[i] - b[i]| over the last `rows` rows of a and all rows of b, both [rows][vocab]. */
function maxTailDiff(a: Float32Array, b: Float32Array, rows: number, vocab: number): number {
  const a0 = a.length / vocab - rows - 1;  // a: prompt + tokens rows; its row a0 + r predicts token r
  let m = 0;
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vocab; v++) m = Math.max(m, Math.abs(a[(a0 + r) * vocab + v]! - b[r * vocab + v]!));
  }
  return m;
}

const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
const codeIs = (code: string, pattern?: RegExp) => (e: Error & { code?: string }) => e.code === code && (!pattern || pattern.test(e.message));

describe('projector adapter (F32 tiny model)', () => {
  let files: TinyModelFiles;
  let model: Model;
  let image: Buffer;
  let dir: string;

  before(async () => {
    files = await makeTinyModel({ seed: 1, embeddingType: 'f32' });
    model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads: 2 });
    image = await patternPng(96, 80, 3);
    dir = scratchDir();
  });
  after(() => model?.dispose());

  it('at B = 0 it changes nothing, and a text-only prompt gives it no gradient', async () => {
    const plain = await model.createPolicy({ rank: 4, seed: 1 });
    const withProjector = await model.createPolicy({ rank: 4, seed: 1, projectorRank: 8 });
    try {
      assert.deepEqual(withProjector.tensorNames().slice(-2), ['projector.lora_a', 'projector.lora_b']);
      assert.deepEqual(withProjector.tensorNames().slice(0, -2), plain.tensorNames(), 'the LoRA pairs are unchanged');
      assert.deepEqual(withProjector.getTensor('blk.0.attn_q.weight.lora_a'), plain.getTensor('blk.0.attn_q.weight.lora_a'));
      const req = { ...PROMPT, images: [image] };
      assert.equal(maxAbs(await withProjector.logits(req, TOKENS), await plain.logits(req, TOKENS)), 0);

      await randomizeB(withProjector, 5);
      const text = await withProjector.evaluate([{ ...PROMPT, samples: [{ tokens: TOKENS, advantage: 1 }] }], { gradients: true });
      assert.ok(text.gradients!['projector.lora_a']!.every((g) => g === 0));
      assert.ok(text.gradients!['projector.lora_b']!.every((g) => g === 0));
      const withImage = await withProjector.evaluate([{ ...req, samples: [{ tokens: TOKENS, advantage: 1 }] }], { gradients: true });
      assert.ok(withImage.gradients!['projector.lora_b']!.some((g) => g !== 0));
    } finally {
      plain.dispose();
      withProjector.dispose();
    }
  });

  it('its gradients match central finite differences (relative error ≤ 1e-3)', async () => {
    const policy = await model.createPolicy({ rank: 4, seed: 1, alpha: 8, projectorRank: 8 });
    try {
      await randomizeB(policy, 12345);
      const req = { ...PROMPT, images: [image] };
      const tokens = [TOKENS, [5, 6, 7]];
      const advantages = [1.5, -2];
      // Old log-probs 0.01 nats below the current ones (ρ ≈ 1.01, clip inactive): with ρ = 1
      // exactly the loss value would not depend on the weights at all.
      const base = await policy.evaluate([{ ...req, samples: tokens.map((t) => ({ tokens: t, advantage: 1 })) }], { loss: { klCoef: 0 } });
      const groups: TrainGroup[] = [{ ...req, samples: tokens.map((t, i) => ({ tokens: t, advantage: advantages[i]!, logprobs: base.logprobs[i]!.map((x) => x - 0.01) })) }];
      const loss = { klCoef: 0.3 };
      const ev = await policy.evaluate(groups, { gradients: true, loss });
      await assertGradientsMatchFiniteDifferences(policy, ['projector.lora_a', 'projector.lora_b'], ev.gradients!,
        async () => (await policy.evaluate(groups, { loss })).loss);
    } finally {
      policy.dispose();
    }
  });

  it('saves, resumes, and merges into the mmproj: llama.cpp on the merged pair gives the policy\'s logits (max |Δ| ≤ 1e-4)', { timeout: 120_000 }, async (t) => {
    const policy = await model.createPolicy({ rank: 4, seed: 3, alpha: 8, projectorRank: 8 });
    const saved = join(dir, 'policy');
    const req = { ...PROMPT, images: [image] };
    let ours: Float32Array;
    try {
      await randomizeB(policy, 7);
      await policy.step([{ ...req, samples: [{ tokens: TOKENS, advantage: 1 }] }], { optimizer: { lr: 1e-3 } });
      await policy.save(saved);
      assert.ok(existsSync(join(saved, 'projector.gguf')));
      ours = await policy.logits(req, TOKENS);
      const resumed = await model.loadPolicy(saved);
      try {
        assert.deepEqual(resumed.tensorNames(), policy.tensorNames());
        for (const name of ['projector.lora_a', 'projector.lora_b']) assert.deepEqual(resumed.getTensor(name), policy.getTensor(name));
        assert.equal(maxAbs(await resumed.logits(req, TOKENS), ours), 0);
      } finally {
        resumed.dispose();
      }
    } finally {
      policy.dispose();
    }

    const mergedModel = join(dir, 'merged.gguf');
    const mergedMmproj = join(dir, 'merged-mmproj.gguf');
    assert.ok((await mergeLora(files.modelPath, saved, mergedModel)) > 0);
    assert.equal(await mergeProjector(files.mmprojPath, saved, mergedMmproj), 2);
    const V = model.info.vocabSize;
    const score = async (mmproj: string) => {
      const m = await Model.load({ model: mergedModel, mmproj, threads: 2 });
      try {
        const engine = await m.createRollout({ parallel: 1, kvCacheType: 'f32', contextSize: 512 });
        return await engine.scoreLogits(req, TOKENS);
      } finally {
        m.dispose();
      }
    };
    const d = maxTailDiff(ours, await score(mergedMmproj), TOKENS.length, V);
    t.diagnostic(`max |Δ logits| policy vs llama.cpp on the merged pair: ${d.toExponential(2)}`);
    assert.ok(d <= 1e-4, `max |Δ logits| = ${d}`);
    // The projector part matters: with the base mmproj, llama.cpp's logits move far beyond that.
    assert.ok(maxTailDiff(ours, await score(files.mmprojPath), TOKENS.length, V) > 1e-3);
  });

  it('refuses rollouts before the merge, and bad merges with clear errors', async () => {
    const policy = await model.createPolicy({ rank: 2, projectorRank: 4 });
    const engine = await model.createRollout({ parallel: 1, contextSize: 512 });
    try {
      await assert.rejects(async () => policy.attach(engine), codeIs('ERR_INVALID_ARG', /projector adapter.*cannot drive rollouts/));
      await policy.save(join(dir, 'p2'));
    } finally {
      policy.dispose();
    }
    const out = join(dir, 'm.gguf');
    await assert.rejects(mergeProjector(files.mmprojPath, join(dir, 'none'), out), codeIs('ERR_FILE_NOT_FOUND'));
    await assert.rejects(mergeProjector(files.mmprojPath, join(dir, 'p2', 'adapter.gguf'), out), codeIs('ERR_CHECKPOINT', /not a projector adapter/));
    await assert.rejects(mergeProjector(files.mmprojPath, join(dir, 'p2'), files.mmprojPath), codeIs('ERR_INVALID_ARG', /must differ/));
    await assert.rejects(mergeProjector(files.modelPath, join(dir, 'p2'), out));
    await assert.rejects(model.createPolicy({ rank: 2, projectorRank: 100_000 }), codeIs('ERR_INVALID_ARG', /projectorRank/));
  });
});
