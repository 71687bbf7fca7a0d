// GRPO train-step throughput: our native step against the PyTorch reference
// (bench/train_step_reference.py, Debian's python3-torch on the CPU) on the same model, the same
// machine, in the same run.
//
//   node --import tsx bench/train-step.ts [--model M --mmproj P] [--group 8] [--response-len 64]
//                                         [--rank 8] [--repeats 5] [--threads N] [--python /usr/bin/python3] [--json]
//
// One step = G responses of L tokens after one image prompt: the reference forward (LoRA off) for
// the KL term, the policy forward, the GRPO loss, backward into the LoRA tensors, grad-norm clip
// and AdamW. Trained tokens/s = G * L / step time. Medians of `repeats` steps after one warm-up
// step, with min and max; peak RSS of each process. The PyTorch peer gets the same prompt length
// (text + image tokens, as our engine counts them) and the same number of threads.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { Model } from '../src/model.js';
import { PACKAGE_ROOT } from '../src/native.js';
import type { TrainGroup } from '../src/policy.js';
import { makeTinyModel } from '../src/tiny-model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, mmproj: { type: 'string' }, group: { type: 'string', default: '8' },
    'response-len': { type: 'string', default: '64' }, rank: { type: 'string', default: '8' }, repeats: { type: 'string', default: '5' },
    threads: { type: 'string' }, python: { type: 'string', default: '/usr/bin/python3' }, json: { type: 'boolean', default: false },
  },
});
const G = Number(values.group), L = Number(values['response-len']), rank = Number(values.rank), repeats = Number(values.repeats);
const threads = values.threads ? Number(values.threads) : availableParallelism();

interface Stat { median: number; min: number; max: number }
const stat = (xs: number[]): Stat => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
};

async function main(): Promise<void> {
  const files = values.model && values.mmproj ? { modelPath: values.model, mmprojPath: values.mmproj } : await makeTinyModel({ seed: 1 });
  const model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads });
  const policy = await model.createPolicy({ rank, alpha: 2 * rank, seed: 0, threads, loss: { klCoef: 0.01 }, optimizer: { lr: 1e-5 } });
  const image = await sharp({ create: { width: 224, height: 224, channels: 3, background: { r: 90, g: 140, b: 60 } } }).png().toBuffer();
  const prompt = { messages: [{ role: 'user' as const, content: 'How many shapes are in the picture? Answer with a number.' }], images: [image] };
  const promptTokens = (await policy.promptInputs(prompt)).tokens;
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
    const res = await policy.step(groups);
    if (!res.applied) throw new Error(`step ${r} skipped: ${res.skipReason}`);
    if (r > 0) times.push(res.seconds);
  }
  const ours = { step: stat(times), tokensPerSecond: (G * L) / stat(times).median, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
  policy.dispose();
  model.dispose();

  let peer: { step: Stat; tokensPerSecond: number; peakRssMiB: number; torch: string } | undefined;
  let peerNote = '';
  const script = join(PACKAGE_ROOT, 'bench', 'train_step_reference.py');
  if (!existsSync(values.python!)) {
    peerNote = `${values.python} not found`;
  } else {
    try {
      const out = execFileSync(values.python!, [script, files.modelPath, '--prompt-len', String(promptTokens), '--group', String(G), '--response-len', String(L),
        '--rank', String(rank), '--alpha', String(2 * rank), '--kl-coef', '0.01', '--threads', String(threads), '--repeats', String(repeats)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 24 });
      const j = JSON.parse(out);
      peer = {
        step: { median: j.step_s.median, min: j.step_s.min, max: j.step_s.max }, tokensPerSecond: j.trained_tokens_per_s,
        peakRssMiB: j.peak_rss_mib, torch: j.torch,
      };
    } catch (e) {
      const msg = (e as { stderr?: string }).stderr ?? (e as Error).message;
      peerNote = /No module named 'torch'/.test(msg) ? 'PyTorch is not installed (apt install python3-torch)' : `the PyTorch reference failed: ${msg.trim().split('\n').at(-1)}`;
    }
  }
  const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores, ${threads} threads`;
  const result = {
    machine, model: files.modelPath, group: G, responseLength: L, promptTokens, rank, repeats, ours,
    pytorch: peer ?? null, pytorchSkipped: peer ? undefined : peerNote, ratio: peer ? ours.tokensPerSecond / peer.tokensPerSecond : null,
  };
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  const f = (s: Stat) => `${(s.median * 1000).toFixed(0)} ms [${(s.min * 1000).toFixed(0)}–${(s.max * 1000).toFixed(0)}]`;
  console.log(`GRPO train step: G=${G} responses x ${L} tokens after a ${promptTokens}-token image prompt, LoRA rank ${rank} on all 7 modules, KL on`);
  console.log(`machine: ${machine}\n`);
  console.log('| engine | step time (median [min–max]) | trained tokens/s | peak RSS |');
  console.log('|---|---:|---:|---:|');
  console.log(`| visplay-native | ${f(ours.step)} | ${ours.tokensPerSecond.toFixed(0)} | ${ours.peakRssMiB.toFixed(0)} MiB |`);
  if (peer) console.log(`| PyTorch ${peer.torch} (reference) | ${f(peer.step)} | ${peer.tokensPerSecond.toFixed(0)} | ${peer.peakRssMiB.toFixed(0)} MiB |`);
  else console.log(`| PyTorch (reference) | skipped: ${peerNote} | | |`);
  if (result.ratio !== null) console.log(`\nratio (ours / PyTorch, tokens/s): ${result.ratio.toFixed(2)}`);
}

await main();
