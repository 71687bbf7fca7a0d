// GRPO train-step throughput: our native step against the PyTorch reference
// (bench/train_step_reference.py, Debian's python3-torch on the CPU) on the same model, the same
// machine, in the same run. The measurement lives in src/bench/train-step.ts (shared with
// `visplay-native bench`); this script keeps its own options and output.
//
//   node --import tsx bench/train-step.ts [--model M --mmproj P] [--group 8] [--response-len 64]
//                                         [--rank 8] [--repeats 5] [--threads N] [--python /usr/bin/python3] [--json]
//
// One step = G responses of L tokens after one image prompt: the reference forward (LoRA off) for
// the KL term, the policy forward, the GRPO loss, backward into the LoRA tensors, grad-norm clip
// and AdamW. Trained tokens/s = G * L / step time. Medians of `repeats` steps after one warm-up
// step, with min and max; peak RSS of each process. The PyTorch peer gets the same prompt length
// (text + image tokens, as our engine counts them) and the same number of threads.
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { isSkipped, type Stat } from '../src/bench/stats.js';
import { defaultPython, runTrainStep } from '../src/bench/train-step.js';
import { makeTinyModel } from '../src/tiny-model.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, mmproj: { type: 'string' }, group: { type: 'string', default: '8' },
    'response-len': { type: 'string', default: '64' }, rank: { type: 'string', default: '8' }, repeats: { type: 'string', default: '5' },
    threads: { type: 'string' }, python: { type: 'string', default: defaultPython() }, json: { type: 'boolean', default: false },
  },
});
const G = Number(values.group), L = Number(values['response-len']), rank = Number(values.rank), repeats = Number(values.repeats);
const threads = values.threads ? Number(values.threads) : availableParallelism();

async function main(): Promise<void> {
  const files = values.model && values.mmproj ? { modelPath: values.model, mmprojPath: values.mmproj } : await makeTinyModel({ seed: 1 });
  const r = await runTrainStep({ ...files, group: G, responseLength: L, rank, repeats, threads, python: values.python });
  const ours = { step: r.ours.step, tokensPerSecond: r.ours.tokensPerSecond.median, peakRssMiB: r.ours.peakRssMiB };
  const peer = isSkipped(r.pytorch) ? undefined : {
    step: r.pytorch.step, tokensPerSecond: r.pytorch.tokensPerSecond.median, peakRssMiB: r.pytorch.peakRssMiB, torch: r.pytorch.torch,
  };
  const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores, ${threads} threads`;
  const result = {
    machine, model: files.modelPath, group: G, responseLength: L, promptTokens: r.promptTokens, rank, repeats, ours,
    pytorch: peer ?? null, pytorchSkipped: isSkipped(r.pytorch) ? r.pytorch.skipped : undefined,
    ratio: peer ? ours.tokensPerSecond / peer.tokensPerSecond : null,
  };
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  const f = (s: Stat) => `${(s.median * 1000).toFixed(0)} ms [${(s.min * 1000).toFixed(0)}–${(s.max * 1000).toFixed(0)}]`;
  const mib = (v: number | null) => (v === null ? '?' : `${v.toFixed(0)} MiB`);
  console.log(`GRPO train step: G=${G} responses x ${L} tokens after a ${r.promptTokens}-token image prompt, LoRA rank ${rank} on all 7 modules, KL on`);
  console.log(`machine: ${machine}\n`);
  console.log('| engine | step time (median [min–max]) | trained tokens/s | peak RSS |');
  console.log('|---|---:|---:|---:|');
  console.log(`| visplay-native | ${f(ours.step)} | ${ours.tokensPerSecond.toFixed(0)} | ${mib(ours.peakRssMiB)} |`);
  if (peer) console.log(`| PyTorch ${peer.torch} (reference) | ${f(peer.step)} | ${peer.tokensPerSecond.toFixed(0)} | ${mib(peer.peakRssMiB)} |`);
  else console.log(`| PyTorch (reference) | skipped: ${result.pytorchSkipped} | | |`);
  if (result.ratio !== null) console.log(`\nratio (ours / PyTorch, tokens/s): ${result.ratio.toFixed(2)}`);
}

await main();
