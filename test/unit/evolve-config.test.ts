// The evolve loop's device and memory settings (src/visplay/config.ts): gpuLayers -1 (every layer on
// the GPU on a CUDA build, trainer included) by default, 0 for the CPU; the trainers' micro-batch
// size and buffer release, passed to the policies; anything else checked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveConfig } from '../../src/visplay/config.js';

describe('evolve config: gpuLayers', () => {
  it('defaults to -1 (all layers, so the trainer runs where the rollouts do)', () => {
    assert.equal(resolveConfig({}).gpuLayers, -1);
  });
  it('takes 0 (everything on the CPU) and a layer count', () => {
    assert.equal(resolveConfig({ gpuLayers: 0 }).gpuLayers, 0);
    assert.equal(resolveConfig({ gpuLayers: 37 }).gpuLayers, 37);
  });
  it('refuses values below -1 and non-integers, naming the setting', () => {
    assert.throws(() => resolveConfig({ gpuLayers: -2 }), /gpuLayers/);
    assert.throws(() => resolveConfig({ gpuLayers: 1.5 }), /gpuLayers/);
  });
});

describe('evolve config: trainer memory', () => {
  it('defaults to the policy defaults: 2048-row micro-batches, buffers kept', () => {
    const c = resolveConfig({});
    assert.equal(c.microBatchTokens, 2048);
    assert.equal(c.releaseBuffers, false);
  });
  it('takes the 8 GB setting of docs/gpu.md (256 rows, buffers released)', () => {
    const c = resolveConfig({ microBatchTokens: 256, releaseBuffers: true });
    assert.equal(c.microBatchTokens, 256);
    assert.equal(c.releaseBuffers, true);
  });
  it('refuses a micro-batch below 16 rows or fractional, and a non-boolean release, naming the setting', () => {
    assert.throws(() => resolveConfig({ microBatchTokens: 8 }), /microBatchTokens/);
    assert.throws(() => resolveConfig({ microBatchTokens: 300.5 }), /microBatchTokens/);
    assert.throws(() => resolveConfig({ releaseBuffers: 'yes' as unknown as boolean }), /releaseBuffers/);
  });
});
