// Is an object's shape in the world model's image rows at all? (issue 7, docs/world.md)
//
// Every world family beyond colour needs the language model to bind a shape to a place, and every
// ladder step so far left those families at chance. This measures the precondition: a linear probe
// (ridge on centred rows plus a bias, fitted on 2/3 of the scenes, scored on the rest) of the shape
// of the object whose centre lies in a cell, from that cell's image row, beside the same probe of
// its colour and the majority share of each. Scenes come straight from the world generator (the
// objects' positions are known), rendered at 224 pixels, encoded by the world model's ViT (random
// weights) with its patch size (28 by default: 4 x 4 rows of 56-pixel cells; 14: 8 x 8 of 28).
// The same probe on the cell's pixels (a 14 x 14 map of how far each pixel block is from the
// background colour) says how much of the shape a linear reader could get before the ViT.
//
// --mlp adds a nonlinear reader (one hidden layer of 256 ReLU units) of the row and of the ink map:
// whether the shape is there at all, for a reader as nonlinear as one MLP block of the language model.
//
//   node --import tsx bench/world-shape-probe.ts [--scenes 600] [--patch-size 28] [--threads 2] [--mlp] [--json]
import { mkdtempSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Model } from '../src/model.js';
import { makeTinyModel, WORLD_MODEL_SHAPE } from '../src/tiny-model.js';
import { ridgeSolve } from '../src/world/align.js';
import { BACKGROUND_RGB, COLOURS, makeScene, renderScene, Rng, SHAPES } from '../src/world/generator.js';

const { values } = parseArgs({ options: {
  scenes: { type: 'string', default: '600' },
  'patch-size': { type: 'string', default: '28' },
  threads: { type: 'string', default: String(Math.min(2, cpus().length)) },
  json: { type: 'boolean', default: false },
  mlp: { type: 'boolean', default: false },
} });
const nScenes = Number(values.scenes);
const patchSize = Number(values['patch-size']);
const threads = Number(values.threads);

interface ProbeScore { classes: number; accuracy: number; majority: number; scored: number }

/** Ridge probe: features [n][E] (centred here, plus a bias), labels in [0, classes); fit on `fit`, score the rest. */
function linearProbe(rows: Float32Array[], labels: number[], fit: boolean[], classes: number, lambda = 1e-2): ProbeScore {
  const E = rows[0]!.length;
  const D = E + 1;
  const mean = new Float64Array(E);
  let nFit = 0;
  rows.forEach((r, i) => { if (fit[i]) { nFit++; for (let j = 0; j < E; j++) mean[j]! += r[j]!; } });
  for (let j = 0; j < E; j++) mean[j]! /= nFit;
  const feature = (r: Float32Array) => { const f = new Float64Array(D); for (let j = 0; j < E; j++) f[j] = r[j]! - mean[j]!; f[E] = 1; return f; };
  const A = new Float64Array(D * D);
  const B = new Float64Array(D * classes);
  rows.forEach((r, i) => {
    if (!fit[i]) return;
    const f = feature(r);
    for (let a = 0; a < D; a++) {
      for (let b = 0; b < D; b++) A[a * D + b]! += f[a]! * f[b]!;
      B[a * classes + labels[i]!]! += f[a]!;
    }
  });
  const W = ridgeSolve(A, B, D, classes, lambda);
  let right = 0, scored = 0;
  const counts = new Array<number>(classes).fill(0);
  rows.forEach((r, i) => {
    if (fit[i]) return;
    const f = feature(r);
    let best = 0, bestV = -Infinity;
    for (let c = 0; c < classes; c++) {
      let v = 0;
      for (let a = 0; a < D; a++) v += f[a]! * W[a * classes + c]!;
      if (v > bestV) { bestV = v; best = c; }
    }
    scored++;
    counts[labels[i]!]!++;
    if (best === labels[i]) right++;
  });
  return { classes, accuracy: right / scored, majority: Math.max(...counts) / scored, scored };
}

/**
 * A nonlinear reader: one hidden layer of `hidden` ReLU units, softmax cross-entropy, Adam (lr 1e-3),
 * minibatches of 64, on standardised features; fitted on `fit`, scored on the rest. Deterministic.
 */
