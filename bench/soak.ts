// Soak benchmark (not a test): rollouts and GRPO steps in one process for a long while, watching
// the resident set size for growth, the way an overnight `evolve` runs.
//
//   node --expose-gc --import tsx bench/soak.ts [--rollouts 1000] [--steps 100] [--images 16] [--image-size 224]
//                                   [--max-tokens 16] [--warmup 20] [--threads N] [--plot FILE.png] [--json]
//
// With --expose-gc every sample is taken after a full garbage collection, so the curve shows what
// is retained rather than when V8 happens to collect (without it, RSS saws up and down by the
// tens of MiB of JS garbage between major collections).
//
// One step: one request with an image from a pool of `images` distinct pictures (used in turn, as
// evolve goes through a folder), rollouts / steps samples of up to `max-tokens` tokens from the
// policy's live LoRA, rewards from the samples, group advantages, one GRPO optimizer step. RSS
// (process.memoryUsage().rss) is sampled after every step; its growth is measured from the end of
// the warm-up (by then every pool image has been decoded and cached, and every buffer has its
// working size) to the end of the run, both as the last sample against the first and as the
// least-squares slope over the steps after warm-up. The run passes when the growth is below 5%.
//
// Each engine and policy keeps an LRU cache of decoded images (src/images.ts: 256 entries or
// 512 MiB): with a pool larger than the warm-up covers, RSS grows while that cache fills, then
// stops; `--images 100` shows it.
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { groupAdvantages } from '../src/advantages.js';
import { loadBinding } from '../src/native.js';
import { groupsFromRollout } from '../src/policy.js';
import type { RolloutRequest } from '../src/rollout.js';
import { loadTinyModel } from '../src/tiny-model.js';
import { lineChart, rasterise } from '../src/visplay/report/plots.js';

const { values } = parseArgs({
  options: {
    rollouts: { type: 'string', default: '1000' }, steps: { type: 'string', default: '100' }, images: { type: 'string', default: '16' },
    'image-size': { type: 'string', default: '224' }, 'max-tokens': { type: 'string', default: '16' }, warmup: { type: 'string', default: '20' },
    threads: { type: 'string' }, plot: { type: 'string' }, json: { type: 'boolean', default: false },
  },
});
const steps = Number(values.steps);
const perStep = Math.max(2, Math.round(Number(values.rollouts) / steps));
const poolSize = Number(values.images);
const imageSize = Number(values['image-size']);
const maxTokens = Number(values['max-tokens']);
const warmup = Math.min(Number(values.warmup), steps - 1);
const threads = values.threads ? Number(values.threads) : availableParallelism();
const MiB = 1024 * 1024;

interface Sample {
  step: number;
  rollouts: number;
  rssMiB: number;
  heapMiB: number;
  externalMiB: number;
  seconds: number;
}

