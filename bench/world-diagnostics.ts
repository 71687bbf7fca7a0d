// Why the pre-trained world model stays at chance (issue 7): what reaches its language model from an
// image, and which tasks a LoRA on the world model's random base can learn at all in a few hundred
// steps. Two measurements:
//
//  1. The image rows (64 per 224 x 224 image: 8 x 8 cells of 28 x 28 pixels, after the 2 x 2 merger)
//     as the training graph sees them (Policy.promptInputs): their norm, how far they move from the
//     mean image row, and a linear probe (ridge regression, one-vs-rest over 7 classes) of each cell's
//     colour (the dominant object colour covering >= 15 % of the cell, else background), fitted on
//     the cells of the first images and scored on the cells of the others.
//  2. A ladder of tasks, each trained from the base world model (LoRA rank 64 on all seven
//     projections, SFT on the one answer token, AdamW) on the world's labelled images and scored on
//     held-out test images by the largest logit among the task's answers:
//       hint         the answer is written in the question ("(Yes) Is there ...?"): text only, one hop
//       detect       "Is there a red object?": one colour, read from the image
//       name         "Which colour covers the most of the image?": a colour word (7 answers), read from the image
//       match-image  "Is there a <colour> object?": the question's colour matched against the image
//       match-text   the same, with the scene's colours listed in the text and no image
//       match-grid-text  the same, with no image and the image's 8 x 8 cells written out as 64 words in
//                    reading order (the cell's colour word, or "the" for background): an image whose
//                    rows are words, at text positions (--grid-words N: N x N cells instead)
//       match-cot    match-image, answered after a step of reasoning that names the scene's colours
//                    ("I see red and blue.\nYes"); scored by greedy decoding of that step, then the answer
//       family:F     the world's own labelled items of family F (count, colour, shape, spatial,
//                    compare), answered with the answer's first token alone (a digit, a letter or Yes/No);
//                    family:all: every family's items mixed, scored per family as well
//     Truth is read from the pixels (nearest of the world's colours), as the render test does.
//     --curriculum trains the tasks one after another in one policy (each task's own steps and
//     schedule) instead of each from the base; --projector-rank R also trains a rank-R update of the
//     image rows (PolicyOptions.projectorRank, a trainable projector). --aligned-projector runs the
//     ladder on a copy of the model whose projector is fitted (ridge regression on the probe images'
//     pixel truth) to map a cell's row onto the embedding of its colour word (" red"), and a
//     background cell's onto " the": what a contrastively pre-trained encoder would give, folded
//     into the mmproj with mergeProjector.
//
//   node --import tsx bench/world-diagnostics.ts --world DIR [--items 1200] [--epochs 3] [--lr 3e-3]
//        [--tasks hint,detect,match-image,match-text] [--curriculum] [--projector-rank R] [--probe-images 300]
//        [--block-std S] [--threads 2] [--json]
// --block-std builds the base with another init scale of its blocks' matrices (WORLD_MODEL_SHAPE's is 0.088);
// --patch-size P with another ViT patch (14: 64 image rows per 224-pixel scene; 28: 16 rows).
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadImage, type DecodedImage } from '../src/images.js';
import { Model } from '../src/model.js';
import type { OptimizerOptions, Policy, TrainGroup } from '../src/policy.js';
import { makeTinyModel, WORLD_MODEL_SHAPE } from '../src/tiny-model.js';
import { benchQuestion } from '../src/visplay/eval.js';
import { alignProjector, readTruth, ridgeSolve, type AlignedProjector } from '../src/world/align.js';
import { COLOURS, Rng } from '../src/world/generator.js';

const LADDER = ['hint', 'detect', 'name', 'match-image', 'match-text', 'match-grid-text', 'match-cot'] as const;
const FAMILY_TASKS = ['family:count', 'family:colour', 'family:shape', 'family:spatial', 'family:compare', 'family:all'] as const;
const TASKS = [...LADDER, ...FAMILY_TASKS] as const;
type Task = (typeof TASKS)[number];

