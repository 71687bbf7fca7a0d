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
// Medians of `repeats` runs after one warm-up run, with min and max. The measurement lives in
// src/bench/rollouts.ts (shared with `visplay-native bench`, which also runs llama-server); this
// script keeps its own options and output.
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { findTool } from '../src/bench/processes.js';
import { batchedBench, oursText, type TextWorkload } from '../src/bench/rollouts.js';
import { firstLine, type Stat } from '../src/bench/stats.js';
import { Model } from '../src/model.js';
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

async function main(): Promise<void> {
  const files = values.model && values.mmproj ? { modelPath: values.model, mmprojPath: values.mmproj } : await makeTinyModel({ seed: 1 });
  const model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads });
  const contextSize = Math.max(...levels) * (pp + tg) + 256;
  const bin = await findTool('llama-batched-bench', false);
  const rows = [];
  for (const p of levels) {
    const w: TextWorkload = { parallel: p, pp, tg, contextSize, threads, repeats };
    const o = (await oursText(model, w)).generated;
    let b: Stat | undefined;
    let peerNote = '';
    if (typeof bin !== 'string') {
      peerNote = `llama-batched-bench unavailable (${bin.missing})`;
    } else {
      try {
        b = (await batchedBench(bin, files.modelPath, w)).generated;
      } catch (e) {
        peerNote = `llama-batched-bench unavailable (${firstLine(e)}); build it with \`node scripts/build-native.mjs --tools\``;
      }
    }
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
