// Policy: LoRA adapters over a loaded model, trained with GRPO by the native engine
// (native/src/policy.h): forward, loss, backward and AdamW all run natively; this layer validates,
// renders prompts exactly as the rollout engine does, and keeps rollouts and updates apart.
import { VisplayError, callNative, fromNative } from './errors.js';
import { ImageCache } from './images.js';
import type { Model } from './model.js';
import type {
  NativeLossConfig, NativeOptimizerConfig, NativePolicy, NativePolicyInfo, NativePromptInputs, NativeRunStats, NativeTrainBatch, NativeTrainGroup,
} from './native.js';
import { BatchImages, preparePrompt, type PromptSpec } from './prompts.js';
import type { RolloutEngine } from './rollout.js';
import * as check from './validate.js';

/** The language-model linear layers LoRA can target (llama.cpp tensor names blk.N.<module>.weight). */
export const LORA_MODULES = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

export interface LossOptions {
  /**
   * 'grpo' (default): the policy-gradient loss; 'sft': supervised cross-entropy (mean -logp of the
   * samples' tokens, advantages ignored; set klCoef 0), for pre-training on labeled answers.
   */
  kind?: 'grpo' | 'sft';
  /** ρ is clipped to [1 - clipLow, 1 + clipHigh] (default 0.2 / 0.3, the official code's). */
  clipLow?: number;
  clipHigh?: number;
  /** For negative advantages the per-token loss is capped at -dualClip · A (default 3; 0 = off). */
  dualClip?: number;
  /** β of the k3 KL term to the reference policy (LoRA off); default 0.01, 0 skips the reference pass. */
  klCoef?: number;
  /** 'seq-mean-token-mean' (default: the official code's effective mode) or 'token-mean'. */
  aggregation?: 'token-mean' | 'seq-mean-token-mean';
}

export interface OptimizerOptions {
  /** Peak learning rate (default 1e-6, the official code's; LoRA usually wants 1e-5 to 1e-4). */
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm clip (default 1.0; 0 = off). */
  maxGradNorm?: number;
  schedule?: 'constant' | 'cosine';
  warmupSteps?: number;
  /** Cosine schedule: the step at which the rate reaches minLrRatio · lr. */
  totalSteps?: number;
  minLrRatio?: number;
}

export interface PolicyOptions {
  /** LoRA rank (default 8). */
  rank?: number;
  /** LoRA alpha (default 2 · rank); the delta is scaled by alpha / rank. */
  alpha?: number;
  /** Modules to adapt in every language-model block (default: all of LORA_MODULES). */
  targets?: LoraModule[];
  /** Seed of the LoRA initialisation (A Kaiming-uniform as PEFT, B zero). Default 0. */
  seed?: number;
  threads?: number;
  /** Packed rows per micro-batch graph; gradients accumulate across micro-batches (default 2048). */
  microBatchTokens?: number;
  /** Rows of the vocabulary head computed at once (bounds logits memory; default 256). */
  headChunk?: number;
  /** Longest prompt + response in positions (default: the model's training context). */
  contextSize?: number;
  /**
   * Rank of a trainable low-rank update of the image rows, x = e + B A e on the projector's output
   * (default 0: none). It extends the vision projector's last linear layer, into which
   * `mergeProjector` folds it exactly; until then the policy can train and score but not drive
   * rollouts (llama.cpp's LoRA does not reach the image rows).
   */
  projectorRank?: number;
  /**
   * Free the training graphs' compute buffers after every step (default false). They are allocated
   * again by the next step, so between steps the memory is free for rollouts: for a GPU that must
   * hold a round's rollouts and training in turn, at the cost of one allocation per buffer and step.
   */
  releaseBuffers?: boolean;
  /**
   * How a GPU multiplies by the model's frozen quantized weights (the trunk's linear layers forward
   * and backward, the head's backward). 'bf16' (default): dequantized to BF16 with the activations or
   * gradients rounded to BF16, tensor cores with F32 sums, as bf16 training in PyTorch. 'llama':
   * llama.cpp's own kernels, as rollouts use them (MMQ forward, activations rounded to 8 bits per
   * block of 32; TF32 backward). The CPU computes both the same way.
   */
  frozenMatmul?: 'bf16' | 'llama';
  loss?: LossOptions;
  optimizer?: OptimizerOptions;
}

