// The world experiment (issue 7 parts 3-5): is there a label-free gain?
//
//   1. the world (writeWorld) and the world model (tiny model, WORLD_MODEL_SHAPE)
//   2. pre-training on the labelled split (pretrain.ts), cached by its inputs under the cache folder
//   3. for each seed and each arm, `iterations` VisPlay iterations on the unlabelled pool:
//        visplay             the loop as it is
//        shuffled-rewards    the same steps with each step's rewards shuffled across its samples
//        frozen-questioner   VisPlay with the Questioner kept at its pre-trained state (0 steps)
//   4. held-out accuracy (greedy and mean@N at T = 1, per family) of the pre-trained model and of
//      every arm's Reasoner after every iteration (its saved reasoner-i adapter)
//
// No setting is chosen by looking at the test split: the defaults below were fixed from the
// pre-training loss and the pool's confidence statistics only. Everything is resumable: runs resume
// from their checkpoints, and evaluations already in results.jsonl are not repeated.
//
// OUT/
//   world/            the world (unless options.world points elsewhere)
//   runs/ARM-seedS/   each evolve run folder (records, adapters, its own report)
//   results.jsonl     one ExperimentScore per line (committed lines only, appended)
//   experiment.json   ExperimentSummary: settings, the table's numbers (written at the end)
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, truncateSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Model } from '../model.js';
import { cacheDir, makeTinyModel, WORLD_MODEL_SHAPE, type TinyModelConfig } from '../tiny-model.js';
import { alignProjector } from './align.js';
import { readLabelled } from './pretrain.js';
import { VisplayError } from '../errors.js';
import type { EvolveConfig } from '../visplay/config.js';
import { writeAtomic } from '../visplay/report/index.js';
import { evolve, resumeEvolve, type EvolveEvent } from '../visplay/loop.js';
import { evaluateWorld, type WorldScore } from './evaluate.js';
import { pretrain, type PretrainOptions, type PretrainSummary } from './pretrain.js';
import { WORLD_PROMPTS } from './prompts.js';
import { worldVocabularyTexts } from './vocabulary.js';
import { writeWorld, type WorldOptions } from './splits.js';

export type WorldVocabulary = 'world' | 'qwen2';

export const ARMS = ['visplay', 'shuffled-rewards', 'frozen-questioner'] as const;
export type Arm = (typeof ARMS)[number];

export interface ExperimentOptions {
  out: string;
  /** An existing world folder; default: OUT/world, written from `worldOptions`. */
  world?: string;
  worldOptions?: WorldOptions;
  /** Seed of the world model's random weights (default 1). */
  modelSeed?: number;
  /** Changes to WORLD_MODEL_SHAPE (e.g. { patchSize: 28 }: 16 image rows per 224-pixel scene). */
  modelShape?: Partial<TinyModelConfig>;
  /**
   * Fit an aligned projector (align.ts) on this many labelled images before pre-training, and use it
   * as the base mmproj (default 0: the seeded projector).
   */
  alignImages?: number;
  /**
   * The world model's vocabulary: 'world' (default) keeps only the tokens of the world's texts (582
   * of Qwen2's 151,936; world/vocabulary.ts): a pre-training step takes 0.82 s instead of 2.14 s,
   * and sampling at T = 1 no longer spreads over 151,000 tokens the model never saw trained.
   * 'qwen2' keeps the whole vocabulary (the world model of tables A-D in docs/world.md).
   */
  vocabulary?: WorldVocabulary;
  /** Where pre-trained models are cached by their inputs (default: the package's cache folder). */
  pretrainCache?: string;
  pretrain?: Omit<PretrainOptions, 'world' | 'out' | 'onStep'>;
  seeds?: number[];
  arms?: Arm[];
  /** evolve settings shared by every arm (iterations, steps, sizes...). */
  evolve?: Partial<EvolveConfig>;
  /** Samples per test item for mean@N (default 8). */
  evalSamples?: number;
  /** Evaluate the first N test items only (default: all). */
  evalLimit?: number;
  threads?: number;
  onEvent?: (event: ExperimentEvent) => void;
  signal?: AbortSignal;
}

