// The GRPO training engine against independent references: llama.cpp's own decode for logits
// (with and without LoRA), central finite differences for gradients, llama.cpp loading our saved
// adapter, bit-exact resume, and a learning sanity run.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import { groupAdvantages } from '../../src/advantages.js';
import { groupsFromRollout, type TrainGroup } from '../../src/policy.js';
import type { RolloutEngine } from '../../src/rollout.js';
import { quantizeModel } from '../../src/quantize.js';
import { makeTinyModel } from '../../src/tiny-model.js';
import { TOOLS_DIR, assertGradientsMatchFiniteDifferences, patternPng, randomizeB, scratchDir, tinyFiles } from './helpers.js';

const PROMPT = { messages: [{ role: 'user' as const, content: 'Describe the picture.' }] };

/** Largest |a[i] - b[i]| over rows [aRow0, aRow0 + rows) of a and [0, rows) of b, both [rows][vocab]. */
function maxRowDiff(a: Float32Array, aRow0: number, b: Float32Array, rows: number, vocab: number): number {
  let m = 0;
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < vocab; v++) m = Math.max(m, Math.abs(a[(aRow0 + r) * vocab + v]! - b[r * vocab + v]!));
  }
  return m;
}

describe('training engine (F32 tiny model)', () => {
  let model: Model;
  let engine: RolloutEngine;
  let image: Buffer;

  before(async () => {
    const f = await makeTinyModel({ seed: 1, embeddingType: 'f32' });
    model = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, threads: 2 });
    engine = await model.createRollout({ parallel: 2, kvCacheType: 'f32', contextSize: 1024 });
    image = await patternPng(96, 80, 3);
  });
  after(() => model?.dispose());

  it('(a) with LoRA zero, the graph\'s logits for a multimodal sequence equal llama_decode\'s (max |Δ| ≤ 1e-4)', async () => {
    const policy = await model.createPolicy({ rank: 4, seed: 1 });
    try {
      const req = { ...PROMPT, images: [image] };
      const tokens = [100, 2000, 35, 9000, 77];
      const V = model.info.vocabSize;
      const ours = await policy.logits(req, tokens);
      const ref = await engine.scoreLogits(req, tokens);
      const prompt = ours.length / V - tokens.length;
      assert.ok(prompt > 20, `the prompt includes the image's tokens (${prompt} rows)`);
      const d = maxRowDiff(ours, prompt - 1, ref, tokens.length, V);
      assert.ok(d <= 1e-4, `max |Δ logits| = ${d}`);
      // The comparison can see the image: another image moves the logits far beyond the tolerance.
      const other = await policy.logits({ ...PROMPT, images: [await patternPng(96, 80, 9)] }, tokens);
      assert.ok(maxRowDiff(other, prompt - 1, ref, tokens.length, V) > 1e-3);
    } finally {
      policy.dispose();
    }
  });

  it('(d) with a trained LoRA, the graph\'s logits equal llama.cpp\'s with our adapter loaded (max |Δ| ≤ 1e-4)', async () => {
    const policy = await model.createPolicy({ rank: 4, seed: 2, alpha: 8 });
    try {
      await randomizeB(policy, 7);
      await policy.attach(engine);
      const req = { ...PROMPT, images: [image] };
      const tokens = [11, 22, 33, 44];
      const V = model.info.vocabSize;
      const ours = await policy.logits(req, tokens);
      const ref = await engine.scoreLogits(req, tokens);
      const prompt = ours.length / V - tokens.length;
      assert.ok(maxRowDiff(ours, prompt - 1, ref, tokens.length, V) <= 1e-4);
      // ... and the adapter matters: without it llama.cpp's logits differ.
      await policy.detach(engine);
      const base = await engine.scoreLogits(req, tokens);
      assert.ok(maxRowDiff(ours, prompt - 1, base, tokens.length, V) > 1e-3);
    } finally {
      await policy.detach(engine);
      policy.dispose();
    }
  });

  it('frozen base weights in any type: Q8_0, Q4_K_M, Q4_0, BF16 logits equal llama_decode\'s and a step trains', { timeout: 300_000 }, async (t) => {
    const diffs: string[] = [];
    const f = await makeTinyModel({ seed: 1, embeddingType: 'f32' });
    const dir = scratchDir();
    const req = { ...PROMPT, images: [image] };
    const tokens = [100, 2000, 35, 9000, 77];
    const groups: TrainGroup[] = [{ ...req, samples: [{ tokens, advantage: 1 }, { tokens: [5, 6], advantage: -1 }] }];
    for (const type of ['q8_0', 'q4_k_m', 'q4_0', 'bf16'] as const) {
      const path = join(dir, `tiny-${type}.gguf`);
      await quantizeModel(f.modelPath, path, type, { threads: 2 });
      // repackWeights: false keeps Q4_0 in the plain layout the backward pass reads.
      const m = await Model.load({ model: path, mmproj: f.mmprojPath, threads: 2, repackWeights: false });
      try {
        const policy = await m.createPolicy({ rank: 4, seed: 1 });
        await randomizeB(policy, 3);
        const e = await m.createRollout({ parallel: 1, kvCacheType: 'f32', contextSize: 512 });
        await policy.attach(e);
        const V = m.info.vocabSize;
        const ours = await policy.logits(req, tokens);
        const ref = await e.scoreLogits(req, tokens);
        const d = maxRowDiff(ours, ours.length / V - tokens.length - 1, ref, tokens.length, V);
        diffs.push(`${type} ${d.toExponential(2)}`);
        // Quantized weights make ggml quantize the activations too (Q8_0/Q8_K blocks): a float
        // rounding difference of 1e-7 (llama.cpp sums attention over its padded KV cache, we over
        // the packed rows) can flip one activation's rounding and move logits by ~1e-3.
        const tolerance = type === 'bf16' ? 1e-4 : 1e-2;
        assert.ok(d <= tolerance, `${type}: max |Δ logits| = ${d}`);
        const before = policy.getTensor('blk.0.attn_q.weight.lora_a');
        const r = await policy.step(groups, { optimizer: { lr: 1e-2 } });
        assert.ok(r.applied && Number.isFinite(r.loss) && r.gradNorm > 0, `${type}: ${JSON.stringify(r)}`);
        assert.notDeepEqual(policy.getTensor('blk.0.attn_q.weight.lora_a'), before, `${type}: A was updated`);
      } finally {
        m.dispose();
      }
    }
    t.diagnostic(`max |Δ logits| against llama_decode: ${diffs.join(', ')}`);
  });

  describe('(b) gradients against central finite differences (relative error ≤ 1e-3)', () => {
    // Directional derivatives along each tensor's own gradient: the derivative is |g|, large
    // enough that float32 noise in the loss (≈1e-7) stays far below the tolerance. Each is tried
    // with two steps, 1e-2 and 3e-3 (truncation vs. rounding), and the better one counts.
    for (const { label, klCoef, clip } of [
      { label: 'clip inactive, no KL', klCoef: 0, clip: false },
      { label: 'clip active, no KL', klCoef: 0, clip: true },
      { label: 'clip active, with KL', klCoef: 0.3, clip: true },
      { label: 'clip inactive, with KL', klCoef: 0.3, clip: false },
    ]) {
      it(label, async () => {
        const policy = await model.createPolicy({ rank: 4, seed: 1, alpha: 8 });
        try {
          await randomizeB(policy, 12345);
          const req = { ...PROMPT, images: [image] };
          const tokens = [[100, 2000, 35, 9000, 77], [5, 6, 7], [900, 901]];
          const advantages = [1.5, -2, 0.7];
          const base = await policy.evaluate([{ ...req, samples: tokens.map((t) => ({ tokens: t, advantage: 1 })) }], { loss: { klCoef: 0 } });
          // Old log-probs: shifted by up to ±1.5 nats (ρ far outside [0.8, 1.3]: clipped) or by 0.01.
          const shifts = clip ? [[0.5, -0.5, 0.02, 1.2, -0.3], [-0.4, 0.4, 0], [1.5, -1.5]] : [[0.01, -0.01, 0.01, 0.01, -0.01], [0.01, 0.01, -0.01], [0.01, 0.01]];
          const groups: TrainGroup[] = [{
            ...req,
            samples: tokens.map((t, i) => ({ tokens: t, advantage: advantages[i]!, logprobs: base.logprobs[i]!.map((x, j) => Math.min(0, x - shifts[i]![j]!)) })),
          }];
          const loss = { klCoef };
          const ev = await policy.evaluate(groups, { gradients: true, loss });
          if (clip) assert.ok(ev.clipFraction > 0.2, `clip fraction ${ev.clipFraction}`);
          else assert.equal(ev.clipFraction, 0);
          if (klCoef > 0) assert.ok(ev.kl > 0);
          const names = policy.tensorNames();
          // Every module type of both blocks, A and B.
          const checked = names.filter((n) => n.startsWith('blk.1.') || n.includes('attn_q') || n.includes('ffn_down'));
          await assertGradientsMatchFiniteDifferences(policy, checked, ev.gradients!, async () => (await policy.evaluate(groups, { loss })).loss);
        } finally {
          policy.dispose();
        }
      });
    }
  });
});