export interface TrainSample {
  /** The sampled response's token ids (the rollout's sample.tokens). */
  tokens: ArrayLike<number>;
  /** Their log-probs under the policy that sampled them (sample.logprobs); omitted: ρ = 1. */
  logprobs?: ArrayLike<number>;
  advantage: number;
}

/** One prompt (as a rollout request gives it) and responses sampled from it. */
export interface TrainGroup extends PromptSpec {
  samples: TrainSample[];
}

/** What a step (or an evaluation) reports; see NativeRunStats for each field. */
export type StepResult = NativeRunStats;

export interface EvaluateResult extends StepResult {
  /** Per sequence (group-major), the current policy's log-probs of its tokens. */
  logprobs: number[][];
  /** The reference policy's (LoRA off), when klCoef > 0. */
  refLogprobs?: number[][];
  /** d loss / d tensor for every LoRA tensor, when asked for. */
  gradients?: Record<string, Float32Array>;
}

const DEFAULT_LOSS: NativeLossConfig = { clipLow: 0.2, clipHigh: 0.3, dualClip: 3, klCoef: 0.01, aggregation: 'seq-mean-token-mean' };
const DEFAULT_OPTIMIZER: NativeOptimizerConfig = {
  lr: 1e-6, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1, schedule: 'constant', warmupSteps: 0, totalSteps: 0, minLrRatio: 0,
};

export class Policy {
  readonly model: Model;
  readonly loss: NativeLossConfig;
  readonly optimizer: NativeOptimizerConfig;
  #native: NativePolicy | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #engines = new Set<RolloutEngine>();
  readonly #images = new ImageCache();

  private constructor(model: Model, native: NativePolicy, loss: NativeLossConfig, optimizer: NativeOptimizerConfig) {
    this.model = model;
    this.#native = native;
    this.loss = loss;
    this.optimizer = optimizer;
  }

  /** A fresh LoRA policy over `model`. */
  static async create(model: Model, options: PolicyOptions = {}): Promise<Policy> {
    const native = await callNative(() => model.nativeModel().createPolicy(nativeOptions(model, options)));
    return new Policy(model, native, lossConfig(options.loss), optimizerConfig(options.optimizer));
  }

  /** A policy saved by save(dir): LoRA weights, optimizer moments, step and RNG state, exactly. */
  static async load(model: Model, dir: string, options: Omit<PolicyOptions, 'rank' | 'alpha' | 'targets' | 'seed'> = {}): Promise<Policy> {
    check.string('dir', dir);
    const native = await callNative(() => model.nativeModel().createPolicy({ ...nativeOptions(model, options), resumeFrom: dir }));
    return new Policy(model, native, lossConfig(options.loss), optimizerConfig(options.optimizer));
  }

  get info(): NativePolicyInfo {
    return this.#policy().info();
  }

