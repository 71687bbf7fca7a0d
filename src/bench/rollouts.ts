// Rollout throughput of our batched engine, and of the vendored llama-batched-bench on the same
// model, same machine, same run.
//
// Two workloads per parallel level P:
//  - text: one prompt of `pp` tokens shared by P sequences, `tg` tokens each (batched-bench's
//    -pps). Generated tokens/s counts the decode steps only (batched-bench's S_TG): the first
//    token of each sequence comes from the prompt's logits, so tg - 1 steps of P tokens. Prompt
//    tokens/s is pp / prefill time (the shared prompt is evaluated once in both).
//  - image: GRPO's shape, as a trainer would send it: ceil(P / G) distinct images, each with its
//    own prompt and G = min(P, 8) samples, `tg` tokens each. A fresh set of images every round (RL
//    sees new images each round), so no cache carries over. Figures are end to end (image decode,
//    encode, prefill, generation): generated tokens / wall time, and prompt tokens as requested
//    (every sequence's prompt, image tokens included) / (encode + prefill time). This is the
//    workload llama-server gets over HTTP (server.ts).
// Our sampling is exact T = 1 over the full vocabulary and returns every token's log-prob.
import sharp from 'sharp';
import type { Model } from '../model.js';
import type { RolloutRequest } from '../rollout.js';
import { runTool } from './processes.js';
import { stat, type Stat } from './stats.js';

export interface TextWorkload {
  parallel: number;
  pp: number;
  tg: number;
  /** KV cells (ours and batched-bench's -c). */
  contextSize: number;
  threads: number;
  repeats: number;
  gpuLayers?: number;
}

export interface Throughput {
  /** Generated tokens/s. */
  generated: Stat;
  /** Prompt tokens/s. */
  prompt: Stat;
}

/** Called before each run: `run` 0 is the warm-up. */
export type OnRun = (run: number, of: number) => void;

/** KV cells for P sequences of a pp-token shared prompt and tg tokens each. */
export function textContextSize(parallel: number, pp: number, tg: number): number {
  return parallel * (pp + tg) + 256;
}

export async function oursText(model: Model, w: TextWorkload, onRun?: OnRun): Promise<Throughput> {
  const engine = await model.createRollout({ contextSize: w.contextSize, parallel: w.parallel, threads: w.threads, batchSize: 512, flashAttention: 'off' });
  try {
    // A text prompt of exactly `pp` tokens: the same token repeated (batched-bench uses fixed tokens too).
    const unit = model.tokenize(' the');
    const prompt = model.detokenize(Array.from({ length: w.pp }, () => unit[0]!));
    const generated: number[] = [];
    const promptRates: number[] = [];
    for (let r = 0; r <= w.repeats; r++) {
      onRun?.(r, w.repeats);
      const { stats } = await engine.generate([{ prompt, n: w.parallel, maxTokens: w.tg, temperature: 1, seed: r, ignoreEos: true }]);
      if (r === 0) continue;
      generated.push((stats.generatedTokens - w.parallel) / (stats.generateMs / 1000));
      promptRates.push(stats.promptTokens / (stats.prefillMs / 1000));
    }
    return { generated: stat(generated), prompt: stat(promptRates) };
  } finally {
    engine.dispose();
  }
}

export interface PeerThroughput extends Throughput {
  /** Largest peak RSS of its runs, MiB. */
  peakRssMiB: number | null;
}

/** llama-batched-bench, one process per run, the first (warm-up) dropped. */
export async function batchedBench(bin: string, modelPath: string, w: TextWorkload, onRun?: OnRun): Promise<PeerThroughput> {
  const generated: number[] = [];
  const prompt: number[] = [];
  let peak: number | null = null;
  for (let r = 0; r <= w.repeats; r++) {
    onRun?.(r, w.repeats);
    const args = ['-m', modelPath, '-c', String(w.contextSize), '-b', '512', '-ub', '512',
      '-npp', String(w.pp), '-ntg', String(w.tg), '-npl', String(w.parallel), '-pps', '-t', String(w.threads), '-fa', 'off',
      '--output-format', 'jsonl'];
    if (w.gpuLayers !== undefined) args.push('-ngl', String(w.gpuLayers));
    const run = await runTool(bin, args, { timeoutMs: 600_000 });
    if (run.peakRssMiB !== null) peak = Math.max(peak ?? 0, run.peakRssMiB);
    const line = run.stdout.trim().split('\n').filter((l) => l.startsWith('{') && l.includes('speed_tg')).at(-1);
    if (!line) throw new Error('llama-batched-bench printed no result line');
    const j = JSON.parse(line) as { speed_tg: number; speed_pp: number };
    if (r > 0) {
      generated.push(j.speed_tg);
      prompt.push(j.speed_pp);
    }
  }
  return { generated: stat(generated), prompt: stat(prompt), peakRssMiB: peak };
}

