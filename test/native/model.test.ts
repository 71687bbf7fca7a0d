// The embedded tiny VLM and the Model wrapper: deterministic files, metadata, tokenizer.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Model } from '../../src/model.js';
import { loadBinding } from '../../src/native.js';
import { makeTinyModel } from '../../src/tiny-model.js';
import { readGguf } from '../../src/gguf-reader.js';
import { loadTiny, scratchDir, tinyFiles } from './helpers.js';

/** IEEE half to number (the head is stored F16). */
function halfToFloat(h: number): number {
  const e = (h >> 10) & 0x1f, m = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

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

  it('writes its blocks and output head at the init scales asked for (blockStd, outputStd)', async () => {
    const f = await makeTinyModel({ seed: 1, outDir: join(scratchDir(), 'scaled'), shape: { blockStd: 0.088, outputStd: 0.25 } });
    const file = await readGguf(f.modelPath);
    const sampleStd = (name: string, bytesPerValue: 2 | 4) => {
      const t = file.tensors.find((x) => x.name === name)!;
      const fd = openSync(f.modelPath, 'r');
      const buf = Buffer.alloc(Math.min(t.size, 64 * 1024));
      readSync(fd, buf, 0, buf.length, file.dataOffset + t.offset);
      closeSync(fd);
      const n = buf.length / bytesPerValue;
      let sum = 0, sq = 0;
      for (let i = 0; i < n; i++) {
        const v = bytesPerValue === 4 ? buf.readFloatLE(4 * i) : halfToFloat(buf.readUInt16LE(2 * i));
        sum += v; sq += v * v;
      }
      return Math.sqrt(sq / n - (sum / n) ** 2);
    };
    // 16,384 F32 values of one block matrix and 32,768 F16 values of the head: sd within 3 %.
    assert.ok(Math.abs(sampleStd('blk.0.attn_q.weight', 4) / 0.088 - 1) < 0.03, 'block matrices at std 0.088');
    assert.ok(Math.abs(sampleStd('blk.1.ffn_down.weight', 4) / 0.088 - 1) < 0.03, 'FFN matrices at std 0.088');
    assert.ok(Math.abs(sampleStd('blk.0.attn_q.bias', 4) / 0.02 - 1) < 0.2, 'biases stay at 0.02');
    assert.ok(Math.abs(sampleStd('output.weight', 2) / 0.25 - 1) < 0.03, 'output head at std 0.25');
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