export type ExperimentEvent =
  | { type: 'stage'; message: string }
  | { type: 'pretrain'; step: number; steps: number; loss: number; tokensPerSecond: number }
  | { type: 'evolve'; arm: Arm; seed: number; event: EvolveEvent }
  | { type: 'eval'; label: string; done: number; total: number }
  | { type: 'score'; score: ExperimentScore };

export interface ExperimentScore extends WorldScore {
  /** 'pretrained' for the baseline, else the arm. */
  arm: Arm | 'pretrained';
  seed: number | null;
  iteration: number;
  /** Time the evaluation took (both modes of one evaluation carry the same). */
  seconds: number;
}

/** Bump when pretrain.ts or the world model change what a cached pre-training holds. */
export const PRETRAIN_VERSION = 1;

/**
 * The defaults of the world runs, set for time (the whole pipeline within 30 minutes on 2 cores)
 * and from the pool's statistics, never from the test split. Short outputs: a world question takes
 * ~40 tokens, an answer ~20.
 */
export const WORLD_EVOLVE_DEFAULTS: Partial<EvolveConfig> = {
  iterations: 3,
  questionerSteps: 6,
  reasonerSteps: 6,
  groupSize: 8,
  votes: 8,
  labelVotes: 8,
  imagesPerStep: 4,
  candidateImages: 64,
  candidatesPerImage: 4,
  candidateSelection: 'shuffle',
  questionerMaxTokens: 96,
  reasonerMaxTokens: 64,
  loraRank: 16,
  loraAlpha: 32,
  lr: 1e-4,
  parallel: 32,
  contextSize: 8192,
};

/** The committed scores; a line cut by a kill is cut off the file (and scored again by the rerun). */
function readScores(path: string): ExperimentScore[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  const end = text.lastIndexOf('\n') + 1;
  if (end < text.length) truncateSync(path, end);
  return text.slice(0, end).split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as ExperimentScore);
}

export interface ExperimentSummary {
  world: string;
  pretrained: { dir: string; modelPath: string; mmprojPath: string; summary: PretrainSummary };
  seeds: number[];
  arms: Arm[];
  evolve: Partial<EvolveConfig>;
  evalSamples: number;
  evalLimit: number | null;
  scores: ExperimentScore[];
  /**
   * The pipeline's compute time as one would run it once: pre-training, then each (seed, arm) run's
   * iterations (from their summaries) and its evaluations; whatever this call found cached counts too.
   */
  seconds: { pretrain: number; evolve: number; eval: number; total: number };
}