// ---- the image workload ----------------------------------------------------------------------------

export const IMAGE_PROMPT = 'Describe the picture in one sentence.';
/** Samples per image (GRPO's group size G). */
export const SAMPLES_PER_IMAGE = 8;

export interface ImageWorkload {
  parallel: number;
  tg: number;
  /** Side of the square test images, pixels. */
  imageSize: number;
  /** KV cells per sequence (ours: parallel * this; llama-server: -c parallel * this). */
  cellsPerSequence: number;
  threads: number;
  repeats: number;
}

/** One round's requests: `images` distinct PNGs, `samples` sequences each. */
export interface ImageRound {
  images: Buffer[];
  samples: number;
}

export function imageShape(parallel: number): { images: number; samples: number } {
  const samples = Math.min(parallel, SAMPLES_PER_IMAGE);
  return { images: Math.ceil(parallel / samples), samples };
}

/** Lossless test patterns, distinct for every (round, index). */
export async function makeImageRound(parallel: number, imageSize: number, round: number): Promise<ImageRound> {
  const { images, samples } = imageShape(parallel);
  const pngs = await Promise.all(Array.from({ length: images }, (_, i) => pattern(imageSize, 1 + round * 131 + i * 17 + parallel * 7919)));
  return { images: pngs, samples };
}

async function pattern(size: number, seed: number): Promise<Buffer> {
  const rgb = Buffer.alloc(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      rgb[i] = (x * 3 + seed * 37) & 255;
      rgb[i + 1] = (y * 5 + seed * 11) & 255;
      rgb[i + 2] = ((x ^ y) + seed * 53) & 255;
    }
  }
  return sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
}

export interface OursImageResult extends Throughput {
  /** Round wall time, seconds. */
  roundSeconds: Stat;
  /** KV cells of one prompt (text + image tokens). */
  promptTokens: number;
  /** Per timed round: the engine's image encodes and the round's distinct images. */
  encodes: Array<{ imageEncodes: number; distinctImages: number }>;
}

export async function oursImages(model: Model, w: ImageWorkload, onRun?: OnRun): Promise<OursImageResult> {
  const engine = await model.createRollout({ contextSize: w.parallel * w.cellsPerSequence, parallel: w.parallel, threads: w.threads, batchSize: 512, flashAttention: 'off' });
  try {
    const generated: number[] = [];
    const prompt: number[] = [];
    const seconds: number[] = [];
    const encodes: OursImageResult['encodes'] = [];
    let promptTokens = 0;
    for (let r = 0; r <= w.repeats; r++) {
      onRun?.(r, w.repeats);
      const round = await makeImageRound(w.parallel, w.imageSize, r);
      const requests: RolloutRequest[] = round.images.map((image, i) => ({
        messages: [{ role: 'user', content: IMAGE_PROMPT }], images: [image],
        n: round.samples, maxTokens: w.tg, temperature: 1, seed: r * 1000 + i, ignoreEos: true,
      }));
      const { stats } = await engine.generate(requests);
      if (r === 0) continue;
      // Every prompt has the same length (same text, same image size).
      promptTokens = stats.promptTokens / round.images.length;
      const requested = promptTokens * round.images.length * round.samples;
      generated.push(stats.generatedTokens / (stats.wallMs / 1000));
      prompt.push(requested / ((stats.encodeMs + stats.prefillMs) / 1000));
      seconds.push(stats.wallMs / 1000);
      encodes.push({ imageEncodes: stats.imageEncodes, distinctImages: round.images.length });
    }
    return { generated: stat(generated), prompt: stat(prompt), roundSeconds: stat(seconds), promptTokens, encodes };
  } finally {
    engine.dispose();
  }
}