const { values } = parseArgs({ options: {
  world: { type: 'string' }, items: { type: 'string', default: '1200' }, epochs: { type: 'string', default: '3' },
  lr: { type: 'string', default: '3e-3' }, tasks: { type: 'string', default: 'hint,detect,match-image,match-text' },
  'probe-images': { type: 'string', default: '300' }, 'block-std': { type: 'string' }, 'patch-size': { type: 'string' }, 'projector-rank': { type: 'string', default: '0' }, curriculum: { type: 'boolean', default: false }, 'aligned-projector': { type: 'boolean', default: false }, 'grid-words': { type: 'string', default: '8' }, threads: { type: 'string', default: '2' }, json: { type: 'boolean', default: false },
} });
if (!values.world || !existsSync(join(values.world, 'world.json'))) {
  console.error('usage: bench/world-diagnostics.ts --world DIR (a folder written by `visplay-native world`)');
  process.exit(2);
}
const world = values.world;
const tasks = values.tasks!.split(',') as Task[];
for (const t of tasks) if (!TASKS.includes(t)) throw new Error(`unknown task ${t}; one of ${TASKS.join(', ')}`);
const threads = Number(values.threads);
const log = (line: string) => { if (!values.json) console.log(line); };

interface WorldItem { image: string; question: string; options?: string[]; answer: string; type: string; family: string }
const readSplit = (file: string) => readFileSync(join(world, file), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as WorldItem);

interface ProbeResult {
  images: number; cellsPerImage: number; rowNorm: number; meanRowNorm: number; spreadFromMean: number;
  objectCellShift: number; probeAccuracyAllCells: number; probeAccuracyObjectCells: number; objectCellsScored: number; majorityObjectCell: number;
}

async function probe(policy: Policy, marker: string, images: string[]): Promise<ProbeResult> {
  const rows: Float32Array[] = [];
  const labels: number[] = [];
  const imageOf: number[] = [];
  let grid = 0;
  for (const [k, path] of images.entries()) {
    const inputs = await policy.promptInputs({ prompt: marker, images: [path] });
    const E = inputs.embeddings.length / inputs.tokens;
    const n = inputs.tokens - 2;  // <|vision_start|> image rows <|vision_end|>
    grid = Math.round(Math.sqrt(n));
    if (grid * grid !== n) throw new Error(`expected a square grid of image rows, got ${n}`);
    const { cells } = await readTruth(path, grid);
    for (let r = 0; r < n; r++) {
      rows.push(inputs.embeddings.slice((r + 1) * E, (r + 2) * E));
      labels.push(cells[r]!);
      imageOf.push(k);
    }
  }
  const E = rows[0]!.length;
  const mean = new Float64Array(E);
  for (const row of rows) for (let j = 0; j < E; j++) mean[j]! += row[j]! / rows.length;
  const norm = (v: ArrayLike<number>, sub?: Float64Array) => Math.sqrt(Array.from(v).reduce((a, x, j) => a + (x - (sub ? sub[j]! : 0)) ** 2, 0));
  const objectRows = rows.filter((_, i) => labels[i]! < COLOURS.length);
  // Ridge on centred rows plus a bias, fitted on the first 2/3 of the images.
  const D = E + 1;
  const C = COLOURS.length + 1;
  const fitImages = Math.floor((2 * images.length) / 3);
  const A = new Float64Array(D * D);
  const B = new Float64Array(D * C);
  const feature = (row: Float32Array) => { const f = new Float64Array(D); for (let j = 0; j < E; j++) f[j] = row[j]! - mean[j]!; f[E] = 1; return f; };
  rows.forEach((row, i) => {
    if (imageOf[i]! >= fitImages) return;
    const f = feature(row);
    for (let a = 0; a < D; a++) {
      for (let b = 0; b < D; b++) A[a * D + b]! += f[a]! * f[b]!;
      B[a * C + labels[i]!]! += f[a]!;
    }
  });
  const W = ridgeSolve(A, B, D, C, 1e-2);
  let right = 0, scored = 0, objRight = 0, objScored = 0;
  const objCounts = new Array<number>(C).fill(0);
  rows.forEach((row, i) => {
    if (imageOf[i]! < fitImages) return;
    const f = feature(row);
    let best = 0, bestV = -Infinity;
    for (let c = 0; c < C; c++) {
      let v = 0;
      for (let a = 0; a < D; a++) v += f[a]! * W[a * C + c]!;
      if (v > bestV) { bestV = v; best = c; }
    }
    scored++;
    if (best === labels[i]) right++;
    if (labels[i]! < COLOURS.length) {
      objScored++;
      objCounts[labels[i]!]!++;
      if (best === labels[i]) objRight++;
    }
  });
  return {
    images: images.length, cellsPerImage: grid * grid,
    rowNorm: rows.reduce((a, r) => a + norm(r), 0) / rows.length,
    meanRowNorm: norm(mean),
    spreadFromMean: rows.reduce((a, r) => a + norm(r, mean), 0) / rows.length,
    objectCellShift: objectRows.reduce((a, r) => a + norm(r, mean), 0) / Math.max(1, objectRows.length),
    probeAccuracyAllCells: right / scored, probeAccuracyObjectCells: objRight / Math.max(1, objScored), objectCellsScored: objScored,
    majorityObjectCell: Math.max(...objCounts) / Math.max(1, objScored),
  };
}

