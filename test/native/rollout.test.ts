// The batched rollout engine: parity with llama.cpp's own CLI, batch consistency of log-probs,
// seeds, and image encoding counts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Model } from '../../src/model.js';
import type { RolloutEngine, RolloutRequest } from '../../src/rollout.js';
import { TOOLS_DIR, loadTiny, maxAbsDiff, patternPng, scratchDir, tinyFiles } from './helpers.js';

const LOGPROB_TOLERANCE = 1e-4;

describe('rollouts', () => {
  let model: Model;
  let engine: RolloutEngine;
  let imageA: Buffer;
  let imageB: Buffer;
  before(async () => {
    model = await loadTiny();
    engine = await model.createRollout({ contextSize: 4096, parallel: 4 });
    imageA = await patternPng(64, 48, 1);
    imageB = await patternPng(56, 56, 2);
  });
  after(() => model?.dispose());

  it('(a) greedy tokens equal the vendored llama-mtmd-cli output for the same image and prompt', async () => {
    const cli = join(TOOLS_DIR, 'llama-mtmd-cli');
    assert.ok(existsSync(cli), `${cli} is built by scripts/test.mjs`);
    const dir = scratchDir();
    const imagePath = join(dir, 'a.png');
    writeFileSync(imagePath, imageA);
    const f = await tinyFiles();
    const question = 'Describe the picture.';
    const maxTokens = 24;
    const stdout = execFileSync(cli, ['-m', f.modelPath, '--mmproj', f.mmprojPath, '--image', imagePath, '-p', question,
      '-n', String(maxTokens), '--temp', '0', '-t', '2', '--seed', '1', '-fa', 'off'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString('utf8');
    // llama-mtmd-cli's single-turn prompt: the marker before the text, no system turn.
    const prompt = `<|im_start|>user\n${model.info.projector.marker}${question}<|im_end|>\n<|im_start|>assistant\n`;
    const { samples } = await engine.generate([{ prompt, images: [imagePath], maxTokens, temperature: 0 }]);
    const ours = samples[0]![0]!;
    assert.equal(ours.tokens.length, maxTokens);
    assert.ok(ours.text.length > 0);
    // The CLI prints a newline before the answer and newlines after it.
    const answer = stdout.replace(/^\n/, '');
    assert.equal(answer.slice(0, ours.text.length), ours.text);
    assert.equal(answer.slice(ours.text.length).trim(), '', 'the CLI generated nothing beyond our tokens');
  });

  it('(a) the image changes the answer (the parity test is not blind to images)', async () => {
    const ask = (image: Buffer): RolloutRequest => ({ messages: [{ role: 'user', content: 'What is this?' }], images: [image], maxTokens: 8, temperature: 0 });
    const { samples } = await engine.generate([ask(imageA), ask(imageB)]);
    assert.notDeepEqual(samples[0]![0]!.tokens, samples[1]![0]!.tokens);
  });

  it(`(b) batched log-probs equal scoring each sample alone within ${LOGPROB_TOLERANCE}`, async () => {
    // 3 requests x 3 samples on 4 slots: samples start and finish at different steps (continuous batching).
    const requests: RolloutRequest[] = [
      { messages: [{ role: 'user', content: 'Count the shapes.' }], images: [imageA], n: 3, maxTokens: 20, seed: 11 },
      { messages: [{ role: 'user', content: 'Which colour dominates?' }], images: [imageB], n: 3, maxTokens: 12, seed: 12, topK: 40 },
      { messages: [{ role: 'user', content: 'Compare both.' }], images: [imageA, imageB], n: 3, maxTokens: 16, seed: 13, topP: 0.9 },
    ];
    const result = await engine.generate(requests);
    assert.ok(result.stats.maxLiveSequences <= 4);
    let compared = 0;
    for (const [r, request] of requests.entries()) {
      for (const sample of result.samples[r]!) {
        assert.equal(sample.logprobs.length, sample.tokens.length);
        assert.ok(sample.logprobs.every((lp) => lp <= 0 && Number.isFinite(lp)));
        const alone = await engine.score({ messages: request.messages, images: request.images }, sample.tokens);
        const diff = maxAbsDiff(alone, sample.logprobs);
        assert.ok(diff <= LOGPROB_TOLERANCE, `request ${r}: max |batched - alone| = ${diff}`);
        compared += sample.tokens.length;
      }
    }
    assert.ok(compared > 50);
  });

  it('(c) the same seed gives the same samples; samples of one prompt differ at T=1 and agree at T=0', async () => {
    const base: RolloutRequest = { messages: [{ role: 'user', content: 'Write a question.' }], images: [imageA], n: 4, maxTokens: 16, seed: 7 };
    const first = await engine.generate([base]);
    const second = await engine.generate([{ ...base }, { ...base, seed: 8 }]);
    assert.deepEqual(second.samples[0], first.samples[0], 'same seed, same samples (also when batched with others)');
    assert.notDeepEqual(second.samples[1], first.samples[0], 'another seed, other samples');
    const texts = new Set(first.samples[0]!.map((s) => s.tokens.join(',')));
    assert.equal(texts.size, 4, 'n samples from one prefix are distinct at temperature 1');
    const greedy = await engine.generate([{ ...base, temperature: 0 }]);
    const g = greedy.samples[0]!;
    assert.ok(g.every((s) => s.tokens.join(',') === g[0]!.tokens.join(',')), 'identical at temperature 0');
    const topK1 = await engine.generate([{ ...base, n: 1, topK: 1 }]);
    assert.deepEqual(topK1.samples[0]![0]!.tokens, g[0]!.tokens, 'top-k 1 is greedy');
  });

  it('(d) each distinct image is encoded exactly once per batch', async () => {
    const dir = scratchDir();
    const pathA = join(dir, 'a.png');
    writeFileSync(pathA, imageA);
    const result = await engine.generate([
      { messages: [{ role: 'user', content: 'One.' }], images: [pathA], n: 2, maxTokens: 4 },
      { messages: [{ role: 'user', content: 'Two.' }], images: [imageA], n: 2, maxTokens: 4 },  // same pixels as a Buffer
      { messages: [{ role: 'user', content: 'Three.' }], images: [imageB, imageA], n: 1, maxTokens: 4 },
      { messages: [{ role: 'user', content: 'Four.' }], images: [imageB], n: 3, maxTokens: 4 },
    ]);
    assert.equal(result.stats.distinctImages, 2);
    assert.equal(result.stats.imageEncodes, 2);
    const again = await engine.generate([{ messages: [{ role: 'user', content: 'Five.' }], images: [imageA], maxTokens: 2 }]);
    assert.equal(again.stats.imageEncodes, 1, 'a new batch encodes its images anew');
  });

  it('runs more samples than slots, reports progress, and stops at max tokens or end of turn', async () => {
    const seen: number[] = [];
    const result = await engine.generate([
      { messages: [{ role: 'user', content: 'Go.' }], images: [imageA], n: 9, maxTokens: 6 },
    ], { onProgress: (p) => seen.push(p.done) });
    const samples = result.samples[0]!;
    assert.equal(samples.length, 9);
    assert.ok(result.stats.maxLiveSequences <= 4);
    for (const s of samples) {
      assert.ok(s.finish === 'length' ? s.tokens.length === 6 : s.tokens.length <= 6);
    }
    assert.equal(seen.at(-1), 9);
    const eog = model.info.eogTokens;
    const stopped = await engine.generate([{ messages: [{ role: 'user', content: 'Go.' }], n: 4, maxTokens: 40, stopTokens: [198, 13, 11, 220] }]);
    for (const s of stopped.samples[0]!) {
      const last = s.tokens.at(-1)!;
      if (s.finish === 'stop') assert.ok([198, 13, 11, 220].includes(last) || eog.includes(last));
    }
  });
});
