// The aligned projector (src/world/align.ts): fitted on a small world's labelled images, its merged
// mmproj, encoded by mtmd (llama.cpp's own vision path), maps held-out object cells to their colour
// word as often as the fit says, and well above chance.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import { makeTinyModel, WORLD_MODEL_SHAPE, type TinyModelFiles } from '../../src/tiny-model.js';
import { alignProjector, readTruth } from '../../src/world/align.js';
import { COLOURS } from '../../src/world/generator.js';
import { writeWorld } from '../../src/world/index.js';
import { readLabelled } from '../../src/world/pretrain.js';
import { scratchDir } from './helpers.js';

describe('aligned projector', () => {
  let files: TinyModelFiles;
  let model: Model;
  let images: string[];
  let dir: string;

  before(async () => {
    dir = scratchDir();
    const world = join(dir, 'world');
    await writeWorld(world, { pretrain: 60, pool: 2, test: 5, seed: 3 });
    images = [...new Set(readLabelled(world, 'pretrain.jsonl').map((i) => i.image))];
    files = await makeTinyModel({ shape: { ...WORLD_MODEL_SHAPE, patchSize: 28 } });
    model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, repackWeights: false, threads: 2 });
  });
  after(() => model?.dispose());

  it('maps held-out object cells to their colour word, and llama.cpp\'s encoder with the merged mmproj agrees with the fit', { timeout: 300_000 }, async (t) => {
    const fit = await alignProjector(model, files.mmprojPath, images, join(dir, 'aligned'), { threads: 2 });
    t.diagnostic(`nearest word right: ${(100 * fit.wordAccuracy).toFixed(1)} % of cells, ${(100 * fit.objectWordAccuracy).toFixed(1)} % of object cells`);
    // 8 words (6 colours, " the"): chance for an object cell is 1/7 at best.
    assert.ok(fit.objectWordAccuracy > 0.3, `object cells ${fit.objectWordAccuracy}`);

    // Independently: encode the held-out images with the merged mmproj and find the nearest words again.
    const aligned = await Model.load({ model: files.modelPath, mmproj: fit.mmprojPath, threads: 2 });
    const policy = await aligned.createPolicy({ rank: 1 });
    try {
      const E = aligned.info.embeddingSize;
      const word = async (text: string) => (await policy.promptInputs({ prompt: text, images: [] })).embeddings;
      const targets = [...await Promise.all(COLOURS.map((c) => word(` ${c}`))), await word(' the')];
      let right = 0, scored = 0;
      for (const path of images.slice(Math.floor((2 * images.length) / 3))) {
        const inputs = await policy.promptInputs({ prompt: aligned.info.projector!.marker, images: [path] });
        const n = inputs.tokens - 2;
        assert.equal(n, 16, '16 image rows per 224-pixel scene with patches of 28');
        const { cells } = await readTruth(path, 4);
        for (let r = 0; r < n; r++) {
          if (cells[r]! >= COLOURS.length) continue;
          const row = inputs.embeddings.subarray((r + 1) * E, (r + 2) * E);
          let best = 0, bestD = Infinity;
          targets.forEach((tv, c) => { const d = tv.reduce((a, v, o) => a + (v - row[o]!) ** 2, 0); if (d < bestD) { bestD = d; best = c; } });
          scored++;
          if (best === cells[r]) right++;
        }
      }
      assert.ok(scored > 10);
      assert.ok(Math.abs(right / scored - fit.objectWordAccuracy) <= 0.02, `encoded ${right / scored} vs fit ${fit.objectWordAccuracy}`);
    } finally {
      policy.dispose();
      aligned.dispose();
    }
  });

  it('refuses fewer than 3 images', async () => {
    await assert.rejects(alignProjector(model, files.mmprojPath, images.slice(0, 2), join(dir, 'x')), (e: Error & { code?: string }) =>
      e.code === 'ERR_INVALID_ARG' && /at least 3 images/.test(e.message));
  });
});