interface LadderItem {
  image: DecodedImage; question: string; answer: string; choices: readonly string[];
  /** Trained (and at scoring, greedily generated) before the answer, ending in a newline. */
  reasoning?: string;
  /** The world family of a family item (family:all scores each family apart). */
  family?: string;
}

const YES_NO = ['Yes', 'No'] as const;

const COUNT_ANSWERS = ['1', '2', '3', '4', '5', '6'] as const;
const LETTERS = ['A', 'B', 'C', 'D'] as const;

/** The world's own items of one family, answered with one token. */
async function familyItems(family: string, items: WorldItem[]): Promise<LadderItem[]> {
  const out: LadderItem[] = [];
  for (const it of items.filter((i) => family === 'all' || i.family === family)) {
    const choices = it.type === 'numeric' ? COUNT_ANSWERS : it.options ? LETTERS : YES_NO;
    out.push({ image: await loadImage(join(world, it.image)), question: `${benchQuestion(it)}\nAnswer with one ${it.type === 'numeric' ? 'number' : it.options ? 'letter' : 'word'}.`, answer: it.answer, choices, family: it.family });
  }
  return out;
}

/** One item per image of `paths` for `task` (images that admit no item of the task are skipped). */
async function ladderItems(task: Task, paths: string[], seed: number): Promise<LadderItem[]> {
  const rng = new Rng(seed);
  const out: LadderItem[] = [];
  for (const path of paths) {
    const { counts } = await readTruth(path, 1);
    const grid = task === 'match-grid-text' ? (await readTruth(path, Number(values['grid-words']))).cells.map((c) => (c < COLOURS.length ? COLOURS[c]! : 'the')).join(' ') : '';
    if (task === 'name') {
      let best = -1;
      COLOURS.forEach((_, i) => { if (counts[i]! > 40 && (best < 0 || counts[i]! > counts[best]!)) best = i; });
      if (best < 0) continue;
      out.push({ image: await loadImage(path), question: 'Which colour covers the most of the image? Answer with one word.', answer: COLOURS[best]!, choices: COLOURS });
      continue;
    }
    const onlyRed = task === 'detect';
    const present = COLOURS.filter((c, i) => counts[i]! > 40 && (!onlyRed || c === 'red'));
    const absent = COLOURS.filter((c, i) => counts[i]! < 5 && (!onlyRed || c === 'red'));
    if (present.length + absent.length === 0) continue;
    const yes = onlyRed ? present.length > 0 : absent.length === 0 || (present.length > 0 && rng.next() < 0.5);
    const pool = yes ? present : absent;
    const colour = pool[Math.floor(rng.next() * pool.length)]!;
    const scene = COLOURS.filter((_, i) => counts[i]! > 40);
    const prefix = task === 'hint' ? `(${yes ? 'Yes' : 'No'}) ` : task === 'match-text' ? `The scene has ${scene.join(' and ')} objects. `
      : task === 'match-grid-text' ? `The picture: ${grid}.\n` : '';
    if (task === 'match-cot') {
      out.push({ image: await loadImage(path), question: `Is there a ${colour} object in the image? Name the colours you see, then answer Yes or No.`,
        answer: yes ? 'Yes' : 'No', choices: YES_NO, reasoning: `I see ${scene.join(' and ')}.\n` });
      continue;
    }
    out.push({ image: await loadImage(path), question: `${prefix}Is there a ${colour} object in the image? Answer Yes or No.`, answer: yes ? 'Yes' : 'No', choices: YES_NO });
  }
  return out;
}

interface LadderResult {
  task: Task; trainItems: number; steps: number; firstLoss: number; lastLoss: number; trainAccuracy: number; heldOutAccuracy: number;
  /** Share of held-out items given the most common answer (1: one answer for everything). */
  heldOutTopShare: number; topAnswer: string; seconds: number;
  /** Held-out accuracy per world family (family:all). */
  heldOutFamilies: Record<string, number>;
}

const PER_STEP = 16;
const stepsOf = (train: LadderItem[], epochs: number) => Math.ceil(train.length / PER_STEP) * epochs;

