// GRPO train-step throughput: our native step against the PyTorch reference
// (bench/train_step_reference.py, e.g. Debian's python3-torch, on the CPU) on the same model, the
// same machine, in the same run.
//
// One step = G responses of L tokens after one image prompt: the reference forward (LoRA off) for
// the KL term, the policy forward, the GRPO loss, backward into the LoRA tensors, grad-norm clip
// and AdamW. Trained tokens/s = G * L / step time. Medians of `repeats` steps after one warm-up
// step, with min and max; peak RSS of each process (model loading included). The PyTorch peer gets
// the same prompt length (text + image tokens, as our engine counts them) and the same threads.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Model } from '../model.js';
import { PACKAGE_ROOT } from '../native.js';
import type { TrainGroup } from '../policy.js';
import { ownPeakRss, resetOwnPeakRss } from './memory.js';
import { runTool } from './processes.js';
import { firstLine, rateOf, stat, type Skipped, type Stat } from './stats.js';

export interface TrainStepOptions {
  modelPath: string;
  mmprojPath: string;
  /** Responses per prompt (G, default 8). */
  group?: number;
  /** Tokens per response (L, default 64). */
  responseLength?: number;
  /** LoRA rank (default 8; alpha = 2 * rank). */
  rank?: number;
  /** Timed steps after one warm-up step (default 5). */
  repeats?: number;
  threads: number;
  /** Python with torch (default $VISPLAY_PYTHON, else /usr/bin/python3). */
  python?: string;
  /** Called before each of our steps (0 = warm-up) and once before the PyTorch peer starts. */
  onProgress?: (what: 'ours' | 'pytorch', run: number, of: number) => void;
}

export interface TrainStepSide {
  /** Seconds per step. */
  step: Stat;
  /** Trained tokens/s (G * L / step time): median from the median step, min from the slowest. */
  tokensPerSecond: Stat;
  /** Peak RSS of the process while it loaded the model and trained, MiB. */
  peakRssMiB: number | null;
}

export interface TrainStepResult {
  group: number;
  responseLength: number;
  promptTokens: number;
  rank: number;
  repeats: number;
  threads: number;
  ours: TrainStepSide;
  pytorch: (TrainStepSide & { torch: string; blas: string }) | Skipped;
}

export function defaultPython(): string {
  return process.env.VISPLAY_PYTHON || '/usr/bin/python3';
}

export async function runTrainStep(o: TrainStepOptions): Promise<TrainStepResult> {
  const G = o.group ?? 8;
  const L = o.responseLength ?? 64;
  const rank = o.rank ?? 8;
  const repeats = o.repeats ?? 5;
  const threads = o.threads;

  // Our side first, alone in this process: its peak RSS covers loading and training only.
  resetOwnPeakRss();
  // Training reads the weights in place: no repacking (F16/F32 weights are never repacked anyway).
  const model = await Model.load({ model: o.modelPath, mmproj: o.mmprojPath, threads, repackWeights: false });
  let ours: TrainStepSide;
  let promptTokens: number;
  try {
    const policy = await model.createPolicy({ rank, alpha: 2 * rank, seed: 0, threads, loss: { klCoef: 0.01 }, optimizer: { lr: 1e-5 } });
    const image = await sharp({ create: { width: 224, height: 224, channels: 3, background: { r: 90, g: 140, b: 60 } } }).png().toBuffer();
    const prompt = { messages: [{ role: 'user' as const, content: 'How many shapes are in the picture? Answer with a number.' }], images: [image] };
    promptTokens = (await policy.promptInputs(prompt)).tokens;
    const vocab = model.info.vocabSize;
    let seed = 7;
    const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
    const groups: TrainGroup[] = [{
      ...prompt,
      samples: Array.from({ length: G }, (_, i) => ({
        tokens: Array.from({ length: L }, () => 1000 + Math.floor(rnd() * (vocab - 2000))), advantage: (i % 2 === 0 ? 1 : -1) * (0.5 + rnd()),
      })),
    }];
    const times: number[] = [];
    for (let r = 0; r <= repeats; r++) {
      o.onProgress?.('ours', r, repeats);
      const res = await policy.step(groups);
      if (!res.applied) throw new Error(`train step ${r} skipped: ${res.skipReason}`);
      if (r > 0) times.push(res.seconds);
    }
    const step = stat(times);
    ours = { step, tokensPerSecond: rateOf(G * L, step), peakRssMiB: ownPeakRss() };
    policy.dispose();
  } finally {
    model.dispose();
  }

  o.onProgress?.('pytorch', 0, repeats);
  const pytorch = await pytorchStep(o.python ?? defaultPython(), o.modelPath, { promptTokens, G, L, rank, threads, repeats });
  return { group: G, responseLength: L, promptTokens, rank, repeats, threads, ours, pytorch };
}

interface ReferenceOutput {
  step_s: { median: number; min: number; max: number };
  peak_rss_mib: number;
  torch: string;
  blas: string;
}

async function pytorchStep(python: string, modelPath: string,
  p: { promptTokens: number; G: number; L: number; rank: number; threads: number; repeats: number }): Promise<TrainStepSide & { torch: string; blas: string } | Skipped> {
  if (python.includes('/') && !existsSync(python)) return { skipped: `${python} not found (set VISPLAY_PYTHON to a Python with torch)` };
  const script = join(PACKAGE_ROOT, 'bench', 'train_step_reference.py');
  if (!existsSync(script)) return { skipped: `the PyTorch reference script ${script} is missing` };
  try {
    const run = await runTool(python, [script, modelPath, '--prompt-len', String(p.promptTokens), '--group', String(p.G),
      '--response-len', String(p.L), '--rank', String(p.rank), '--alpha', String(2 * p.rank), '--kl-coef', '0.01',
      '--threads', String(p.threads), '--repeats', String(p.repeats)], { timeoutMs: 1_800_000 });
    const j = JSON.parse(run.stdout) as ReferenceOutput;
    const step = { median: j.step_s.median, min: j.step_s.min, max: j.step_s.max, runs: p.repeats };
    return { step, tokensPerSecond: rateOf(p.G * p.L, step), peakRssMiB: j.peak_rss_mib ?? run.peakRssMiB, torch: j.torch, blas: j.blas };
  } catch (e) {
    const msg = (e as { stderr?: string }).stderr ?? (e as Error).message;
    if (/No module named 'torch'/.test(msg)) return { skipped: 'PyTorch is not installed (apt install python3-torch, or set VISPLAY_PYTHON)' };
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { skipped: `${python} not found (set VISPLAY_PYTHON to a Python with torch)` };
    return { skipped: `the PyTorch reference failed: ${firstLine(e)}` };
  }
}
