// Bad input to the trainer: each case gets a clear, coded error (or, for a non-finite loss, a
// skipped and reported step), and the policy keeps working afterwards.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isVisplayError } from '../../src/errors.js';
import { Model } from '../../src/model.js';
import { loadBinding } from '../../src/native.js';
import { groupsFromRollout, type Policy, type TrainGroup } from '../../src/policy.js';
import { QWEN25VL_CHAT_TEMPLATE } from '../../src/chat.js';
import { quantizeModel } from '../../src/quantize.js';
import { TINY_MODEL_CONFIG, vocabularyPath } from '../../src/tiny-model.js';
import { loadTiny, scratchDir, tinyFiles } from './helpers.js';

const PROMPT = { messages: [{ role: 'user' as const, content: 'Say something.' }] };
const GROUPS: TrainGroup[] = [{ ...PROMPT, samples: [{ tokens: [1, 2, 3], advantage: 1 }, { tokens: [4, 5], advantage: -1 }] }];

async function rejects(p: Promise<unknown> | (() => unknown), code: string, message: RegExp): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(isVisplayError(e), `expected a VisplayError, got ${String(e)}`);
    assert.equal(e.code, code, `code of: ${e.message}`);
    assert.match(e.message, message);
    return;
  }
  assert.fail(`expected ${code}`);
}

