// The evolve loop's device placement setting (src/visplay/config.ts): -1 (every layer on the GPU on a
// CUDA build, trainer included) by default, 0 for the CPU, anything else checked.
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
