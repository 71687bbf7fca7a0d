// An aligned projector for the world model (issue 7): the projector refitted so that each image row
// becomes the embedding of a word for what its cell shows (" red", ..., or " the" for background),
// by ridge regression on the labelled images' pixel truth, then folded into a copy of the mmproj
// with mergeProjector. It stands in for what a real VLM starts from and the world model lacks: an
// encoder whose features already line up with words (LLaVA's stage-1 alignment, with per-cell colour
// labels in place of captions). The world diagnostics (bench/world-diagnostics.ts, docs/world.md)
// measured that, with 16 rows per scene (ViT patches of 28), it lifts matching a colour word
// against the image from chance to 67.5 %.
//
// Shapes: a row x and a target t are [n_embd]; M [n_embd x n_embd] minimises
// sum_i w_i ||M x_i - t_i||^2 + lambda ||M||^2, written as the projector adapter A = I, B = M - I.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { VisplayError } from '../errors.js';
import type { Model } from '../model.js';
import { mergeProjector } from '../quantize.js';
import { BACKGROUND_RGB, COLOUR_RGB, COLOURS } from './generator.js';

export interface AlignedProjector {
  /** The aligned copy of the mmproj. */
  mmprojPath: string;
  images: number;
  /** On the last third of the images: how often the nearest target word to M x is the cell's own, over all cells and over object cells. */
  wordAccuracy: number;
  objectWordAccuracy: number;
}

/** Per pixel, the index of the nearest world colour (COLOURS.length for the background). */
export function nearestColour(r: number, g: number, b: number): number {
  let best: number = COLOURS.length;
  let bestD = (r - BACKGROUND_RGB[0]) ** 2 + (g - BACKGROUND_RGB[1]) ** 2 + (b - BACKGROUND_RGB[2]) ** 2;
  COLOURS.forEach((c, i) => {
    const q = COLOUR_RGB[c];
    const d = (r - q[0]) ** 2 + (g - q[1]) ** 2 + (b - q[2]) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

/** Pixel counts per colour class over the whole image, and the dominant class of each grid cell. */
export async function readTruth(path: string, grid: number): Promise<{ counts: number[]; cells: number[] }> {
  const { data, info } = await sharp(path).raw().toBuffer({ resolveWithObject: true });
  const counts = new Array<number>(COLOURS.length + 1).fill(0);
  const cellCounts = Array.from({ length: grid * grid }, () => new Array<number>(COLOURS.length + 1).fill(0));
  const cell = info.width / grid;
  for (let y = 0; y < info.height; y++) {
    for (let x = 0; x < info.width; x++) {
      const o = (y * info.width + x) * info.channels;
      const k = nearestColour(data[o]!, data[o + 1]!, data[o + 2]!);
      counts[k]!++;
      cellCounts[Math.min(grid - 1, Math.floor(y / cell)) * grid + Math.min(grid - 1, Math.floor(x / cell))]![k]!++;
    }
  }
  const cells = cellCounts.map((c) => {
    let best: number = COLOURS.length;
    for (let i = 0; i < COLOURS.length; i++) if (c[i]! > (best === COLOURS.length ? 0 : c[best]!)) best = i;
    return best !== COLOURS.length && c[best]! >= 0.15 * cell * cell ? best : COLOURS.length;
  });
  return { counts, cells };
}

/** Solves (A + lambda I) X = B for symmetric positive definite A [n x n], B [n x m] (Cholesky). */
export function ridgeSolve(A: Float64Array, B: Float64Array, n: number, m: number, lambda: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j]! + (i === j ? lambda : 0);
      for (let k = 0; k < j; k++) s -= L[i * n + k]! * L[j * n + k]!;
      L[i * n + j] = i === j ? Math.sqrt(s) : s / L[j * n + j]!;
    }
  }
  const X = new Float64Array(n * m);
  for (let c = 0; c < m; c++) {
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = B[i * m + c]!;
      for (let k = 0; k < i; k++) s -= L[i * n + k]! * y[k]!;
      y[i] = s / L[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = y[i]!;
      for (let k = i + 1; k < n; k++) s -= L[k * n + i]! * X[k * m + c]!;
      X[i * m + c] = s / L[i * n + i]!;
    }
  }
  return X;
}

