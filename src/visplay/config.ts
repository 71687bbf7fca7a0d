// Every setting of a VisPlay run, its default (the official code's where it has one, VISPLAY.md)
// and its check. The CLI's flags map one to one onto these fields; a run folder stores them all,
// so `--resume` continues with exactly the settings the run started with.
import { VisplayError } from '../errors.js';
import * as check from '../validate.js';

export interface EvolveConfig {
  iterations: number;
  /** Optimizer steps of the Questioner per iteration (official: 40 for 3B, 20 for 7B). */
  questionerSteps: number;
  /** Optimizer steps of the Reasoner per iteration. */
  reasonerSteps: number;
  /** Questions per image while training the Questioner, and answers per question while training the Reasoner (G). */
  groupSize: number;
  /** Reasoner samples per question for the Questioner's reward (m, official 10). */
  votes: number;
  /** Reasoner samples per candidate when labelling (official 9). */
  labelVotes: number;
  /** Images per Questioner step and questions per Reasoner step (official 512; a workstation default). */
  imagesPerStep: number;
  /** Images the Questioner writes candidates for after training (official: the first 1000). */
  candidateImages: number;
  /** Candidates per image (official: 8 workers, one question each). */
  candidatesPerImage: number;
  /** 'first': the first candidateImages images every iteration (official); 'shuffle': a fresh draw per iteration. */
  candidateSelection: 'first' | 'shuffle';
  /** Keep candidates with band[0] <= confidence <= band[1]. */
  band: [number, number];
  /** 'min': min(c, 1 - c) (the official code); 'r-zero': 1 - 2|c - 1/2|. */
  uncertaintyReward: 'min' | 'r-zero';
  /** The Reasoner's format reward requires <think>...</think> before the box (the official code's). */
  requireThink: boolean;
  /**
   * Control experiment: each step's rewards are shuffled across all its samples (both roles) before
   * the advantages, so the updates keep their size but lose what the rewards said. Default false.
   */
  shuffleRewards: boolean;
  loraRank: number;
  loraAlpha: number;
  lr: number;
  klCoef: number;
  clipLow: number;
  clipHigh: number;
  weightDecay: number;
  maxGradNorm: number;
  /** Most new tokens of a question (official 2048) and of an answer (official 4096). */
  questionerMaxTokens: number;
  reasonerMaxTokens: number;
  /** Sampling: rollouts T = 1; top-p 0.99 in training, 0.95 for candidates; labelling top-k 40. */
  temperature: number;
  trainTopP: number;
  candidateTopP: number;
  labelTopK: number;
  /** Sequences decoded together and KV cells per rollout engine. */
  parallel: number;
  contextSize: number;
  /** Downscale larger images to this many pixels (official minimum 262144). */
  maxImagePixels: number;
  seed: number;
  threads: number;
  /**
   * Language-model layers on the GPU on a CUDA build: -1 all of them (then the trainer runs there
   * too, as the rollouts do), 0 none (everything on the CPU). Ignored on a CPU build.
   */
  gpuLayers: number;
  /**
   * Packed rows per training micro-batch (the trainer's activation memory grows with it; a
   * Qwen2.5-VL-3B Q4 round fits in 8 GB of GPU memory at 256, docs/gpu.md). Default 2048.
   */
  microBatchTokens: number;
  /** Free the trainers' compute buffers after every step, so the rollouts get that memory back. Default false. */
  releaseBuffers: boolean;
  /** Prompt family ('qwen2.5-vl', 'mimo-vl', 'default') and an optional JSON file of prompt overrides. */
  promptFamily: string;
  promptFile?: string;
  /** Evaluation benchmark (JSONL) run after every iteration. */
  eval?: string;
  evalLimit?: number;
}

