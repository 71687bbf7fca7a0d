// (c) An independent reference: test/reference/grpo_reference.py (PyTorch autograd in float64,
// weights read from the GGUF with the vendored gguf-py) computes the GRPO loss, the log-probs and
// the LoRA gradients from the same inputs our engine uses (its prompt embeddings and M-RoPE
// positions, the LoRA tensors, the responses); ours must agree within 1e-4 relative.
// Skips with a message where Debian's python3-torch is not installed.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Model } from '../../src/model.js';
import { PACKAGE_ROOT } from '../../src/native.js';
import type { LossOptions, Policy, TrainGroup } from '../../src/policy.js';
import { makeTinyModel } from '../../src/tiny-model.js';
import { patternPng, scratchDir } from './helpers.js';
import { readNpy, writeNpy } from './npy.js';

const SCRIPT = join(PACKAGE_ROOT, 'test', 'reference', 'grpo_reference.py');

function findTorchPython(): { python?: string; reason: string } {
  for (const python of [process.env.VISPLAY_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p)) {
    const r = spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
    if (r.status === 0) return { python, reason: '' };
  }
  return { reason: 'PyTorch is not installed (apt install python3-torch, or set VISPLAY_PYTHON); the reference comparison is skipped' };
}

const torch = findTorchPython();

/** Relative error of `ours` against `ref`: max |Δ| / max |ref|. */
function relErr(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  assert.equal(ours.length, ref.length);
  let d = 0, m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(ours[i]! - ref[i]!));
    m = Math.max(m, Math.abs(ref[i]!));
  }
  return d / Math.max(m, 1e-30);
}

