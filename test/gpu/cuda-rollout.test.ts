// GPU tier: on a CUDA build with a device, rollouts on the GPU must match the CPU. Elsewhere every
// test here is skipped with the reason (CI and most development machines have no GPU).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { VisplayError } from '../../src/errors.js';
import { Model } from '../../src/model.js';
import { loadBinding } from '../../src/native.js';
import { maxAbsDiff, patternPng, tinyFiles } from '../native/helpers.js';

const gpu = loadBinding().gpuInfo();
const skip = !gpu.cudaBuild
  ? 'this addon was built without CUDA (build with VISPLAY_CUDA=1 on a CUDA machine)'
  : gpu.devices.length === 0 ? 'no CUDA device is visible' : false;
if (skip) console.log(`# gpu tier skipped: ${skip}`);

describe('CUDA rollouts', { skip }, () => {
  it('greedy tokens and log-probs on the GPU match the CPU (log-probs within 2e-2)', async () => {
    const f = await tinyFiles();
    const image = await patternPng(64, 48, 1);
    const run = async (gpuLayers: number) => {
      const model = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, gpuLayers });
      try {
        const engine = await model.createRollout({ parallel: 4 });
        const { samples } = await engine.generate([{ messages: [{ role: 'user', content: 'Describe.' }], images: [image], maxTokens: 16, temperature: 0 }]);
        return samples[0]![0]!;
      } finally {
        model.dispose();
      }
    };
    const cpu = await run(0);
    const cuda = await run(999);
    assert.deepEqual(cuda.tokens, cpu.tokens);
    assert.ok(maxAbsDiff(cuda.logprobs, cpu.logprobs) <= 2e-2);
  });

  it('the trainer runs where all the weights are; a model split between CPU and GPU is refused with ERR_GPU_WEIGHTS', async () => {
    const f = await tinyFiles();
    const model = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, gpuLayers: 999 });
    try {
      assert.ok(model.info.gpuWeightTensors > 0);
      (await model.createPolicy({ rank: 4 })).dispose();  // the GPU trainer (checked against the CPU by test/gpu/train-test.test.ts)
    } finally {
      model.dispose();
    }
    const split = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, gpuLayers: 1 });
    try {
      await assert.rejects(split.createPolicy({ rank: 4 }), (e: VisplayError) => e.code === 'ERR_GPU_WEIGHTS' && /gpuLayers: 0/.test(e.message));
    } finally {
      split.dispose();
    }
    const cpu = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, gpuLayers: 0 });
    try {
      assert.equal(cpu.info.gpuWeightTensors, 0);
      (await cpu.createPolicy({ rank: 4 })).dispose();
    } finally {
      cpu.dispose();
    }
  });
});