describe('trainer bad input', () => {
  let model: Model;
  let policy: Policy;

  before(async () => {
    model = await loadTiny();
    policy = await model.createPolicy({ rank: 4, seed: 1 });
  });
  after(() => model?.dispose());

  // After every case the policy still trains.
  async function stillWorks(): Promise<void> {
    const r = await policy.evaluate(GROUPS, { loss: { klCoef: 0 } });
    assert.ok(Number.isFinite(r.loss));
  }

  it('rank <= 0', async () => {
    await rejects(model.createPolicy({ rank: 0 }), 'ERR_INVALID_ARG', /rank/);
    await rejects(model.createPolicy({ rank: -3 }), 'ERR_INVALID_ARG', /rank/);
    await stillWorks();
  });

  it('frozenMatmul other than bf16 or llama', async () => {
    await rejects(model.createPolicy({ frozenMatmul: 'f16' as never }), 'ERR_INVALID_ARG', /bf16, llama for frozenMatmul/);
    // both accepted values make a policy that trains (on the CPU they compute the same way)
    for (const frozenMatmul of ['bf16', 'llama'] as const) {
      const p = await model.createPolicy({ rank: 2, frozenMatmul });
      assert.ok(Number.isFinite((await p.evaluate(GROUPS, { loss: { klCoef: 0 } })).loss));
      p.dispose();
    }
  });

  it('a target module the model does not have', async () => {
    await rejects(model.createPolicy({ targets: ['attn_qkv' as never] }), 'ERR_INVALID_ARG', /targets\[0\].*attn_q/);
    await rejects(model.createPolicy({ targets: [] }), 'ERR_INVALID_ARG', /at least one module/);
  });

  it('an adapter made for another model', async () => {
    // A one-block variant of the tiny model: same vocabulary, other shapes.
    const dir = scratchDir();
    const other = { modelPath: join(dir, 'm.gguf'), mmprojPath: join(dir, 'p.gguf') };
    await loadBinding().makeTinyModel({ seed: 2, vocabPath: vocabularyPath(), chatTemplate: QWEN25VL_CHAT_TEMPLATE, ...TINY_MODEL_CONFIG, layerCount: 1, ...other } as never);
    const small = await Model.load({ model: other.modelPath, mmproj: other.mmprojPath, threads: 2 });
    const saved = join(dir, 'policy');
    const p = await small.createPolicy({ rank: 4 });
    await p.save(saved);
    small.dispose();
    await rejects(model.loadPolicy(saved), 'ERR_CHECKPOINT', /another model/);
    await rejects(model.loadPolicy(join(dir, 'missing')), 'ERR_FILE_NOT_FOUND', /not found/);
    writeFileSync(join(dir, 'bad.gguf'), 'not a gguf');
    await rejects(model.loadPolicy(dir), 'ERR_FILE_NOT_FOUND', /adapter\.gguf/);
    await stillWorks();
  });

  it('quantized weights in llama.cpp\'s repacked CPU layout: a clear error naming the fix', async () => {
    const f = await tinyFiles();
    const out = join(scratchDir(), 'q4_0.gguf');
    await quantizeModel(f.modelPath, out, 'q4_0', { threads: 2 });
    const m = await Model.load({ model: out, mmproj: f.mmprojPath, threads: 2 });
    try {
      // Whether llama.cpp repacks depends on the CPU's features (AVX2 and up here); where it did,
      // training must refuse with the option that avoids it.
      const repacked = await m.createPolicy({ rank: 2 }).then((p) => { p.dispose(); return false; }, (e) => {
        assert.ok(isVisplayError(e, 'ERR_UNSUPPORTED_MODEL'), String(e));
        assert.match(e.message, /CPU_REPACK.*repackWeights: false/);
        return true;
      });
      assert.equal(typeof repacked, 'boolean');
    } finally {
      m.dispose();
    }
    await rejects(quantizeModel(f.modelPath, out, 'q3_xs' as never), 'ERR_INVALID_ARG', /type/);
    await rejects(quantizeModel(join(scratchDir(), 'missing.gguf'), out, 'q8_0'), 'ERR_FILE_NOT_FOUND', /not found/);
  });

  it('a non-finite loss: the step is skipped, counted and reported, never applied', async () => {
    const p = await model.createPolicy({ rank: 4, seed: 2 });
    const name = 'blk.1.ffn_down.weight.lora_b';
    // Huge B: the residual stream overflows to inf, the logits to NaN.
    await p.setTensor(name, p.getTensor(name).map(() => 3e38));
    await p.setTensor('blk.1.ffn_down.weight.lora_a', p.getTensor('blk.1.ffn_down.weight.lora_a').map(() => 1e30));
    const before = p.tensorNames().map((n) => p.getTensor(n));
    const r = await p.step(GROUPS, { optimizer: { lr: 1e-2 } });
    assert.equal(r.applied, false);
    assert.match(r.skipReason ?? '', /not finite/);
    assert.equal(r.skippedSteps, 1);
    assert.equal(r.step, 0);
    p.tensorNames().forEach((n, i) => assert.deepEqual(p.getTensor(n), before[i], `${n} was changed by a skipped step`));
    p.dispose();
    await stillWorks();
  });

  it('a sequence over the context', async () => {
    const p = await model.createPolicy({ rank: 2, contextSize: 32 });
    await rejects(p.step([{ ...PROMPT, samples: [{ tokens: Array.from({ length: 40 }, (_, i) => i + 1), advantage: 1 }] }]),
      'ERR_PROMPT_TOO_LONG', /over the policy's context of 32/);
    p.dispose();
    await stillWorks();
  });

  it('advantages and sequences that disagree in length', async () => {
    const samples = [[{ tokens: [1, 2] }, { tokens: [3] }]];
    assert.throws(() => groupsFromRollout([PROMPT], samples, [[1, 2, 3]]), (e) => isVisplayError(e, 'ERR_INVALID_ARG') && /2 samples but 3 advantages/.test(e.message));
    assert.throws(() => groupsFromRollout([PROMPT, PROMPT], samples, [[1, 2]]), (e) => isVisplayError(e, 'ERR_INVALID_ARG') && /equal in number/.test(e.message));
    await rejects(policy.step([{ ...PROMPT, samples: [{ tokens: [1, 2, 3], logprobs: [-1, -2], advantage: 1 }] }]), 'ERR_INVALID_ARG', /2 log-probs for 3 tokens/);
    await stillWorks();
  });

  it('malformed samples: empty, out-of-vocabulary tokens, non-finite advantages, no groups', async () => {
    await rejects(policy.step([]), 'ERR_INVALID_ARG', /groups must not be empty/);
    await rejects(policy.step([{ ...PROMPT, samples: [] }]), 'ERR_INVALID_ARG', /samples must be a non-empty array/);
    await rejects(policy.step([{ ...PROMPT, samples: [{ tokens: [], advantage: 1 }] }]), 'ERR_INVALID_ARG', /must not be empty/);
    await rejects(policy.step([{ ...PROMPT, samples: [{ tokens: [10 ** 7], advantage: 1 }] }]), 'ERR_INVALID_ARG', /tokens\[0\]/);
    await rejects(policy.step([{ ...PROMPT, samples: [{ tokens: [1], advantage: Number.NaN }] }]), 'ERR_INVALID_ARG', /advantage/);
    await rejects(policy.step([{ ...PROMPT, samples: [{ tokens: [1], logprobs: [0.5], advantage: 1 }] }]), 'ERR_INVALID_ARG', /logprobs/);
    await stillWorks();
  });

  it('options out of range', async () => {
    await rejects(model.createPolicy({ alpha: -1 }), 'ERR_INVALID_ARG', /alpha/);
    await rejects(policy.step(GROUPS, { optimizer: { lr: -1 } }), 'ERR_INVALID_ARG', /optimizer\.lr/);
    await rejects(policy.step(GROUPS, { optimizer: { schedule: 'cosine', totalSteps: 0 } }), 'ERR_INVALID_ARG', /totalSteps/);
    await rejects(policy.step(GROUPS, { loss: { aggregation: 'sum' as never } }), 'ERR_INVALID_ARG', /aggregation/);
    await rejects(async () => policy.getTensor('nope'), 'ERR_INVALID_ARG', /no LoRA tensor named 'nope'/);
    await rejects(policy.setTensor('blk.0.attn_q.weight.lora_a', [1, 2]), 'ERR_INVALID_ARG', /holds \d+ values, not 2/);
    await stillWorks();
  });

  it('a disposed policy and a policy of a disposed model', async () => {
    const p = await model.createPolicy({ rank: 2 });
    p.dispose();
    p.dispose();
    await rejects(p.step(GROUPS), 'ERR_DISPOSED', /disposed/);
    const other = await loadTiny();
    const q = await other.createPolicy({ rank: 2 });
    other.dispose();
    assert.equal(q.disposed, true, 'disposing the model disposes its policies');
    await rejects(q.evaluate(GROUPS), 'ERR_DISPOSED', /disposed/);
    assert.ok(existsSync(vocabularyPath()));
  });
});