function mlpProbe(rows: Float32Array[], labels: number[], fit: boolean[], classes: number, hidden = 256, epochs = 40): ProbeScore {
  const E = rows[0]!.length;
  const mean = new Float64Array(E), sd = new Float64Array(E);
  const train = rows.map((_, i) => i).filter((i) => fit[i]);
  for (const i of train) for (let j = 0; j < E; j++) mean[j]! += rows[i]![j]! / train.length;
  for (const i of train) for (let j = 0; j < E; j++) sd[j]! += (rows[i]![j]! - mean[j]!) ** 2 / train.length;
  for (let j = 0; j < E; j++) sd[j] = Math.sqrt(sd[j]!) + 1e-6;
  const x = (i: number) => Float64Array.from(rows[i]!, (v, j) => (v - mean[j]!) / sd[j]!);
  const rng = new Rng(7);
  const gauss = () => Math.sqrt(-2 * Math.log(rng.next() + 1e-12)) * Math.cos(2 * Math.PI * rng.next());
  const W1 = Float64Array.from({ length: hidden * E }, () => gauss() * Math.sqrt(2 / E)), b1 = new Float64Array(hidden);
  const W2 = Float64Array.from({ length: classes * hidden }, () => gauss() * Math.sqrt(1 / hidden)), b2 = new Float64Array(classes);
  const params = [W1, b1, W2, b2];
  const m = params.map((p) => new Float64Array(p.length)), v = params.map((p) => new Float64Array(p.length));
  let t = 0;
  const forward = (xi: Float64Array) => {
    const h = new Float64Array(hidden);
    for (let k = 0; k < hidden; k++) { let s = b1[k]!; for (let j = 0; j < E; j++) s += W1[k * E + j]! * xi[j]!; h[k] = s > 0 ? s : 0; }
    const z = new Float64Array(classes);
    for (let c = 0; c < classes; c++) { let s = b2[c]!; for (let k = 0; k < hidden; k++) s += W2[c * hidden + k]! * h[k]!; z[c] = s; }
    return { h, z };
  };
  const xs = new Map<number, Float64Array>();
  for (let epoch = 0; epoch < epochs; epoch++) {
    const order = [...train];
    for (let i = order.length - 1; i > 0; i--) { const j = Math.floor(rng.next() * (i + 1)); [order[i], order[j]] = [order[j]!, order[i]!]; }
    for (let b0 = 0; b0 < order.length; b0 += 64) {
      const grads = params.map((p) => new Float64Array(p.length));
      const batch = order.slice(b0, b0 + 64);
      for (const i of batch) {
        let xi = xs.get(i);
        if (!xi) { xi = x(i); xs.set(i, xi); }
        const { h, z } = forward(xi);
        const mz = Math.max(...z);
        const e = z.map((q) => Math.exp(q - mz));
        const se = e.reduce((a, q) => a + q, 0);
        const dz = e.map((q, c) => (q / se - (c === labels[i] ? 1 : 0)) / batch.length);
        for (let c = 0; c < classes; c++) {
          grads[3]![c]! += dz[c]!;
          for (let k = 0; k < hidden; k++) grads[2]![c * hidden + k]! += dz[c]! * h[k]!;
        }
        for (let k = 0; k < hidden; k++) {
          if (h[k]! <= 0) continue;
          let dh = 0;
          for (let c = 0; c < classes; c++) dh += dz[c]! * W2[c * hidden + k]!;
          grads[1]![k]! += dh;
          for (let j = 0; j < E; j++) grads[0]![k * E + j]! += dh * xi[j]!;
        }
      }
      t++;
      params.forEach((p, q) => {
        const g = grads[q]!, mq = m[q]!, vq = v[q]!;
        for (let i = 0; i < p.length; i++) {
          mq[i] = 0.9 * mq[i]! + 0.1 * g[i]!;
          vq[i] = 0.999 * vq[i]! + 0.001 * g[i]! * g[i]!;
          p[i]! -= (1e-3 * mq[i]! / (1 - 0.9 ** t)) / (Math.sqrt(vq[i]! / (1 - 0.999 ** t)) + 1e-8);
        }
      });
    }
  }
  let right = 0, scored = 0;
  const counts = new Array<number>(classes).fill(0);
  rows.forEach((_, i) => {
    if (fit[i]) return;
    const { z } = forward(x(i));
    const best = z.indexOf(Math.max(...z));
    scored++;
    counts[labels[i]!]!++;
    if (best === labels[i]) right++;
  });
  return { classes, accuracy: right / scored, majority: Math.max(...counts) / scored, scored };
}