/** A distinct picture per index: shapes on a background, as PNG. */
function picture(i: number): Promise<Buffer> {
  const hue = (i * 47) % 360;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${imageSize}" height="${imageSize}">` +
    `<rect width="100%" height="100%" fill="hsl(${hue},40%,85%)"/>` +
    `<circle cx="${30 + ((i * 13) % (imageSize - 60))}" cy="${imageSize / 2}" r="${20 + (i % 5) * 6}" fill="hsl(${(hue + 180) % 360},70%,40%)"/>` +
    `<rect x="${imageSize / 3}" y="${10 + ((i * 7) % (imageSize / 2))}" width="${imageSize / 4}" height="${imageSize / 5}" fill="hsl(${(hue + 90) % 360},60%,50%)"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  const pool = await Promise.all(Array.from({ length: poolSize }, (_, i) => picture(i)));
  const model = await loadTinyModel({ threads });
  const engine = await model.createRollout({ parallel: Math.min(perStep, 16), contextSize: 4096, threads });
  const policy = await model.createPolicy({ rank: 8, alpha: 16, seed: 0, threads, optimizer: { lr: 1e-4 } });
  await policy.attach(engine);
  const started = performance.now();
  const samples: Sample[] = [];
  let rollouts = 0;
  const gc = (globalThis as { gc?: () => void }).gc;
  const record = (step: number) => {
    gc?.();
    const m = process.memoryUsage();
    samples.push({ step, rollouts, rssMiB: m.rss / MiB, heapMiB: m.heapUsed / MiB, externalMiB: (m.external + m.arrayBuffers) / MiB, seconds: (performance.now() - started) / 1000 });
  };
  record(0);
  for (let step = 1; step <= steps; step++) {
    const request: RolloutRequest = {
      messages: [{ role: 'user', content: 'Ask one question about this picture, then answer it.' }],
      images: [pool[(step - 1) % pool.length]!], n: perStep, maxTokens, temperature: 1, topP: 0.99, seed: step,
    };
    const { samples: out } = await engine.generate([request]);
    rollouts += out[0]!.length;
    // Any reward with spread will do: here, how close the sample's length is to half the budget.
    const rewards = out[0]!.map((s) => -Math.abs(s.tokens.length - maxTokens / 2) + (s.text.length % 3));
    const advantages = [Array.from(groupAdvantages(rewards, [rewards.length]))];
    const r = await policy.step(groupsFromRollout([request], out, advantages));
    if (!Number.isFinite(r.loss)) throw new Error(`step ${step}: loss ${r.loss}`);
    record(step);
    if (!values.json && step % 10 === 0) process.stderr.write(`step ${step}/${steps}: ${rollouts} rollouts, RSS ${samples.at(-1)!.rssMiB.toFixed(1)} MiB\n`);
  }
  const live = loadBinding().liveObjects();
  model.dispose();

  const after = samples.filter((s) => s.step >= warmup);
  const first = after[0]!;
  const last = after.at(-1)!;
  const growth = (last.rssMiB - first.rssMiB) / first.rssMiB;
  const perStepMiB = slope(after.map((s) => s.step), after.map((s) => s.rssMiB));
  const fitted = (perStepMiB * (last.step - first.step)) / first.rssMiB;
  const peak = Math.max(...after.map((s) => s.rssMiB));
  const pass = growth < 0.05 && fitted < 0.05;
  const result = {
    machine: `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores, ${threads} threads`,
    rollouts, steps, rolloutsPerStep: perStep, images: poolSize, imageSize, maxTokens, warmupSteps: warmup,
    seconds: last.seconds, rssAfterWarmupMiB: first.rssMiB, rssEndMiB: last.rssMiB, rssPeakMiB: peak,
    gcBeforeSamples: gc !== undefined, growth, fittedGrowth: fittedGrowthRound(fitted), slopeKiBPerStep: (perStepMiB * 1024), liveObjectsAtEnd: live, pass, samples,
  };
  if (values.plot) {
    const svg = lineChart({
      title: `RSS over ${steps} GRPO steps and ${rollouts} rollouts (tiny model)`,
      xLabel: 'optimizer step', yLabel: 'MiB', integerX: true, yFromZero: true,
      series: [
        { name: 'RSS', points: samples.map((s) => [s.step, s.rssMiB]) },
        { name: 'JS heap', points: samples.map((s) => [s.step, s.heapMiB]) },
        { name: 'external + array buffers', points: samples.map((s) => [s.step, s.externalMiB]) },
      ],
    });
    writeFileSync(values.plot, await rasterise(svg));
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const rows = samples.filter((s) => s.step % 10 === 0 || s.step === warmup || s.step === 1);
    const lines = [
      `soak: ${rollouts} rollouts and ${steps} GRPO steps in one process (${perStep} samples of <= ${maxTokens} tokens per step, ` +
        `${poolSize} images of ${imageSize}x${imageSize}), ${result.machine}, ${last.seconds.toFixed(0)} s, ` +
        `${gc ? 'samples after a full GC' : 'no GC before samples (run node with --expose-gc for that)'}`,
      '',
      ' step  rollouts   RSS MiB  heap MiB  external MiB  seconds',
      ...rows.map((s) => `${String(s.step).padStart(5)}  ${String(s.rollouts).padStart(8)}  ${s.rssMiB.toFixed(1).padStart(8)}  ${s.heapMiB.toFixed(1).padStart(8)}  ` +
        `${s.externalMiB.toFixed(1).padStart(12)}  ${s.seconds.toFixed(1).padStart(7)}${s.step === warmup ? '  <- end of warm-up' : ''}`),
      '',
      `RSS after warm-up (step ${first.step}) ${first.rssMiB.toFixed(1)} MiB, at the end ${last.rssMiB.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB`,
      `growth ${(100 * growth).toFixed(2)}% (end against warm-up), ${(100 * fitted).toFixed(2)}% by the fitted slope (${(perStepMiB * 1024).toFixed(1)} KiB per step): ` +
        `${pass ? 'PASS' : 'FAIL'} (limit 5%)`,
      `native objects alive at the end: ${JSON.stringify(live)}`,
      ...(values.plot ? [`plot: ${values.plot}`] : []),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (!pass) process.exitCode = 1;
}

function fittedGrowthRound(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

await main();
