// The world model's small vocabulary (src/world/vocabulary.ts, select_vocabulary in
// native/src/tiny_model.cpp): every world text tokenizes into the same token strings as with the
// whole Qwen2 vocabulary (llama.cpp's own BPE on both files is the reference), other text still
// round-trips through byte tokens, the chat template's special tokens stay single tokens, and the
// training engine pre-trains a model with the small head.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import { makeTinyModel, WORLD_MODEL_SHAPE, type TinyModelFiles } from '../../src/tiny-model.js';
import { writeWorld } from '../../src/world/index.js';
import { pretrain } from '../../src/world/pretrain.js';
import { worldVocabularyTexts } from '../../src/world/vocabulary.js';
import { rejectsWith, scratchDir } from './helpers.js';

describe('the world vocabulary', () => {
  const texts = worldVocabularyTexts();
  let dir: string;
  let files: TinyModelFiles;
  let small: Model;
  let full: Model;

  before(async () => {
    dir = scratchDir();
    files = await makeTinyModel({ shape: WORLD_MODEL_SHAPE, vocabularyTexts: texts, outDir: join(dir, 'small') });
    const whole = await makeTinyModel({ shape: WORLD_MODEL_SHAPE });
    small = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, repackWeights: false, threads: 2 });
    full = await Model.load({ model: whole.modelPath, mmproj: whole.mmprojPath, repackWeights: false, threads: 2 });
  });
  after(() => {
    small?.dispose();
    full?.dispose();
  });

  it('keeps a few hundred tokens, and the head and embedding have one row each', () => {
    assert.ok(small.info.vocabSize > 256 + 22 && small.info.vocabSize < 1000, `vocabulary of ${small.info.vocabSize}`);
    assert.equal(full.info.vocabSize, 151936);
    assert.ok(small.info.parameterCount < full.info.parameterCount - 2 * 128 * (151936 - 1000));
  });

  it('tokenizes every world text into the token strings of the whole Qwen2 vocabulary', () => {
    assert.ok(texts.length > 1000, `${texts.length} texts`);
    let tokens = 0;
    for (const text of texts) {
      const mine = small.tokenize(text, { special: false }).map((id) => small.detokenize([id]));
      const reference = full.tokenize(text, { special: false }).map((id) => full.detokenize([id]));
      assert.deepEqual(mine, reference, JSON.stringify(text));
      tokens += mine.length;
    }
    assert.ok(tokens > 20 * texts.length, `${tokens} tokens`);
  });

  it('keeps the special tokens whole, ends turns at <|im_end|>, and round-trips any other text', () => {
    const specials = ['<|im_start|>', '<|im_end|>', '<|vision_start|>', '<|image_pad|>', '<|vision_end|>', '<|endoftext|>'];
    const ids = specials.map((s) => small.tokenize(s, { special: true }));
    for (const [i, id] of ids.entries()) assert.equal(id.length, 1, specials[i]);
    assert.equal(new Set(ids.map((i) => i[0])).size, specials.length);
    assert.ok(small.info.eogTokens.includes(ids[1]![0]!), '<|im_end|> ends generation');
    for (const text of ['Which zebra juggles? ÄÖÜ ß 漢字 🙂', '\t\n  x\r\n', 'circle circles circled']) {
      assert.equal(small.detokenize(small.tokenize(text, { special: false })), text);
    }
    assert.ok(small.tokenize('zebra', { special: false }).length > 1, 'a word outside the world is spelled in smaller pieces');
  });

  it('pre-trains with the small head: 4 steps lower the loss', { timeout: 300_000 }, async () => {
    const world = join(dir, 'world');
    await writeWorld(world, { pretrain: 8, pool: 2, test: 5, seed: 7 });
    const summary = await pretrain(small, files, { world, out: join(dir, 'pretrain'), epochs: 1, itemsPerStep: 2, rank: 8, lr: 3e-3, threads: 2 });
    assert.ok(summary !== null);
    const log = readFileSync(join(dir, 'pretrain', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss: number });
    assert.equal(log.length, 4);
    assert.ok(log[3]!.loss < log[0]!.loss - 0.5, `loss ${log.map((l) => l.loss.toFixed(2)).join(' -> ')}`);
    const merged = await Model.load({ model: summary.modelPath, mmproj: summary.mmprojPath, repackWeights: false });
    try {
      assert.equal(merged.info.vocabSize, small.info.vocabSize);
    } finally {
      merged.dispose();
    }
  });

  it('refuses an empty or non-text vocabulary list', async () => {
    await rejectsWith(() => makeTinyModel({ vocabularyTexts: [] }), 'ERR_INVALID_ARG', /vocabularyTexts/);
    await rejectsWith(() => makeTinyModel({ vocabularyTexts: ['red', 7 as unknown as string] }), 'ERR_INVALID_ARG', /vocabularyTexts\[1\]/);
  });
});