const base = await makeTinyModel({ seed: 1, shape: { ...WORLD_MODEL_SHAPE, patchSize } });
const model = await Model.load({ model: base.modelPath, mmproj: base.mmprojPath, threads, gpuLayers: 0 });
const dir = mkdtempSync(join(tmpdir(), 'visplay-shape-probe-'));
const t0 = performance.now();
try {
  const policy = await model.createPolicy({ rank: 1, threads });
  const rows: Float32Array[] = [];
  const pixels: Float32Array[] = [];
  const shapes: number[] = [];
  const colours: number[] = [];
  const sceneOf: number[] = [];
  let grid = 0;
  const rng = new Rng(20261126);
  for (let s = 0; s < nScenes; s++) {
    const scene = makeScene(rng, { size: 224 });
    const path = join(dir, `s${s}.png`);
    const png = await renderScene(scene);
    writeFileSync(path, png);
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const inputs = await policy.promptInputs({ prompt: model.info.projector!.marker, images: [path] });
    const E = inputs.embeddings.length / inputs.tokens;
    const n = inputs.tokens - 2;  // <|vision_start|> image rows <|vision_end|>
    grid = Math.round(Math.sqrt(n));
    const cell = scene.size / grid;
    // The cells holding exactly one object's centre, labelled with that object.
    const centres = new Map<number, number[]>();
    scene.objects.forEach((o, k) => {
      const c = Math.min(grid - 1, Math.floor(o.y / cell)) * grid + Math.min(grid - 1, Math.floor(o.x / cell));
      centres.set(c, [...(centres.get(c) ?? []), k]);
    });
    for (const [c, objs] of centres) {
      if (objs.length !== 1) continue;
      const o = scene.objects[objs[0]!]!;
      rows.push(inputs.embeddings.slice((c + 1) * E, (c + 2) * E));
      // The cell's ink: per block of a 14 x 14 grid, the mean distance of its pixels from the background.
      const ink = new Float32Array(14 * 14);
      const cx = (c % grid) * cell, cy = Math.floor(c / grid) * cell;
      for (let y = 0; y < cell; y++) {
        for (let x = 0; x < cell; x++) {
          const o = ((cy + y) * info.width + cx + x) * info.channels;
          const d = Math.hypot(data[o]! - BACKGROUND_RGB[0], data[o + 1]! - BACKGROUND_RGB[1], data[o + 2]! - BACKGROUND_RGB[2]) / 416;
          ink[Math.floor((y * 14) / cell) * 14 + Math.floor((x * 14) / cell)]! += d / ((cell / 14) * (cell / 14));
        }
      }
      pixels.push(ink);
      shapes.push(SHAPES.indexOf(o.shape));
      colours.push(COLOURS.indexOf(o.colour));
      sceneOf.push(s);
    }
    if (!values.json && (s + 1) % 100 === 0) process.stderr.write(`  ${s + 1}/${nScenes} scenes, ${rows.length} object cells\n`);
  }
  policy.dispose();
  const fit = sceneOf.map((s) => s < Math.floor((2 * nScenes) / 3));
  const shape = linearProbe(rows, shapes, fit, SHAPES.length);
  const colour = linearProbe(rows, colours, fit, COLOURS.length);
  const pixelShape = linearProbe(pixels, shapes, fit, SHAPES.length);
  const mlpShape = values.mlp ? mlpProbe(rows, shapes, fit, SHAPES.length) : undefined;
  const mlpPixelShape = values.mlp ? mlpProbe(pixels, shapes, fit, SHAPES.length) : undefined;
  const seconds = (performance.now() - t0) / 1000;
  const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${cpus().length} cores, ${threads} threads`;
  const result = { machine, scenes: nScenes, patchSize, rowsPerImage: grid * grid, objectCells: rows.length, shape, colour, pixelShape, mlpShape, mlpPixelShape, seconds };
  if (values.json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    console.log(`machine: ${machine}; world model, patch ${patchSize} (${grid * grid} rows per 224-px scene); ${nScenes} scenes, ${rows.length} cells with one object's centre`);
    const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
    console.log(`linear probe, held-out third (${shape.scored} cells): shape ${pct(shape.accuracy)} (majority ${pct(shape.majority)}, ${SHAPES.length} classes); ` +
      `colour ${pct(colour.accuracy)} (majority ${pct(colour.majority)}, ${COLOURS.length} classes); ` +
      `shape from the cell's 14 x 14 ink map ${pct(pixelShape.accuracy)}; ${seconds.toFixed(0)} s`);
    if (mlpShape && mlpPixelShape) {
      console.log(`one-hidden-layer MLP probe (256 ReLU units): shape from the row ${pct(mlpShape.accuracy)}, from the ink map ${pct(mlpPixelShape.accuracy)}`);
    }
  }
} finally {
  model.dispose();
}
