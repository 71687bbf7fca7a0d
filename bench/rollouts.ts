// Rollout throughput: our batched engine against the vendored llama-batched-bench, same model, same
// machine, same run. Prompt PP tokens shared by all sequences, TG generated tokens per sequence,
// P parallel sequences, flash attention off in both (our default, for batch-invariant log-probs).
//
//   node --import tsx bench/rollouts.ts [--model M --mmproj P] [--parallel 1,8,32] [--pp 128] [--tg 64]
//                                       [--repeats 5] [--threads N] [--json]
//
// Our figure is generated tokens / time in generation steps (the same span as batched-bench's
// S_TG: decode of P tokens per step), and it includes what batched-bench does not do: sampling
// from the full 151,936-token distribution at T = 1 and the log-prob of every sampled token.
// Medians of `repeats` runs after one warm-up run, with min and max.
import { execFileSync } from 'node:child_process';
import { cpus, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Model } from '../src/model.js';
import { PACKAGE_ROOT } from '../src/native.js';
import { makeTinyModel } from '../src/tiny-model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, mmproj: { type: 'string' }, parallel: { type: 'string', default: '1,8,32' },
    pp: { type: 'string', default: '128' }, tg: { type: 'string', default: '64' }, repeats: { type: 'string', default: '5' },
    threads: { type: 'string' }, json: { type: 'boolean', default: false },
  },
});
const levels = values.parallel!.split(',').map(Number);
const pp = Number(values.pp), tg = Number(values.tg), repeats = Number(values.repeats);
const threads = values.threads ? Number(values.threads) : availableParallelism();

interface Stat { median: number; min: number; max: number }
const stat = (xs: number[]): Stat => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s.at(-1)! };
};

async function main(): Promise<void> {
  const files = values.model && values.mmproj ? { modelPath: values.model, mmprojPath: values.mmproj } : await makeTinyModel({ seed: 1 });
  const model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads });
  const contextSize = Math.max(...levels) * (pp + tg) + 256;
  // A text prompt of exactly `pp` tokens: the same token repeated (batched-bench uses fixed tokens too).
  const unit = model.tokenize(' the');
  const prompt = model.detokenize(Array.from({ length: pp }, () => unit[0]!));
  const rows = [];
  for (const p of levels) {
    const engine = await model.createRollout({ contextSize, parallel: p, threads, batchSize: 512 });
    const ours: number[] = [];
    for (let r = 0; r <= repeats; r++) {
      const { stats } = await engine.generate([{ prompt, n: p, maxTokens: tg, temperature: 1, seed: r, ignoreEos: true }]);
      // The first token of each sample comes from the prompt's logits: tg - 1 decode steps.
      if (r > 0) ours.push((stats.generatedTokens - p) / (stats.generateMs / 1000));
    }
    engine.dispose();
    const peer: number[] = [];
    const bin = join(PACKAGE_ROOT, 'build', 'bin', 'llama-batched-bench');
    let peerNote = '';
    try {
      for (let r = 0; r <= repeats; r++) {
        const out = execFileSync(bin, ['-m', files.modelPath, '-c', String(contextSize), '-b', '512', '-ub', '512',
          '-npp', String(pp), '-ntg', String(tg), '-npl', String(p), '-pps', '-t', String(threads), '-fa', 'off',
          '--output-format', 'jsonl'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
        const line = out.trim().split('\n').filter((l) => l.startsWith('{') && l.includes('speed_tg')).at(-1);
        if (r > 0 && line) peer.push(JSON.parse(line).speed_tg as number);
      }
    } catch (e) {
      peerNote = `llama-batched-bench unavailable (${(e as Error).message.split('\n')[0]}); build it with \`node scripts/build-native.mjs --tools\``;
    }
    const o = stat(ours);
    const b = peer.length ? stat(peer) : undefined;
    rows.push({ parallel: p, ours: o, peer: b, ratio: b ? o.median / b.median : undefined, peerNote });
  }
  model.dispose();
  const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), threads, node: process.version };
  const result = { benchmark: 'rollouts', model: files.modelPath, pp, tg, repeats, machine, rows };
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(`rollout throughput, generated tokens/s (median of ${repeats}, [min-max]); prompt ${pp} shared, ${tg} generated`);
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${threads} threads; model ${files.modelPath}`);
  console.log('| parallel | visplay-native (T=1 + log-probs) | llama-batched-bench (no sampling) | ratio |');
  console.log('|---:|---:|---:|---:|');
  const f = (s: Stat) => `${s.median.toFixed(0)} [${s.min.toFixed(0)}-${s.max.toFixed(0)}]`;
  for (const r of rows) {
    console.log(`| ${r.parallel} | ${f(r.ours)} | ${r.peer ? f(r.peer) : r.peerNote} | ${r.ratio ? r.ratio.toFixed(2) : '-'} |`);
  }
}

main().catch((e) => {
  console.error(`bench/rollouts: ${(e as Error).message}`);
  process.exit(1);
});
