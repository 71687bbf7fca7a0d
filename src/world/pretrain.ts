// Pre-training the world model (issue 7 part 2): supervised cross-entropy on the labelled split, in
// the native training engine (loss kind 'sft'), for both roles at once, then the LoRA folded into a
// copy of the base so that VisPlay starts from a plain model whose reference policy is the
// pre-trained one.
//
//   each labelled item -> two groups of one sequence each:
//     Reasoner:   world prompt with the question   -> "It is blue, option B.\n\boxed{B}<|im_end|>"
//     Questioner: world prompt, train or generate  -> "<type>..</type>\n<question>..</question>\n<answer>..</answer><|im_end|>"
//                 phase in turn (their images sit on either side of the text)
//
// What is trained: a LoRA of high rank (default 64 of 128) on all seven projections of every
// language-model block, and optionally (projectorRank > 0) a low-rank update of the image rows,
// which mergeProjector folds into the mmproj's last linear layer: LLaVA's trainable projector. The
// vision tower stays at its seeded random weights: it is not in our training graph (image
// embeddings are an input), and random features of 28x28 pixel cells keep colour and rough shape,
// which is what the world asks about. The embeddings and head stay too; the world model's head is
// scaled up (WORLD_MODEL_SHAPE) so the blocks can move the logits.
//
// Deterministic in (world, options): the data order is a seeded shuffle per epoch and the LoRA
// initialisation is seeded. Checkpoints (adapter + optimizer + state.json) are written atomically
// every `checkpointEvery` steps and at the end; an interrupted run resumes from the last one and
// ends with the same weights as an uninterrupted run.
//
// OUT/
//   checkpoint/       policy folder (adapter.gguf, optimizer.gguf) of the last checkpoint
//   state.json        { step, settings } of that checkpoint (written after the policy)
//   log.jsonl         one line per step: step, epoch, loss, tokens, seconds
//   model.gguf        the merged language model (written last, with mmproj.gguf beside it)
//   mmproj.gguf       a copy of the base's projector
//   pretrain.json     PretrainSummary (written last of all: its presence means done)
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { VisplayError } from '../errors.js';
import { loadImage, type DecodedImage } from '../images.js';
import type { Model } from '../model.js';
import type { Policy, TrainGroup } from '../policy.js';
import { mergeLora, mergeProjector } from '../quantize.js';
import { writeJsonAtomic } from '../visplay/run-store.js';
import * as check from '../validate.js';
import { Rng } from './generator.js';
import { benchQuestion } from '../visplay/eval.js';
import { questionerMessages, reasonerMessages } from '../visplay/prompts.js';
import { WORLD_PROMPTS, questionerTarget, reasonerTarget, type LabelledItem } from './prompts.js';

export interface PretrainOptions {
  /** World folder (writeWorld's output): reads world.json and pretrain.jsonl. */
  world: string;
  /** Output folder (see the file comment). */
  out: string;
  /** Passes over the labelled split (default 3). */
  epochs?: number;
  /** Labelled items per optimizer step (each gives two sequences; default 16). */
  itemsPerStep?: number;
  /** Use only the first `limit` labelled items (default: all). */
  limit?: number;
  /** LoRA rank (default 64) and alpha (default rank). */
  rank?: number;
  alpha?: number;
  /** Rank of the trainable projector update (PolicyOptions.projectorRank; default 0: the projector stays as seeded). */
  projectorRank?: number;
  /** Peak learning rate of AdamW (default 1e-3), cosine to 10 % after 10 warm-up steps. */
  lr?: number;
  /** Data order and LoRA initialisation (default 0). */
  seed?: number;
  /**
   * Packed rows per micro-batch (default 256). Each item is its own group (its own prompt), and a
   * micro-batch's attention is dense over its rows under a block mask, so big micro-batches of many
   * small groups spend most of their time on masked-out pairs: with the world vocabulary, 16 items
   * of 16 image rows took 0.82 s a step at 256 rows, 1.26 s at 512, 1.60 s at 1,024 and 0.92 s at
   * 128 (2 cores).
   */
  microBatchTokens?: number;
  /** Steps between checkpoints (default 25). */
  checkpointEvery?: number;
  threads?: number;
  onStep?: (progress: PretrainProgress) => void;
  /** Stops after the next checkpoint; pretrain then resolves null (run it again to resume). */
  signal?: AbortSignal;
}

export interface PretrainProgress {
  step: number;
  steps: number;
  epoch: number;
  loss: number;
  tokens: number;
  tokensPerSecond: number;
}

export interface PretrainSettings {
  epochs: number;
  itemsPerStep: number;
  items: number;
  steps: number;
  rank: number;
  alpha: number;
  lr: number;
  seed: number;
  /** Present only when > 0, so runs without it keep their settings (and checkpoints) unchanged. */
  projectorRank?: number;
  /** sha256 of pretrain.jsonl: a resume must see the same data. */
  data: string;
}