/**
 * A projector fitted so that image rows become words: M minimises sum_w ||M x - t||^2 + lambda ||M||^2
 * over the probe images' rows x, with t the embedding of the cell's colour word (" red") or, for a
 * background cell, of " the" (object cells weighted 5x). M is written as a projector adapter
 * (A = I, B = M - I, rank n_embd) and folded into a copy of the mmproj. Returns its path and how
 * often the nearest of the 8 target words to M x is the cell's own, on the last third of the images.
 */
export async function alignProjector(model: Model, mmproj: string, images: string[], out: string, options: { threads?: number } = {}): Promise<AlignedProjector> {
  if (images.length < 3) throw new VisplayError('ERR_INVALID_ARG', 'alignProjector needs at least 3 images (fit on 2/3, scored on the rest)');
  const policy = await model.createPolicy({ rank: 1, threads: options.threads, projectorRank: model.info.embeddingSize });
  try {
    const E = model.info.embeddingSize;
    const wordRow = async (text: string) => {
      const inputs = await policy.promptInputs({ prompt: text, images: [] });
      if (inputs.tokens !== 1) throw new VisplayError('ERR_UNSUPPORTED_MODEL', `"${text}" is ${inputs.tokens} tokens in this vocabulary, not one`);
      return Float64Array.from(inputs.embeddings);
    };
    const targets = [...await Promise.all(COLOURS.map((c) => wordRow(` ${c}`))), await wordRow(' the')];
    const rows: Float32Array[] = [];
    const labels: number[] = [];
    const imageOf: number[] = [];
    for (const [k, path] of images.entries()) {
      const inputs = await policy.promptInputs({ prompt: model.info.projector!.marker, images: [path] });
      const n = inputs.tokens - 2;
      const { cells } = await readTruth(path, Math.round(Math.sqrt(n)));
      for (let r = 0; r < n; r++) {
        rows.push(inputs.embeddings.slice((r + 1) * E, (r + 2) * E));
        labels.push(cells[r]!);
        imageOf.push(k);
      }
    }
    const fitImages = Math.floor((2 * images.length) / 3);
    const A = new Float64Array(E * E);
    const B = new Float64Array(E * E);
    rows.forEach((x, i) => {
      if (imageOf[i]! >= fitImages) return;
      const w = labels[i]! < COLOURS.length ? 5 : 1;
      const t = targets[labels[i]!]!;
      for (let a = 0; a < E; a++) {
        const xa = w * x[a]!;
        for (let b = 0; b < E; b++) A[a * E + b]! += xa * x[b]!;
        for (let o = 0; o < E; o++) B[a * E + o]! += xa * t[o]!;
      }
    });
    const X = ridgeSolve(A, B, E, E, 1e-3);  // t^ = X^T x: M[o][j] = X[j][o]
    let right = 0, scored = 0, objRight = 0, objScored = 0;
    rows.forEach((x, i) => {
      if (imageOf[i]! < fitImages) return;
      const y = new Float64Array(E);
      for (let j = 0; j < E; j++) for (let o = 0; o < E; o++) y[o]! += X[j * E + o]! * x[j]!;
      let best = 0, bestD = Infinity;
      targets.forEach((t, c) => { const d = t.reduce((a, v, o) => a + (v - y[o]!) ** 2, 0); if (d < bestD) { bestD = d; best = c; } });
      scored++;
      if (best === labels[i]) right++;
      if (labels[i]! < COLOURS.length) { objScored++; if (best === labels[i]) objRight++; }
    });
    // projector.lora_a ne [E, E] (row k, column j at k*E + j) = I; lora_b ne [E, E] (row o, column k at o*E + k) = M - I.
    await policy.setTensor('projector.lora_a', Float32Array.from({ length: E * E }, (_, i) => (Math.floor(i / E) === i % E ? 1 : 0)));
    await policy.setTensor('projector.lora_b', Float32Array.from({ length: E * E }, (_, i) => {
      const o = Math.floor(i / E), k = i % E;
      return X[k * E + o]! - (o === k ? 1 : 0);
    }));
    mkdirSync(out, { recursive: true });
    await policy.save(join(out, 'projector-fit'));
    const path = join(out, 'mmproj-aligned.gguf');
    await mergeProjector(mmproj, join(out, 'projector-fit'), path);
    rmSync(join(out, 'projector-fit'), { recursive: true, force: true });
    return { mmprojPath: path, images: images.length, wordAccuracy: right / scored, objectWordAccuracy: objRight / Math.max(1, objScored) };
  } finally {
    policy.dispose();
  }
}

