// The embedded tiny VLM and the Model wrapper: deterministic files, metadata, tokenizer.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Model } from '../../src/model.js';
import { loadBinding } from '../../src/native.js';
import { makeTinyModel } from '../../src/tiny-model.js';
import { loadTiny, scratchDir, tinyFiles } from './helpers.js';

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('embedded tiny model', () => {
  let model: Model;
  before(async () => { model = await loadTiny(); });
  after(() => model?.dispose());

  it('is written deterministically from the seed', async () => {
    const cached = await tinyFiles();
    const again = await makeTinyModel({ seed: 1, outDir: join(scratchDir(), 'seed1') });
    const other = await makeTinyModel({ seed: 2, outDir: join(scratchDir(), 'seed2') });
    assert.equal(again.created, true);
    assert.equal(sha(again.modelPath), sha(cached.modelPath));
    assert.equal(sha(again.mmprojPath), sha(cached.mmprojPath));
    assert.notEqual(sha(other.modelPath), sha(cached.modelPath));
    assert.notEqual(sha(other.mmprojPath), sha(cached.mmprojPath));
  });

  it('is found in the cache the second time', async () => {
    const f = await makeTinyModel({ seed: 1 });
    assert.equal(f.created, false);
  });

  it('is a Qwen2.5-VL-shaped qwen2vl model with a matching projector', () => {
    const info = model.info;
    assert.equal(info.architecture, 'qwen2vl');
    assert.equal(info.vocabSize, 151936);
    assert.equal(info.embeddingSize, 128);
    assert.equal(info.layerCount, 2);
    assert.equal(info.projector.type, 'qwen2.5vl_merger');
    assert.equal(info.projector.embeddingSize, info.embeddingSize);
    assert.equal(info.projector.patchSize, 14);
    assert.equal(info.projector.usesMRope, true);
    assert.equal(info.chatFamily, 'qwen2.5-vl');
    assert.ok(info.chatTemplate?.includes('<|vision_start|>'));
    assert.ok(info.eogTokens.includes(151645), 'im_end ends generation');
    assert.equal(info.addBos, false);
    if (!loadBinding().gpuInfo().cudaBuild) assert.equal(info.gpuWeightTensors, 0, 'a CPU build keeps every weight in host memory');
  });

  it('tokenizes the Qwen2.5-VL special tokens to their ids', () => {
    assert.deepEqual(model.tokenize('<|vision_start|><|image_pad|><|vision_end|>', { special: true }), [151652, 151655, 151653]);
    assert.deepEqual(model.tokenize('<|im_start|>', { special: true }), [151644]);
    const ids = model.tokenize('What is in the picture?');
    assert.ok(ids.length > 3 && ids.every((t) => t < 151643));
    assert.equal(model.detokenize(ids), 'What is in the picture?');
  });

  it('renders its chat template as Qwen2.5-VL does, one marker per image', () => {
    const prompt = model.renderChat([{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Hi' }] }]);
    assert.equal(prompt, '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<__media__>Hi<|im_end|>\n<|im_start|>assistant\n');
  });
});