export interface PretrainSummary {
  settings: PretrainSettings;
  modelPath: string;
  mmprojPath: string;
  /** Mean loss of the first and the last 10 % of the steps. */
  firstLoss: number;
  lastLoss: number;
  trainedTokens: number;
  seconds: number;
  mergedWeights: number;
  /** Tensors of the mmproj changed by the projector merge (0: a copy of the base's). */
  mergedProjectorTensors: number;
}

interface StepLog {
  step: number;
  epoch: number;
  loss: number;
  tokens: number;
  seconds: number;
}

/** The labelled items of a world's pre-training split, each with its image path made absolute. */
export function readLabelled(world: string, file: string): Array<LabelledItem & { image: string; family: string; id: string }> {
  const path = join(world, file);
  if (!existsSync(path)) throw new VisplayError('ERR_FILE_NOT_FOUND', `${path} not found: is ${world} a world folder (visplay-native world)?`);
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '').map((line, i) => {
    let v: LabelledItem & { image: string; family: string; id: string };
    try {
      v = JSON.parse(line) as typeof v;
    } catch (e) {
      throw new VisplayError('ERR_INVALID_ARG', `${path} line ${i + 1} is not JSON: ${(e as Error).message}`);
    }
    if (typeof v.image !== 'string' || typeof v.question !== 'string' || typeof v.answer !== 'string') {
      throw new VisplayError('ERR_INVALID_ARG', `${path} line ${i + 1} lacks image, question or answer`);
    }
    return { ...v, image: resolve(world, v.image) };
  });
}

/** Token ids of a target followed by the end-of-turn token, so the model learns to stop. */
function targetTokens(model: Model, text: string, endOfTurn: number): number[] {
  return [...model.tokenize(text, { special: false }), endOfTurn];
}