/** Runs (or resumes) the whole experiment; null when stopped by the signal (run it again to resume). */
export async function runWorldExperiment(options: ExperimentOptions): Promise<ExperimentSummary | null> {
  const out = resolve(options.out);
  mkdirSync(out, { recursive: true });
  const emit = (e: ExperimentEvent) => options.onEvent?.(e);
  const seeds = options.seeds ?? [0, 1, 2];
  const arms = options.arms ?? [...ARMS];
  const evolveConfig = { ...WORLD_EVOLVE_DEFAULTS, ...options.evolve };
  const evalSamples = options.evalSamples ?? 8;

  // 1. The world, its prompt file, the world model.
  const world = resolve(options.world ?? join(out, 'world'));
  if (!existsSync(join(world, 'world.json'))) {
    emit({ type: 'stage', message: `writing the world to ${world}` });
    await writeWorld(world, options.worldOptions ?? {});
  }
  const promptFile = join(world, 'prompts.json');
  if (!existsSync(promptFile)) await writeAtomic(promptFile, `${JSON.stringify(WORLD_PROMPTS, null, 2)}\n`);
  // A folder holds one experiment: a rerun with other settings would mix their scores.
  const settingsPath = join(out, 'settings.json');
  const alignImages = options.alignImages ?? 0;
  const modelShape = { ...WORLD_MODEL_SHAPE, ...options.modelShape };
  // Keys only present when set (and the vocabulary only when 'world'), so that folders of earlier
  // runs keep their settings, and a 'qwen2' run reproduces them.
  const vocabulary = options.vocabulary ?? 'world';
  const modelSettings = {
    ...(options.modelShape ? { modelShape } : {}), ...(alignImages > 0 ? { alignImages } : {}), ...(vocabulary === 'world' ? { vocabulary } : {}),
  };
  const settingsText = `${JSON.stringify({ world, modelSeed: options.modelSeed ?? 1, ...modelSettings, pretrain: options.pretrain ?? {}, seeds, arms, evolve: evolveConfig, evalSamples, evalLimit: options.evalLimit ?? null }, null, 2)}\n`;
  if (existsSync(settingsPath) && readFileSync(settingsPath, 'utf8') !== settingsText) {
    throw new VisplayError('ERR_CHECKPOINT', `${out} holds an experiment with other settings (${settingsPath}); choose another folder or remove it`);
  }
  await writeAtomic(settingsPath, settingsText);
  const tiny = await makeTinyModel({
    seed: options.modelSeed ?? 1, shape: modelShape, ...(vocabulary === 'world' ? { vocabularyTexts: worldVocabularyTexts() } : {}),
  });

  // 2. Pre-training, cached by (world, base model, settings); first the aligned projector, if asked.
  const key = createHash('sha256').update(JSON.stringify({
    version: PRETRAIN_VERSION, world: readFileSync(join(world, 'world.json'), 'utf8'), base: tiny.config, modelSeed: options.modelSeed ?? 1, ...modelSettings,
    pretrain: options.pretrain ?? {},
  })).digest('hex').slice(0, 16);
  const pretrainDir = join(options.pretrainCache ?? cacheDir(), `world-pretrain-${key}`);
  let base = { modelPath: tiny.modelPath, mmprojPath: tiny.mmprojPath };
  if (alignImages > 0) {
    const alignedPath = join(pretrainDir, 'aligned', 'mmproj-aligned.gguf');
    if (!existsSync(alignedPath)) {
      emit({ type: 'stage', message: `aligning the projector on ${alignImages} labelled images` });
      const images = [...new Set(readLabelled(world, 'pretrain.jsonl').map((i) => i.image))].slice(0, alignImages);
      const model = await Model.load({ model: tiny.modelPath, mmproj: tiny.mmprojPath, threads: options.threads, repackWeights: false, gpuLayers: 0 });
      try {
        const fit = await alignProjector(model, tiny.mmprojPath, images, join(pretrainDir, 'aligned'), { threads: options.threads });
        emit({ type: 'stage', message: `aligned projector: nearest word right for ${(100 * fit.objectWordAccuracy).toFixed(1)} % of held-out object cells` });
      } finally {
        model.dispose();
      }
    }
    base = { ...base, mmprojPath: alignedPath };
  }
  let summary: PretrainSummary | null;
  if (existsSync(join(pretrainDir, 'pretrain.json'))) {
    summary = JSON.parse(readFileSync(join(pretrainDir, 'pretrain.json'), 'utf8')) as PretrainSummary;
    emit({ type: 'stage', message: `pre-trained model found in ${pretrainDir}` });
  } else {
    emit({ type: 'stage', message: `pre-training on ${world}/pretrain.jsonl into ${pretrainDir}` });
    const model = await Model.load({ model: base.modelPath, mmproj: base.mmprojPath, threads: options.threads, repackWeights: false, gpuLayers: 0 });
    try {
      summary = await pretrain(model, base, {
        ...options.pretrain, world, out: pretrainDir, threads: options.threads,
        onStep: (p) => emit({ type: 'pretrain', step: p.step, steps: p.steps, loss: p.loss, tokensPerSecond: p.tokensPerSecond }),
        signal: options.signal,
      });
    } finally {
      model.dispose();
    }
    if (summary === null) return null;
  }

  // 3 + 4. Baseline, then every (seed, arm): evolve, then score each iteration's Reasoner.
  const resultsPath = join(out, 'results.jsonl');
  const scores = readScores(resultsPath);
  const modes = evalSamples > 0 ? 2 : 1;
  // An evaluation is done when both its modes are recorded (they are appended in one write).
  const has = (arm: ExperimentScore['arm'], seed: number | null, iteration: number) =>
    scores.filter((s) => s.arm === arm && s.seed === seed && s.iteration === iteration).length >= modes;
  const record = (list: WorldScore[], seconds: number, arm: ExperimentScore['arm'], seed: number | null, iteration: number) => {
    const lines = list.map((score): ExperimentScore => ({ ...score, arm, seed, iteration, seconds }));
    appendFileSync(resultsPath, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
    for (const s of lines) {
      scores.push(s);
      emit({ type: 'score', score: s });
    }
  };
  let evolveSeconds = 0;
  const evalModel = await Model.load({ model: summary.modelPath, mmproj: summary.mmprojPath, threads: options.threads });
  try {
    const score = async (label: string, lora: string | undefined, arm: ExperimentScore['arm'], seed: number | null, iteration: number) => {
      const t0 = performance.now();
      const list = await evaluateWorld(evalModel, world, {
        lora, samples: evalSamples, limit: options.evalLimit, onProgress: (done, total) => emit({ type: 'eval', label, done, total }),
      });
      record(list, (performance.now() - t0) / 1000, arm, seed, iteration);
    };
    if (!has('pretrained', null, 0)) {
      emit({ type: 'stage', message: 'scoring the pre-trained model on the held-out test' });
      await score('pre-trained model', undefined, 'pretrained', null, 0);
    }
    for (const seed of seeds) {
      for (const arm of arms) {
        if (options.signal?.aborted) return null;
        const runDir = join(out, 'runs', `${arm}-seed${seed}`);
        const iterations = evolveConfig.iterations ?? 3;
        if (!has(arm, seed, iterations)) {
          emit({ type: 'stage', message: `${arm}, seed ${seed}: ${iterations} VisPlay iterations on the unlabelled pool` });
          const hooks = { onEvent: (event: EvolveEvent) => emit({ type: 'evolve', arm, seed, event }), signal: options.signal };
          const config: Partial<EvolveConfig> = {
            ...evolveConfig, seed, promptFile, threads: options.threads ?? 0, promptFamily: 'default',
            ...(arm === 'shuffled-rewards' ? { shuffleRewards: true } : {}),
            ...(arm === 'frozen-questioner' ? { questionerSteps: 0 } : {}),
          };
          const result = existsSync(join(runDir, 'run.json'))
            ? await resumeEvolve(runDir, hooks)
            : await evolve({ images: join(world, 'pool.jsonl'), model: summary.modelPath, mmproj: summary.mmprojPath, out: runDir, config }, hooks);
          if (!result.completed) return null;
        }
        for (let it = 1; it <= iterations; it++) {
          evolveSeconds += iterationSeconds(runDir, it);
          if (has(arm, seed, it)) continue;
          await score(`${arm} seed ${seed} iteration ${it}`, join(runDir, `reasoner-${it}`), arm, seed, it);
        }
      }
    }
  } finally {
    evalModel.dispose();
  }

  // Each evaluation's two modes carry its time once.
  const evalSeconds = scores.filter((s) => s.mode === 'greedy').reduce((a, s) => a + s.seconds, 0);
  const result: ExperimentSummary = {
    world, pretrained: { dir: pretrainDir, modelPath: summary.modelPath, mmprojPath: summary.mmprojPath, summary }, seeds, arms, evolve: evolveConfig,
    evalSamples, evalLimit: options.evalLimit ?? null, scores,
    seconds: { pretrain: summary.seconds, evolve: evolveSeconds, eval: evalSeconds, total: summary.seconds + evolveSeconds + evalSeconds },
  };
  await writeAtomic(join(out, 'experiment.json'), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}

/** mean ± sd (sample sd; 0 for one value) of a list. */
export function meanSd(values: readonly number[]): { mean: number; sd: number; n: number } {
  const n = values.length;
  const mean = n > 0 ? values.reduce((a, b) => a + b, 0) / n : NaN;
  const sd = n > 1 ? Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd, n };
}

/** Seconds an evolve run's iteration took, from its summary (0 when missing). */
function iterationSeconds(runDir: string, iteration: number): number {
  const path = join(runDir, `iter-${iteration}`, 'summary.json');
  if (!existsSync(path)) return 0;
  return (JSON.parse(readFileSync(path, 'utf8')) as { seconds?: { total?: number } }).seconds?.total ?? 0;
}