export const DEFAULT_EVOLVE_CONFIG: EvolveConfig = {
  iterations: 3,
  questionerSteps: 20,
  reasonerSteps: 20,
  groupSize: 8,
  votes: 10,
  labelVotes: 9,
  imagesPerStep: 8,
  candidateImages: 1000,
  candidatesPerImage: 8,
  candidateSelection: 'first',
  band: [0.3, 0.8],
  uncertaintyReward: 'min',
  requireThink: true,
  shuffleRewards: false,
  loraRank: 16,
  loraAlpha: 32,
  // The official 1e-6 is for full fine-tuning; a LoRA delta starts at zero and is scaled by
  // alpha / rank, and moves too little at that rate. 1e-5 is the usual LoRA-GRPO rate.
  lr: 1e-5,
  klCoef: 0.01,
  clipLow: 0.2,
  clipHigh: 0.3,
  weightDecay: 0.01,
  maxGradNorm: 1,
  questionerMaxTokens: 2048,
  reasonerMaxTokens: 4096,
  temperature: 1,
  trainTopP: 0.99,
  candidateTopP: 0.95,
  labelTopK: 40,
  parallel: 16,
  contextSize: 16384,
  maxImagePixels: 262144,
  seed: 0,
  threads: 0,
  gpuLayers: -1,
  microBatchTokens: 2048,
  releaseBuffers: false,
  promptFamily: 'auto',
};

/** Fills defaults and checks every field; throws VisplayError(ERR_INVALID_ARG) naming the field. */
export function resolveConfig(partial: Partial<EvolveConfig>): EvolveConfig {
  const c = { ...DEFAULT_EVOLVE_CONFIG, ...Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) } as EvolveConfig;
  check.integer('iterations', c.iterations, 1, 1000);
  check.integer('questionerSteps', c.questionerSteps, 0, 1e6);
  check.integer('reasonerSteps', c.reasonerSteps, 0, 1e6);
  check.integer('groupSize', c.groupSize, 2, 1024);
  check.integer('votes', c.votes, 1, 1024);
  check.integer('labelVotes', c.labelVotes, 1, 1024);
  check.integer('imagesPerStep', c.imagesPerStep, 1, 1e6);
  check.integer('candidateImages', c.candidateImages, 1, 1e9);
  check.integer('candidatesPerImage', c.candidatesPerImage, 1, 1024);
  check.oneOf('candidateSelection', c.candidateSelection, ['first', 'shuffle'] as const);
  if (!Array.isArray(c.band) || c.band.length !== 2) throw new VisplayError('ERR_INVALID_ARG', 'band must be two numbers, low and high (e.g. 0.3,0.8)');
  check.number('band[0]', c.band[0], 0, 1);
  check.number('band[1]', c.band[1], 0, 1);
  if (c.band[0] > c.band[1]) throw new VisplayError('ERR_INVALID_ARG', `band: the low end ${c.band[0]} is above the high end ${c.band[1]}`);
  check.oneOf('uncertaintyReward', c.uncertaintyReward, ['min', 'r-zero'] as const);
  check.boolean('requireThink', c.requireThink);
  check.boolean('shuffleRewards', c.shuffleRewards);
  check.integer('loraRank', c.loraRank, 1, 4096);
  check.number('loraAlpha', c.loraAlpha, Number.MIN_VALUE, 1e6);
  check.number('lr', c.lr, 0, 10);
  check.number('klCoef', c.klCoef, 0, 1e6);
  check.number('clipLow', c.clipLow, 0, 1);
  check.number('clipHigh', c.clipHigh, 0, 100);
  check.number('weightDecay', c.weightDecay, 0, 10);
  check.number('maxGradNorm', c.maxGradNorm, 0, 1e12);
  check.integer('questionerMaxTokens', c.questionerMaxTokens, 1, 1 << 20);
  check.integer('reasonerMaxTokens', c.reasonerMaxTokens, 1, 1 << 20);
  check.number('temperature', c.temperature, 0, 100);
  check.number('trainTopP', c.trainTopP, 0, 1);
  check.number('candidateTopP', c.candidateTopP, 0, 1);
  check.integer('labelTopK', c.labelTopK, 0, 1 << 24);
  check.integer('parallel', c.parallel, 1, 128);
  check.integer('contextSize', c.contextSize, 256, 1 << 22);
  check.integer('maxImagePixels', c.maxImagePixels, 64, 1 << 30);
  check.integer('seed', c.seed, 0, Number.MAX_SAFE_INTEGER);
  check.integer('threads', c.threads, 0, 1024);
  check.integer('gpuLayers', c.gpuLayers, -1, 100000);
  check.integer('microBatchTokens', c.microBatchTokens, 16, 1 << 20);
  check.boolean('releaseBuffers', c.releaseBuffers);
  check.string('promptFamily', c.promptFamily);
  if (c.promptFile !== undefined) check.string('promptFile', c.promptFile);
  if (c.eval !== undefined) check.string('eval', c.eval);
  if (c.evalLimit !== undefined) check.integer('evalLimit', c.evalLimit, 1, 1e9);
  return c;
}