describe('training engine (F16 tiny model)', () => {
  let model: Model;
  let image: Buffer;

  before(async () => {
    const f = await tinyFiles();
    model = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, threads: 2 });
    image = await patternPng(64, 64, 1);
  });
  after(() => model?.dispose());

  it('live LoRA: after each step the rollout engine samples with the updated weights, no files, no reload', async () => {
    const engine = await model.createRollout({ parallel: 4, contextSize: 1024 });
    const policy = await model.createPolicy({ rank: 4, seed: 3 });
    try {
      await policy.attach(engine);
      const req = { ...PROMPT, images: [image] };
      const before = await engine.generate([{ ...req, n: 4, maxTokens: 8, seed: 5 }]);
      // B = 0 at initialisation: the attached adapter changes nothing yet.
      const base = await model.createRollout({ parallel: 4, contextSize: 1024 });
      const plain = await base.generate([{ ...req, n: 4, maxTokens: 8, seed: 5 }]);
      base.dispose();
      assert.deepEqual(before.samples[0]!.map((s) => s.tokens), plain.samples[0]!.map((s) => s.tokens));
      const groups = groupsFromRollout([req], before.samples, [[1, -1, 0.5, -0.5]]);
      const step = await policy.step(groups, { optimizer: { lr: 5e-2 } });
      assert.equal(step.applied, true);
      // The engine's log-probs of the same tokens now equal the training graph's with the new LoRA.
      const tokens = before.samples[0]![0]!.tokens;
      const scored = await engine.score(req, tokens);
      const ev = await policy.evaluate([{ ...req, samples: [{ tokens, advantage: 0 }] }], { loss: { klCoef: 0 } });
      const drift = Math.max(...scored.map((x, i) => Math.abs(x - ev.logprobs[0]![i]!)));
      assert.ok(drift < 2e-3, `rollout vs training log-probs after the update: ${drift}`);
      const moved = Math.max(...scored.map((x, i) => Math.abs(x - before.samples[0]![0]!.logprobs[i]!)));
      assert.ok(moved > 1e-2, `the update moved the rollout's log-probs (${moved})`);
    } finally {
      policy.dispose();
      engine.dispose();
    }
  });

  it('sft: supervised steps on labeled answers lower their negative log-likelihood (the loss pre-training uses)', { timeout: 300_000 }, async () => {
    const policy = await model.createPolicy({ rank: 16, seed: 8, optimizer: { lr: 1e-2 }, loss: { kind: 'sft', klCoef: 0, aggregation: 'token-mean' } });
    try {
      const req = { ...PROMPT, images: [image] };
      const answer = model.tokenize('There are \\boxed{3} circles.');
      const groups: TrainGroup[] = [{ ...req, samples: [{ tokens: answer, advantage: 0 }] }];
      const first = await policy.evaluate(groups);
      // SFT's loss is the mean -logp of the tokens.
      const nll = -first.logprobs[0]!.reduce((a, b) => a + b, 0) / answer.length;
      assert.ok(Math.abs(first.loss - nll) < 1e-5 * nll, `${first.loss} vs ${nll}`);  // log-probs come back as float32
      for (let i = 0; i < 15; i++) await policy.step(groups);
      const last = await policy.evaluate(groups);
      // The tiny model's random output head over 151,936 tokens starts near uniform (NLL ≈ ln V =
      // 11.9) and, behind a final RMSNorm, cannot get far below it with LoRA on the blocks alone.
      assert.ok(last.loss < first.loss - 1, `NLL ${first.loss} -> ${last.loss}`);
    } finally {
      policy.dispose();
    }
  });

  it('save/load resumes exactly: the next step after a save and load equals the next step without it, bit for bit', async () => {
    const dir = scratchDir();
    const req = { ...PROMPT, images: [image] };
    const groups: TrainGroup[] = [{ ...req, samples: [{ tokens: [1, 2, 3, 4], advantage: 1 }, { tokens: [5, 6], advantage: -1 }] }];
    const opts = { rank: 4, seed: 9, optimizer: { lr: 1e-2 }, loss: { klCoef: 0.05 } };
    const a = await model.createPolicy(opts);
    await a.step(groups);
    await a.step(groups);
    await a.save(dir);
    assert.deepEqual(readdirSync(dir).sort(), ['adapter.gguf', 'optimizer.gguf'], 'no temporary file is left behind');
    await a.step(groups);
    const b = await model.loadPolicy(dir, { optimizer: { lr: 1e-2 }, loss: { klCoef: 0.05 } });
    assert.equal(b.info.step, 2);
    const r = await b.step(groups);
    assert.equal(r.step, 3);
    for (const name of a.tensorNames()) {
      assert.deepEqual(b.getTensor(name), a.getTensor(name), `${name} differs after resume`);
    }
    a.dispose();
    b.dispose();
  });

  it('releaseBuffers: freeing the graph buffers after every step changes nothing, bit for bit (micro-batches and head chunks reallocated)', async () => {
    const req = { ...PROMPT, images: [image] };
    const groups: TrainGroup[] = [{ ...req, samples: [{ tokens: [1, 2, 3, 4, 5, 6, 7], advantage: 1 }, { tokens: [5, 6, 9], advantage: -1 }] }];
    // 3 head chunks of 4 rows and several micro-batches per step, so every allocator is used more than once.
    const opts = { rank: 4, seed: 11, microBatchTokens: 16, headChunk: 4, optimizer: { lr: 1e-2 }, loss: { klCoef: 0.05 } };
    const kept = await model.createPolicy(opts);
    const released = await model.createPolicy({ ...opts, releaseBuffers: true });
    for (let i = 0; i < 3; ++i) {
      const a = await kept.step(groups);
      const b = await released.step(groups);
      assert.equal(b.loss, a.loss, `step ${i + 1}: loss`);
      assert.ok(a.microBatches > 1, `step ${i + 1}: ${a.microBatches} micro-batches`);
    }
    for (const name of kept.tensorNames()) assert.deepEqual(released.getTensor(name), kept.getTensor(name), `${name} differs`);
    await assert.rejects(model.createPolicy({ rank: 4, releaseBuffers: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG' });
    kept.dispose();
    released.dispose();
  });

  it('llama.cpp\'s own llama-mtmd-cli loads the saved adapter with --lora, and it changes its output', { timeout: 300_000 }, async (t) => {
    const cli = join(TOOLS_DIR, 'llama-mtmd-cli');
    if (!existsSync(cli)) {
      t.skip(`${cli} is not built (node scripts/build-native.mjs --tools)`);
      return;
    }
    const f = await tinyFiles();
    const dir = scratchDir();
    const policy = await model.createPolicy({ rank: 8, seed: 4 });
    await randomizeB(policy, 99, 2.0);
    await policy.save(dir);
    const engine = await model.createRollout({ parallel: 1, contextSize: 1024 });
    await policy.attach(engine);
    const imgPath = join(dir, 'image.png');
    (await import('node:fs')).writeFileSync(imgPath, image);
    const question = 'What is in the image?';
    const maxTokens = 12;
    // llama-mtmd-cli's single-turn prompt: the marker before the text, no system turn.
    const prompt = `<|im_start|>user\n${model.info.projector.marker}${question}<|im_end|>\n<|im_start|>assistant\n`;
    const ours = await engine.generate([{ prompt, images: [imgPath], n: 1, maxTokens, temperature: 0 }]);
    policy.dispose();
    engine.dispose();
    const run = (extra: string[]) => execFileSync(cli, ['-m', f.modelPath, '--mmproj', f.mmprojPath, '--image', imgPath, '-p', question,
      '-n', String(maxTokens), '--temp', '0', '-fa', 'off', '-t', '2', '--seed', '1', ...extra], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const withLora = run(['--lora', join(dir, 'adapter.gguf')]).replace(/^\n/, '');
    const without = run([]).replace(/^\n/, '');
    assert.notEqual(withLora.trim(), without.trim(), 'the adapter changes llama-mtmd-cli\'s greedy answer');
    // Greedy decoding with our adapter in llama.cpp's own CLI gives our engine's tokens.
    const text = ours.samples[0]![0]!.text;
    assert.ok(text.length > 0);
    assert.equal(withLora.slice(0, text.length), text);
  });

  it('(e) learning sanity: 30 GRPO steps rewarding a chosen token raise its probability; loss, KL and clip fraction stay finite', { timeout: 600_000 }, async (t) => {
    const engine = await model.createRollout({ parallel: 8, contextSize: 2048 });
    const policy = await model.createPolicy({ rank: 8, seed: 5, optimizer: { lr: 1e-2 }, loss: { klCoef: 0.01 } });
    try {
      await policy.attach(engine);
      const req = { ...PROMPT, images: [image] };
      // Probe responses, fixed for the whole test: the chosen token is the one the untrained model
      // samples most often among its top 20, so rewards vary within a group from the start.
      const probe = (await engine.generate([{ ...req, n: 16, maxTokens: 6, topK: 20, seed: 1 }])).samples[0]!;
      const counts = new Map<number, number>();
      for (const s of probe) for (const tok of s.tokens) counts.set(tok, (counts.get(tok) ?? 0) + 1);
      const chosen = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
      const V = model.info.vocabSize;
      // Mean probability of the chosen token at every position of the probe responses (softmax of
      // the training graph's logits, which equal the rollout engine's).
      const meanProb = async (): Promise<number> => {
        let sum = 0, n = 0;
        for (const s of probe.slice(0, 6)) {
          const logits = await policy.logits(req, s.tokens);
          const rows = logits.length / V;
          for (let r = rows - s.tokens.length - 1; r < rows - 1; r++) {
            const row = logits.subarray(r * V, (r + 1) * V);
            let m = -Infinity;
            for (const x of row) m = Math.max(m, x);
            let z = 0;
            for (const x of row) z += Math.exp(x - m);
            sum += Math.exp(row[chosen]! - m) / z;
            n++;
          }
        }
        return sum / n;
      };
      const before = await meanProb();
      for (let step = 0; step < 30; step++) {
        const r = await engine.generate([{ ...req, n: 8, maxTokens: 6, topK: 20, seed: 100 + step }]);
        // Reward: the share of the response's tokens that are the chosen one.
        const rewards = r.samples[0]!.map((s) => s.tokens.filter((tok) => tok === chosen).length / s.tokens.length);
        const advantages = Array.from(groupAdvantages(rewards, [rewards.length]));
        const res = await policy.step(groupsFromRollout([req], r.samples, [advantages]));
        for (const v of [res.loss, res.kl, res.clipFraction, res.gradNorm]) assert.ok(Number.isFinite(v), `step ${step}: ${JSON.stringify(res)}`);
      }
      const after = await meanProb();
      t.diagnostic(`p(chosen token ${chosen}) at the probe positions: ${before.toExponential(3)} -> ${after.toExponential(3)}`);
      assert.ok(after > 2 * before, `p(chosen): ${before} -> ${after}`);
    } finally {
      policy.dispose();
      engine.dispose();
    }
  });
});