describe('(c) the PyTorch reference agrees on loss, log-probs and LoRA gradients (1e-4 relative)', { skip: torch.python ? false : torch.reason }, () => {
  let model: Model;
  let policy: Policy;
  let modelPath: string;
  let image: Buffer;

  before(async () => {
    const f = await makeTinyModel({ seed: 1, embeddingType: 'f32' });
    modelPath = f.modelPath;
    model = await Model.load({ model: f.modelPath, mmproj: f.mmprojPath, threads: 2 });
    policy = await model.createPolicy({ rank: 4, alpha: 8, seed: 3 });
    // Non-zero B, so every A receives a gradient.
    let s = 77;
    for (const name of policy.tensorNames()) {
      if (!name.endsWith('lora_b')) continue;
      await policy.setTensor(name, policy.getTensor(name).map(() => {
        s = (s * 1103515245 + 12345) % 2147483648;
        return (s / 2147483648 - 0.5) * 0.2;
      }));
    }
    image = await patternPng(96, 80, 4);
  });
  after(() => model?.dispose());

  async function compare(loss: Required<Pick<LossOptions, 'klCoef' | 'aggregation'>>, clip: boolean): Promise<string> {
    const req = { messages: [{ role: 'user' as const, content: 'What shape is shown?' }], images: [image] };
    const tokens = [[100, 2000, 35, 9000, 77, 5], [5, 6, 7], [900, 901, 4000, 12]];
    const advantages = [1.2, -1.7, 0.4];
    const base = await policy.evaluate([{ ...req, samples: tokens.map((t) => ({ tokens: t, advantage: 1 })) }], { loss: { klCoef: 0 } });
    const shifts = [[0.5, -0.6, 0.02, 1.2, -0.3, 1.4], [-0.4, 0.5, 0], [1.5, -1.5, 0.1, -0.2]];
    const groups: TrainGroup[] = [{
      ...req,
      samples: tokens.map((t, i) => ({
        tokens: t, advantage: advantages[i]!,
        logprobs: clip ? base.logprobs[i]!.map((x, j) => Math.min(0, x - shifts[i]![j]!)) : undefined,
      })),
    }];
    const ours = await policy.evaluate(groups, { gradients: true, loss });
    if (clip) assert.ok(ours.clipFraction > 0.2);

    // The case, in the reference's format (test/reference/grpo_reference.py).
    const dir = scratchDir();
    const inputs = await policy.promptInputs(req);
    const nEmbd = inputs.embeddings.length / inputs.tokens;
    writeNpy(join(dir, 'seq.prompt.npy'), inputs.embeddings, [inputs.tokens, nEmbd]);
    writeNpy(join(dir, 'seq.pos.npy'), inputs.positions, [inputs.positionStreams, inputs.tokens]);
    mkdirSync(join(dir, 'lora'));
    const tensors: Record<string, { a: string; b: string }> = {};
    for (const name of policy.tensorNames()) {
      const [ne0, ne1] = policy.tensorShape(name) as [number, number];
      const file = `lora/${name}.npy`;
      // ggml ne [ne0, ne1] is numpy (ne1, ne0) in row-major order: A (rank, n_in), B (n_out, rank).
      writeNpy(join(dir, file), policy.getTensor(name), [ne1, ne0]);
      const base = name.replace(/\.lora_[ab]$/, '');
      tensors[base] ??= { a: '', b: '' };
      tensors[base]![name.endsWith('lora_a') ? 'a' : 'b'] = file;
    }
    const info = policy.info;
    const sequences = groups[0]!.samples.map((s) => ({
      prompt_embeddings: 'seq.prompt.npy', prompt_positions: 'seq.pos.npy', response_start_pos: inputs.nextPosition,
      response_tokens: Array.from(s.tokens), advantage: s.advantage, old_logprobs: s.logprobs ? Array.from(s.logprobs) : null,
    }));
    writeFileSync(join(dir, 'case.json'), JSON.stringify({
      model: modelPath, lora: { rank: info.rank, alpha: info.alpha, tensors },
      loss: { clip_low: 0.2, clip_high: 0.3, dual_clip: 3, kl_coef: loss.klCoef, aggregation: loss.aggregation }, sequences,
    }));
    execFileSync(torch.python!, [SCRIPT, dir, '--out', join(dir, 'ref'), '--dtype', 'float64', '--threads', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const ref = JSON.parse(readFileSync(join(dir, 'ref', 'result.json'), 'utf8'));

    assert.ok(Math.abs(ours.loss - ref.loss) <= 1e-4 * Math.max(Math.abs(ref.loss), 1e-3), `loss ${ours.loss} vs ${ref.loss}`);
    assert.ok(Math.abs(ours.kl - ref.kl) <= 1e-4 * Math.max(Math.abs(ref.kl), 1e-3), `kl ${ours.kl} vs ${ref.kl}`);
    assert.equal(ours.clipFraction, ref.clip_fraction);
    ours.logprobs.forEach((lp, i) => {
      const r: number[] = ref.logprobs[i];
      const d = Math.max(...lp.map((x, j) => Math.abs(x - r[j]!)));
      assert.ok(d <= 1e-4, `sequence ${i}: max |Δ logp| = ${d}`);
    });
    let worst = 0;
    for (const name of policy.tensorNames()) {
      const file = join(dir, 'ref', 'grad', `${name}.npy`);
      assert.ok(existsSync(file), `the reference wrote ${file}`);
      const e = relErr(ours.gradients![name]!, readNpy(file).data);
      worst = Math.max(worst, e);
      assert.ok(e <= 1e-4, `${name}: relative gradient error ${e}`);
    }
    assert.ok(worst > 0, 'float32 against float64 cannot agree to the last bit; an exact 0 means nothing was compared');
    return `loss ${ours.loss} vs ${ref.loss}; worst relative gradient error ${worst.toExponential(2)}`;
  }

  it('on-policy (ρ = 1), KL on, seq-mean-token-mean', { timeout: 300_000 }, async (t) => t.diagnostic(await compare({ klCoef: 0.01, aggregation: 'seq-mean-token-mean' }, false)));
  it('clipped and dual-clipped tokens, KL on, token-mean', { timeout: 300_000 }, async (t) => t.diagnostic(await compare({ klCoef: 0.3, aggregation: 'token-mean' }, true)));
  it('clipped tokens, no KL, seq-mean-token-mean', { timeout: 300_000 }, async (t) => t.diagnostic(await compare({ klCoef: 0, aggregation: 'seq-mean-token-mean' }, true)));
});