  /** One GRPO optimizer step on `groups` (gradients accumulate over micro-batches, then AdamW). */
  step(groups: TrainGroup[], options: { loss?: LossOptions; optimizer?: OptimizerOptions } = {}): Promise<StepResult> {
    return this.#exclusive(async () => {
      const batch = await this.#prepare(groups);
      const loss = { ...this.loss, ...lossConfig(options.loss, this.loss) };
      const optimizer = { ...this.optimizer, ...optimizerConfig(options.optimizer, this.optimizer) };
      const native = this.#policy();
      const r = await callNative(() => native.run(batch, { loss, optimizer, apply: true, gradients: false }));
      return stats(r);
    });
  }

  /** Loss, log-probs and (with gradients: true) d loss / d LoRA, without updating anything. */
  evaluate(groups: TrainGroup[], options: { loss?: LossOptions; gradients?: boolean } = {}): Promise<EvaluateResult> {
    return this.#exclusive(async () => {
      const batch = await this.#prepare(groups);
      const loss = { ...this.loss, ...lossConfig(options.loss, this.loss) };
      const native = this.#policy();
      const r = await callNative(() => native.run(batch, { loss, optimizer: this.optimizer, apply: false, gradients: options.gradients === true }));
      return {
        ...stats(r),
        logprobs: r.logprobs.map((a) => Array.from(a)),
        refLogprobs: r.refLogprobs?.map((a) => Array.from(a)),
        gradients: r.gradients,
      };
    });
  }

  /** The training graph's logits [rows][vocab] at every position of the prompt followed by `tokens`. */
  logits(prompt: PromptSpec, tokens: ArrayLike<number> = []): Promise<Float32Array> {
    return this.#exclusive(async () => {
      const batch = new BatchImages(this.#images);
      const p = await preparePrompt(this.model, batch, prompt, 'prompt');
      const ids = this.#tokens('tokens', tokens, true);
      const native = this.#policy();
      return callNative(() => native.logits({ images: batch.images, prompt: p.prompt, imageIndices: p.images, tokens: ids }));
    });
  }

  /** The prompt's input embeddings and (M-)RoPE positions as the training graph sees them. */
  promptInputs(prompt: PromptSpec): Promise<NativePromptInputs> {
    return this.#exclusive(async () => {
      const batch = new BatchImages(this.#images);
      const p = await preparePrompt(this.model, batch, prompt, 'prompt');
      const native = this.#policy();
      return callNative(() => native.promptInputs({ images: batch.images, prompt: p.prompt, imageIndices: p.images }));
    });
  }

  /** Writes adapter.gguf (loadable by llama.cpp's --lora) and optimizer.gguf into `dir`, atomically. */
  save(dir: string): Promise<void> {
    check.string('dir', dir);
    return this.#exclusive(async () => {
      const native = this.#policy();
      await callNative(() => native.save(dir, this.optimizer));
    });
  }

  tensorNames(): string[] {
    return this.#policy().tensorNames();
  }

  tensorShape(name: string): number[] {
    return callNativeSync(() => this.#policy().tensorShape(check.string('name', name)));
  }

  getTensor(name: string): Float32Array {
    return callNativeSync(() => this.#policy().getTensor(check.string('name', name)));
  }

  /** Overwrites one LoRA tensor (attached rollout engines see it at their next call). */
  setTensor(name: string, data: ArrayLike<number>): Promise<void> {
    return this.#exclusive(async () => {
      const values = Float32Array.from(check.arrayOf('data', Array.from(data), (n, v) => check.number(n, v, -Number.MAX_VALUE, Number.MAX_VALUE)));
      callNativeSync(() => this.#policy().setTensor(check.string('name', name), values));
    });
  }

  /**
   * Makes `engine` sample with this policy's adapter, updated in place by every step: no file, no
   * reload. Steps and that engine's calls then run one at a time, so a rollout never sees a
   * half-written update.
   */
  async attach(engine: RolloutEngine): Promise<void> {
    await engine.useLora(this);
    this.#engines.add(engine);
    engine.onDispose(() => this.#engines.delete(engine));
  }

  /** Stops `engine` from using this policy (it samples from the base model again). */
  async detach(engine: RolloutEngine): Promise<void> {
    if (!this.#engines.delete(engine)) return;
    await engine.useLora(null);
  }

  /** @internal the native object, for RolloutEngine.useLora. */
  native(): NativePolicy {
    return this.#policy();
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** Frees the LoRA tensors and optimizer state; a call in flight finishes first. Idempotent. */
  dispose(): void {
    if (!this.#native) return;
    this.#native.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  #policy(): NativePolicy {
    if (!this.#native) throw new VisplayError('ERR_DISPOSED', 'the policy is disposed');
    if (this.model.disposed) throw new VisplayError('ERR_DISPOSED', 'the model of this policy is disposed');
    return this.#native;
  }

  /** Runs `task` after earlier calls, and inside the queue of every attached engine. */
  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const engines = [...this.#engines];
    const wrapped = engines.reduce<() => Promise<T>>((inner, engine) => () => engine.runExclusive(inner), task);
    const run = this.#queue.then(wrapped, wrapped);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #tokens(name: string, tokens: ArrayLike<number>, allowEmpty = false): Int32Array {
    const vocab = this.model.info.vocabSize;
    const ids = check.arrayOf(name, Array.from(tokens as ArrayLike<number>), (n, v) => check.integer(n, v, 0, vocab - 1));
    if (!allowEmpty && ids.length === 0) throw new VisplayError('ERR_INVALID_ARG', `${name} must not be empty`);
    return Int32Array.from(ids);
  }

  async #prepare(groups: TrainGroup[]): Promise<NativeTrainBatch> {
    this.#policy();
    if (!Array.isArray(groups)) throw new VisplayError('ERR_INVALID_ARG', `Expected array for groups but received ${typeof groups}`);
    if (groups.length === 0) throw new VisplayError('ERR_INVALID_ARG', 'groups must not be empty');
    const batch = new BatchImages(this.#images);
    const out: NativeTrainGroup[] = [];
    for (const [g, group] of groups.entries()) {
      const at = `groups[${g}]`;
      const p = await preparePrompt(this.model, batch, group, at);
      if (!Array.isArray(group.samples) || group.samples.length === 0) throw new VisplayError('ERR_INVALID_ARG', `${at}.samples must be a non-empty array`);
      const samples = group.samples.map((s, i) => {
        const sat = `${at}.samples[${i}]`;
        if (typeof s !== 'object' || s === null) throw new VisplayError('ERR_INVALID_ARG', `Expected object for ${sat}`);
        const tokens = this.#tokens(`${sat}.tokens`, s.tokens);
        const advantage = check.number(`${sat}.advantage`, s.advantage, -Number.MAX_VALUE, Number.MAX_VALUE);
        if (s.logprobs === undefined) return { tokens, advantage };
        const logprobs = Float32Array.from(check.arrayOf(`${sat}.logprobs`, Array.from(s.logprobs), (n, v) => check.number(n, v, -Infinity, 0)));
        if (logprobs.length !== tokens.length) {
          throw new VisplayError('ERR_INVALID_ARG', `${sat}: ${logprobs.length} log-probs for ${tokens.length} tokens (one per token)`);
        }
        return { tokens, logprobs, advantage };
      });
      out.push({ prompt: p.prompt, images: p.images, samples });
    }
    return { images: batch.images, groups: out };
  }
}

function callNativeSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e);
  }
}

function stats(r: StepResult): StepResult {
  const { loss, pgLoss, kl, clipFraction, dualClipFraction, gradNorm, lr, seconds, tokens, tokensPerSecond, sequences, packedRows, microBatches,
    imageEncodes, step, skippedSteps, applied, skipReason } = r;
  return { loss, pgLoss, kl, clipFraction, dualClipFraction, gradNorm, lr, seconds, tokens, tokensPerSecond, sequences, packedRows, microBatches,
    imageEncodes, step, skippedSteps, applied, ...(skipReason ? { skipReason } : {}) };
}

function nativeOptions(model: Model, o: PolicyOptions) {
  if (typeof o !== 'object' || o === null) throw new VisplayError('ERR_INVALID_ARG', 'policy options must be an object');
  const rank = o.rank === undefined ? 8 : check.integer('rank', o.rank, 1, 4096);
  const alpha = o.alpha === undefined ? 2 * rank : check.number('alpha', o.alpha, Number.MIN_VALUE, 1e6);
  const targets = o.targets === undefined ? [...LORA_MODULES] : check.arrayOf('targets', o.targets, (n, v) => check.oneOf(n, v, LORA_MODULES));
  if (targets.length === 0) throw new VisplayError('ERR_INVALID_ARG', 'targets must name at least one module');
  const contextSize = o.contextSize === undefined ? 0 : check.integer('contextSize', o.contextSize, 16, model.info.trainContextSize);
  return {
    rank, alpha, targets,
    seed: o.seed === undefined ? 0 : check.integer('seed', o.seed, 0, Number.MAX_SAFE_INTEGER),
    threads: o.threads === undefined ? 0 : check.integer('threads', o.threads, 1, 1024),
    microBatchTokens: o.microBatchTokens === undefined ? 2048 : check.integer('microBatchTokens', o.microBatchTokens, 16, 1 << 20),
    headChunk: o.headChunk === undefined ? 256 : check.integer('headChunk', o.headChunk, 1, 1 << 16),
    contextSize,
    projectorRank: o.projectorRank === undefined ? 0 : check.integer('projectorRank', o.projectorRank, 0, model.info.embeddingSize),
    releaseBuffers: o.releaseBuffers === undefined ? false : check.boolean('releaseBuffers', o.releaseBuffers),
    frozenMatmul: o.frozenMatmul === undefined ? 'bf16' as const : check.oneOf('frozenMatmul', o.frozenMatmul, ['bf16', 'llama'] as const),
  };
}

function lossConfig(o: LossOptions | undefined, base: NativeLossConfig = DEFAULT_LOSS): NativeLossConfig {
  if (o === undefined) return { ...base };
  if (typeof o !== 'object' || o === null) throw new VisplayError('ERR_INVALID_ARG', 'loss options must be an object');
  return {
    kind: o.kind === undefined ? (base.kind ?? 'grpo') : check.oneOf('loss.kind', o.kind, ['grpo', 'sft'] as const),
    clipLow: o.clipLow === undefined ? base.clipLow : check.number('loss.clipLow', o.clipLow, 0, 1),
    clipHigh: o.clipHigh === undefined ? base.clipHigh : check.number('loss.clipHigh', o.clipHigh, 0, 100),
    dualClip: o.dualClip === undefined ? base.dualClip : check.number('loss.dualClip', o.dualClip, 0, 1e6),
    klCoef: o.klCoef === undefined ? base.klCoef : check.number('loss.klCoef', o.klCoef, 0, 1e6),
    aggregation: o.aggregation === undefined ? base.aggregation : check.oneOf('loss.aggregation', o.aggregation, ['token-mean', 'seq-mean-token-mean'] as const),
  };
}

function optimizerConfig(o: OptimizerOptions | undefined, base: NativeOptimizerConfig = DEFAULT_OPTIMIZER): NativeOptimizerConfig {
  if (o === undefined) return { ...base };
  if (typeof o !== 'object' || o === null) throw new VisplayError('ERR_INVALID_ARG', 'optimizer options must be an object');
  const c: NativeOptimizerConfig = {
    lr: o.lr === undefined ? base.lr : check.number('optimizer.lr', o.lr, 0, 10),
    beta1: o.beta1 === undefined ? base.beta1 : check.number('optimizer.beta1', o.beta1, 0, 0.999999),
    beta2: o.beta2 === undefined ? base.beta2 : check.number('optimizer.beta2', o.beta2, 0, 0.999999999),
    eps: o.eps === undefined ? base.eps : check.number('optimizer.eps', o.eps, 1e-30, 1),
    weightDecay: o.weightDecay === undefined ? base.weightDecay : check.number('optimizer.weightDecay', o.weightDecay, 0, 10),
    maxGradNorm: o.maxGradNorm === undefined ? base.maxGradNorm : check.number('optimizer.maxGradNorm', o.maxGradNorm, 0, 1e12),
    schedule: o.schedule === undefined ? base.schedule : check.oneOf('optimizer.schedule', o.schedule, ['constant', 'cosine'] as const),
    warmupSteps: o.warmupSteps === undefined ? base.warmupSteps : check.integer('optimizer.warmupSteps', o.warmupSteps, 0, 1e12),
    totalSteps: o.totalSteps === undefined ? base.totalSteps : check.integer('optimizer.totalSteps', o.totalSteps, 0, 1e12),
    minLrRatio: o.minLrRatio === undefined ? base.minLrRatio : check.number('optimizer.minLrRatio', o.minLrRatio, 0, 1),
  };
  if (c.schedule === 'cosine' && c.totalSteps <= c.warmupSteps) {
    throw new VisplayError('ERR_INVALID_ARG', 'optimizer.totalSteps must exceed warmupSteps for the cosine schedule');
  }
  return c;
}

/**
 * Training groups from a rollout: requests[r]'s prompt with result.samples[r], sample i of request
 * r weighted by advantages[r][i] (e.g. from groupAdvantages). The shapes must agree exactly.
 */
export function groupsFromRollout(requests: PromptSpec[], samples: Array<Array<{ tokens: ArrayLike<number>; logprobs?: ArrayLike<number> }>>,
  advantages: ArrayLike<ArrayLike<number>>): TrainGroup[] {
  if (!Array.isArray(requests) || !Array.isArray(samples)) throw new VisplayError('ERR_INVALID_ARG', 'requests and samples must be arrays');
  if (requests.length !== samples.length || advantages.length !== samples.length) {
    throw new VisplayError('ERR_INVALID_ARG',
      `${requests.length} requests, ${samples.length} sample lists and ${advantages.length} advantage lists: they must be equal in number`);
  }
  return requests.map((request, r) => {
    const adv = advantages[r]!;
    const list = samples[r]!;
    if (adv.length !== list.length) {
      throw new VisplayError('ERR_INVALID_ARG', `request ${r} has ${list.length} samples but ${adv.length} advantages`);
    }
    const { messages, prompt, images } = request;
    return {
      messages, prompt, images,
      samples: list.map((s, i) => ({ tokens: s.tokens, logprobs: s.logprobs, advantage: adv[i]! })),
    };
  });
}