/** Trains `policy` on `train` for its steps under `optimizer` (whose cosine may span several tasks), then scores it. */
async function ladderStep(model: Model, policy: Policy, task: Task, train: LadderItem[], held: LadderItem[], epochs: number,
  optimizer: OptimizerOptions): Promise<LadderResult> {
  const perStep = PER_STEP;
  const steps = stepsOf(train, epochs);
  const choiceIds = (list: readonly string[]) => list.map((c) => model.tokenize(c)[0]!);
  const withImage = task !== 'match-text' && task !== 'match-grid-text';
  const spec = (it: LadderItem) => ({
    messages: [{ role: 'user' as const, content: withImage ? [{ type: 'image' as const }, { type: 'text' as const, text: it.question }] : it.question }],
    images: withImage ? [it.image] : [],
  });
  const score = async (list: LadderItem[]) => {
    let right = 0;
    const said = new Map<string, number>();
    const byFamily = new Map<string, { right: number; of: number }>();
    const V = model.info.vocabSize;
    const newline = model.tokenize('\n').at(-1)!;
    for (const it of list) {
      // With a reasoning step: greedy decoding up to its newline (at most 16 tokens), then the answer.
      const prefix: number[] = [];
      if (it.reasoning !== undefined) {
        while (prefix.length < 16 && prefix.at(-1) !== newline) {
          const l = await policy.logits(spec(it), prefix);
          const row = l.subarray(l.length - V);
          let best = 0;
          for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
          prefix.push(best);
        }
      }
      const logits = await policy.logits(spec(it), prefix.length > 0 ? prefix : undefined);
      const last = logits.subarray(logits.length - V);
      const ids = choiceIds(it.choices);
      let k = 0;
      ids.forEach((id, j) => { if (last[id]! > last[ids[k]!]!) k = j; });
      said.set(it.choices[k]!, (said.get(it.choices[k]!) ?? 0) + 1);
      if (it.choices[k] === it.answer) right++;
      if (it.family !== undefined) {
        const f = byFamily.get(it.family) ?? { right: 0, of: 0 };
        f.of++;
        if (it.choices[k] === it.answer) f.right++;
        byFamily.set(it.family, f);
      }
    }
    const [topAnswer, top] = [...said.entries()].sort((x, y) => y[1] - x[1])[0]!;
    const families = Object.fromEntries([...byFamily].map(([f, s]) => [f, s.right / s.of]));
    return { accuracy: right / list.length, topShare: top / list.length, topAnswer, families };
  };
  const t0 = performance.now();
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const from = (s * perStep) % train.length;
    const batch = train.slice(from, from + perStep);
    const groups: TrainGroup[] = batch.map((it) => ({
      ...spec(it), samples: [{ tokens: [...(it.reasoning ? model.tokenize(it.reasoning) : []), model.tokenize(it.answer)[0]!], advantage: 1 }],
    }));
    losses.push((await policy.step(groups, { optimizer })).loss);
    if (!values.json && (s + 1) % 25 === 0) process.stderr.write(`  ${task}: step ${s + 1}/${steps}, loss ${losses.at(-1)!.toFixed(3)}\n`);
  }
  const seconds = (performance.now() - t0) / 1000;
  const tenth = Math.max(1, Math.floor(steps / 10));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const trainScore = await score(train.slice(0, 200));
  const heldScore = await score(held);
  return {
    task, trainItems: train.length, steps, firstLoss: mean(losses.slice(0, tenth)), lastLoss: mean(losses.slice(-tenth)),
    trainAccuracy: trainScore.accuracy, heldOutAccuracy: heldScore.accuracy, heldOutTopShare: heldScore.topShare, topAnswer: heldScore.topAnswer, seconds,
    heldOutFamilies: heldScore.families,
  };
}