/** Seeded permutation of 0..n-1 for one epoch. */
function epochOrder(n: number, seed: number, epoch: number): number[] {
  const rng = new Rng(((seed * 2654435761) ^ (epoch * 40503)) >>> 0);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * Pre-trains `model` (the base, e.g. the world variant of the tiny model) on a world's labelled
 * split and writes the merged model to OUT/model.gguf. `model` must be loaded from `modelPath` /
 * `mmprojPath` (the merge copies those files). Resumes from OUT's last checkpoint when there is one.
 */
export async function pretrain(model: Model, files: { modelPath: string; mmprojPath: string }, options: PretrainOptions): Promise<PretrainSummary | null> {
  const world = resolve(check.nonEmptyString('world', options.world));
  const out = resolve(check.nonEmptyString('out', options.out));
  const epochs = check.optional(options.epochs, (v) => check.integer('epochs', v, 1, 1000)) ?? 3;
  const itemsPerStep = check.optional(options.itemsPerStep, (v) => check.integer('itemsPerStep', v, 1, 4096)) ?? 16;
  const rank = check.optional(options.rank, (v) => check.integer('rank', v, 1, 1024)) ?? 64;
  const alpha = check.optional(options.alpha, (v) => check.number('alpha', v, 1e-6, 1e6)) ?? rank;
  const projectorRank = check.optional(options.projectorRank, (v) => check.integer('projectorRank', v, 0, model.info.embeddingSize)) ?? 0;
  const lr = check.optional(options.lr, (v) => check.number('lr', v, 1e-9, 1)) ?? 1e-3;
  const seed = check.optional(options.seed, (v) => check.integer('seed', v, 0, 0xffffffff)) ?? 0;
  const checkpointEvery = check.optional(options.checkpointEvery, (v) => check.integer('checkpointEvery', v, 1, 1e6)) ?? 25;
  const limit = check.optional(options.limit, (v) => check.positiveInteger('limit', v));
  const microBatchTokens = check.optional(options.microBatchTokens, (v) => check.integer('microBatchTokens', v, 16, 1 << 20)) ?? 256;

  const all = readLabelled(world, 'pretrain.jsonl');
  const items = limit === undefined ? all : all.slice(0, limit);
  if (items.length === 0) throw new VisplayError('ERR_INVALID_ARG', `${world}/pretrain.jsonl has no items`);
  const stepsPerEpoch = Math.ceil(items.length / itemsPerStep);
  const steps = stepsPerEpoch * epochs;
  const data = createHash('sha256').update(readFileSync(join(world, 'pretrain.jsonl'))).digest('hex');
  const settings: PretrainSettings = { epochs, itemsPerStep, items: items.length, steps, rank, alpha, lr, seed, ...(projectorRank > 0 ? { projectorRank } : {}), data };

  mkdirSync(out, { recursive: true });
  const checkpoint = join(out, 'checkpoint');
  const statePath = join(out, 'state.json');
  const logPath = join(out, 'log.jsonl');
  let startStep = 0;
  let policy: Policy;
  const optimizer = { lr, schedule: 'cosine' as const, warmupSteps: Math.min(10, steps - 1), totalSteps: steps, minLrRatio: 0.1, weightDecay: 0, maxGradNorm: 1 };
  const loss = { kind: 'sft' as const, klCoef: 0, aggregation: 'token-mean' as const };
  if (existsSync(statePath) && existsSync(join(checkpoint, 'adapter.gguf'))) {
    const state = JSON.parse(readFileSync(statePath, 'utf8')) as { step: number; settings: PretrainSettings };
    if (JSON.stringify(state.settings) !== JSON.stringify(settings)) {
      throw new VisplayError('ERR_CHECKPOINT', `${out} holds a pre-training run with other settings or data; remove it or pick another --out`);
    }
    policy = await model.loadPolicy(checkpoint, { threads: options.threads, microBatchTokens, loss, optimizer });
    startStep = state.step;
    // Steps logged after the checkpoint are done again: drop them.
    if (existsSync(logPath)) {
      const kept = readFileSync(logPath, 'utf8').split('\n').filter((l) => l !== '' && (JSON.parse(l) as StepLog).step <= startStep);
      writeFileSync(logPath, kept.map((l) => `${l}\n`).join(''));
    }
  } else {
    rmSync(logPath, { force: true });
    policy = await model.createPolicy({ rank, alpha, seed, projectorRank, threads: options.threads, microBatchTokens, loss, optimizer });
  }

  const endOfTurn = model.tokenize('<|im_end|>', { special: true });
  if (endOfTurn.length !== 1) throw new VisplayError('ERR_UNSUPPORTED_MODEL', 'the model has no single <|im_end|> token (a Qwen2-family chat model is needed)');
  const images = new Map<string, DecodedImage>();
  const image = async (path: string) => {
    let d = images.get(path);
    if (!d) images.set(path, (d = await loadImage(path)));
    return d;
  };
  const family = 'default' as const;
  const started = performance.now();
  try {
    for (let step = startStep; step < steps; step++) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const order = epochOrder(items.length, seed, epoch);
      const slice = order.slice((step % stepsPerEpoch) * itemsPerStep, (step % stepsPerEpoch + 1) * itemsPerStep);
      const groups: TrainGroup[] = [];
      for (const [k, index] of slice.entries()) {
        const item = items[index]!;
        const img = await image(item.image);
        groups.push({
          messages: reasonerMessages(family, benchQuestion(item), item.type === 'numeric' ? 'numerical' : 'multiple choice', WORLD_PROMPTS),
          images: [img],
          samples: [{ tokens: targetTokens(model, reasonerTarget(item), endOfTurn[0]!), advantage: 1 }],
        });
        groups.push({
          messages: questionerMessages(family, WORLD_PROMPTS, (step + k) % 2 === 0 ? 'train' : 'generate'),
          images: [img],
          samples: [{ tokens: targetTokens(model, questionerTarget(item), endOfTurn[0]!), advantage: 1 }],
        });
      }
      const r = await policy.step(groups);
      appendFileSync(logPath, `${JSON.stringify({ step: step + 1, epoch, loss: r.loss, tokens: r.tokens, seconds: r.seconds } satisfies StepLog)}\n`);
      options.onStep?.({ step: step + 1, steps, epoch, loss: r.loss, tokens: r.tokens, tokensPerSecond: r.tokensPerSecond });
      if ((step + 1) % checkpointEvery === 0 || step + 1 === steps) {
        await policy.save(checkpoint);
        writeJsonAtomic(statePath, { step: step + 1, settings });
        if (options.signal?.aborted && step + 1 < steps) return null;
      }
    }
  } finally {
    policy.dispose();
  }

  const modelPath = join(out, 'model.gguf');
  const mmprojPath = join(out, 'mmproj.gguf');
  const mergedWeights = await mergeLora(files.modelPath, join(checkpoint, 'adapter.gguf'), modelPath);
  let mergedProjectorTensors = 0;
  if (projectorRank > 0) {
    mergedProjectorTensors = await mergeProjector(files.mmprojPath, checkpoint, mmprojPath);
  } else {
    copyFileSync(files.mmprojPath, `${mmprojPath}.tmp`);
    renameSync(`${mmprojPath}.tmp`, mmprojPath);
  }
  const log = readFileSync(logPath, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as StepLog);
  const tenth = Math.max(1, Math.floor(log.length / 10));
  const mean = (xs: StepLog[]) => xs.reduce((a, x) => a + x.loss, 0) / xs.length;
  const summary: PretrainSummary = {
    settings, modelPath, mmprojPath,
    firstLoss: mean(log.slice(0, tenth)), lastLoss: mean(log.slice(-tenth)),
    trainedTokens: log.reduce((a, x) => a + x.tokens, 0),
    seconds: (performance.now() - started) / 1000 + (startStep > 0 ? log.slice(0, startStep).reduce((a, x) => a + x.seconds, 0) : 0),
    mergedWeights, mergedProjectorTensors,
  };
  writeJsonAtomic(join(out, 'pretrain.json'), summary);
  return summary;
}