const blockStd = values['block-std'] === undefined ? undefined : Number(values['block-std']);
const patchSize = values['patch-size'] === undefined ? undefined : Number(values['patch-size']);
const base = await makeTinyModel({
  seed: 1, shape: { ...WORLD_MODEL_SHAPE, ...(blockStd === undefined ? {} : { blockStd }), ...(patchSize === undefined ? {} : { patchSize }) },
});
let model = await Model.load({ model: base.modelPath, mmproj: base.mmprojPath, threads, gpuLayers: 0 });
const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${cpus().length} cores, ${threads} threads`;
try {
  const pretrainImages = [...new Set(readSplit('pretrain.jsonl').map((i) => join(world, i.image)))];
  const testImages = [...new Set(readSplit('test.jsonl').map((i) => join(world, i.image)))];
  const policy = await model.createPolicy({ rank: 1, threads });
  let probed: ProbeResult;
  try {
    probed = await probe(policy, model.info.projector!.marker, pretrainImages.slice(0, Number(values['probe-images'])));
  } finally {
    policy.dispose();
  }
  log(`machine: ${machine}; base: world model${blockStd === undefined ? '' : `, block std ${blockStd}`}${patchSize === undefined ? '' : `, patch ${patchSize}`}`);
  log(`image rows: ${probed.cellsPerImage} per image; norm ${probed.rowNorm.toFixed(3)}, of which the mean row ${probed.meanRowNorm.toFixed(3)}; ` +
    `distance from the mean row ${probed.spreadFromMean.toFixed(3)} (object cells ${probed.objectCellShift.toFixed(3)})`);
  log(`linear probe of the cell colour (7 classes, ${probed.images} images, fit on 2/3): all cells ${(100 * probed.probeAccuracyAllCells).toFixed(1)} %, ` +
    `object cells ${(100 * probed.probeAccuracyObjectCells).toFixed(1)} % of ${probed.objectCellsScored} (majority colour ${(100 * probed.majorityObjectCell).toFixed(1)} %)`);
  let aligned: AlignedProjector | undefined;
  if (values['aligned-projector']) {
    aligned = await alignProjector(model, base.mmprojPath, pretrainImages.slice(0, Number(values['probe-images'])), mkdtempSync(join(tmpdir(), 'visplay-aligned-')), { threads });
    log(`aligned projector: the nearest target word is the cell's own for ${(100 * aligned.wordAccuracy).toFixed(1)} % of held-out cells ` +
      `(${(100 * aligned.objectWordAccuracy).toFixed(1)} % of object cells)`);
    model.dispose();
    model = await Model.load({ model: base.modelPath, mmproj: aligned.mmprojPath, threads, gpuLayers: 0 });
  }
  const ladder: LadderResult[] = [];
  const items = Number(values.items);
  const newPolicy = () => model.createPolicy({
    rank: 64, alpha: 64, seed: 0, threads, microBatchTokens: 512, projectorRank: Number(values['projector-rank']),
    loss: { kind: 'sft', klCoef: 0, aggregation: 'token-mean' },
  });
  const epochs = Number(values.epochs);
  const data = [];
  for (const task of tasks) {
    if (task.startsWith('family:')) {
      const family = task.slice('family:'.length);
      data.push({ task, train: await familyItems(family, readSplit('pretrain.jsonl').slice(0, items)), held: await familyItems(family, readSplit('test.jsonl')) });
    } else {
      data.push({ task, train: await ladderItems(task, pretrainImages.slice(0, items), 7), held: await ladderItems(task, testImages.slice(0, 200), 11) });
    }
  }
  const schedule = (totalSteps: number): OptimizerOptions =>
    ({ lr: Number(values.lr), schedule: 'cosine', warmupSteps: 10, totalSteps, minLrRatio: 0.1, weightDecay: 0, maxGradNorm: 1 });
  // A curriculum is one run: one cosine over all its tasks' steps.
  const curriculumSteps = data.reduce((a, d) => a + stepsOf(d.train, epochs), 0);
  const shared = values.curriculum ? await newPolicy() : undefined;
  try {
    for (const { task, train, held } of data) {
      const policy = shared ?? await newPolicy();
      try {
        const r = await ladderStep(model, policy, task, train, held, epochs, schedule(shared ? curriculumSteps : stepsOf(train, epochs)));
        ladder.push(r);
        log(`${task.padEnd(12)} ${r.trainItems} items, ${r.steps} steps (${r.seconds.toFixed(0)} s): loss ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}; ` +
          `train ${(100 * r.trainAccuracy).toFixed(1)} %, held-out ${(100 * r.heldOutAccuracy).toFixed(1)} % (says ${r.topAnswer} ${(100 * r.heldOutTopShare).toFixed(0)} %)` +
          (task === 'family:all' ? `; by family: ${Object.entries(r.heldOutFamilies).map(([f, a]) => `${f} ${(100 * a).toFixed(1)} %`).join(', ')}` : ''));
      } finally {
        if (!shared) policy.dispose();
      }
    }
  } finally {
    shared?.dispose();
  }
  if (values.json) console.log(JSON.stringify({ machine, probe: probed, ladder, settings: { items, epochs: Number(values.epochs), lr: Number(values.lr), blockStd: blockStd ?? WORLD_MODEL_SHAPE.blockStd, patchSize: patchSize ?? 14, curriculum: values.curriculum, projectorRank: Number(values['projector-rank']), aligned } }, null, 2));
} finally {
  model.dispose();
}
