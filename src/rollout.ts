// RolloutEngine: batched multimodal generation over one model, all per-token work native.
//
// A call turns requests (chat messages + images) into templated prompts and decoded RGB images,
// deduplicates the images by content hash, and hands the batch to the native engine, which encodes
// each distinct image once, evaluates each prompt once, fans it out to n samples through the KV
// cache, and decodes every live sample in one llama_decode per step.
import { randomInt } from 'node:crypto';
import { VisplayError, callNative } from './errors.js';
import { ImageCache } from './images.js';
import type { Model } from './model.js';
import type { Policy } from './policy.js';
import type { FinishReason, NativeGenerateStats, NativeImage, NativeRequest, NativeRolloutContext } from './native.js';
import { BatchImages, preparePrompt, type PromptSpec } from './prompts.js';
import * as check from './validate.js';

export type { ImageInput } from './prompts.js';

export interface RolloutRequest extends PromptSpec {
  /** Samples to draw from this prompt (default 1). */
  n?: number;
  /** Most tokens per sample (default 256). */
  maxTokens?: number;
  /** Sampling temperature (default 1; 0 = greedy). */
  temperature?: number;
  /** Nucleus mass (default 1 = off). */
  topP?: number;
  /** Top-k (default 0 = off). */
  topK?: number;
  /** Seed of this request's samples (default: random). Sample i draws from hash(seed, i). */
  seed?: number;
  /** Extra stop strings, each of which must be a single token of the vocabulary. */
  stopTokens?: number[];
  /** Keep generating past end-of-turn tokens up to maxTokens (for benchmarks). */
  ignoreEos?: boolean;
}

export interface Sample {
  text: string;
  tokens: number[];
  /** Log-prob of each token under the unmodified model distribution (T = 1, no top-k/top-p). */
  logprobs: number[];
  finish: FinishReason;
}

export interface RolloutStats extends NativeGenerateStats {
  wallMs: number;
  /** Distinct images in the batch (equals imageEncodes: each is encoded once). */
  distinctImages: number;
}

export interface RolloutResult {
  /** samples[r][i]: sample i of request r. */
  samples: Sample[][];
  stats: RolloutStats;
}

export interface RolloutOptions {
  /** KV cells shared by all sequences (default: min(8192, the model's training context)). */
  contextSize?: number;
  /** Sequences decoded together (default 8). */
  parallel?: number;
  /** Tokens per llama_decode call during prompt evaluation (default 512). */
  batchSize?: number;
  threads?: number;
  /**
   * Flash attention: 'off' (default), 'on' or 'auto'. Off by default because llama.cpp's CPU
   * flash attention rounds Q and the V accumulator to F16, so a sample's log-probs then depend on
   * which other sequences share the batch (measured up to 3e-4 on the tiny model, against 1e-5
   * with it off); GRPO's old-policy log-probs must not.
   */
  flashAttention?: 'auto' | 'on' | 'off';
  /**
   * KV cache precision: 'f16' (default, llama.cpp's) or 'f32' (twice the memory; log-probs then
   * match the F32 training graph to float rounding).
   */
  kvCacheType?: 'f16' | 'f32';
  /** Downscale larger images to at most this many pixels before the projector sees them. */
  maxImagePixels?: number;
}

export interface GenerateOptions {
  onProgress?: (progress: { done: number; total: number; tokens: number }) => void;
}

interface PreparedBatch {
  images: NativeImage[];
  requests: NativeRequest[];
}

export class RolloutEngine {
  readonly model: Model;
  readonly options: Required<Omit<RolloutOptions, 'threads' | 'maxImagePixels' | 'flashAttention' | 'kvCacheType'>> & { maxImagePixels?: number };
  #native: NativeRolloutContext | undefined;
  /** Calls run one after another on the one KV cache; this is the tail of that queue. */
  #queue: Promise<unknown> = Promise.resolve();
  readonly #disposeListeners: Array<() => void> = [];
  /** Decoded images by content hash, across calls: an image used in every round decodes once. */
  readonly #images = new ImageCache();

  private constructor(model: Model, native: NativeRolloutContext, options: RolloutEngine['options']) {
    this.model = model;
    this.#native = native;
    this.options = options;
  }

  /** @internal use model.createRollout(). */
  static async create(model: Model, options: RolloutOptions): Promise<RolloutEngine> {
    const contextSize = options.contextSize === undefined
      ? Math.min(8192, model.info.trainContextSize || 8192)
      : check.integer('contextSize', options.contextSize, 64, 1 << 20);
    const parallel = options.parallel === undefined ? 8 : check.integer('parallel', options.parallel, 1, 128);
    const batchSize = options.batchSize === undefined ? 512 : check.integer('batchSize', options.batchSize, 1, 65536);
    const threads = options.threads === undefined ? 0 : check.integer('threads', options.threads, 1, 1024);
    const maxImagePixels = options.maxImagePixels === undefined ? undefined : check.integer('maxImagePixels', options.maxImagePixels, 64, 1 << 28);
    const flashAttention = { auto: -1, off: 0, on: 1 }[options.flashAttention === undefined ? 'off' : check.oneOf('flashAttention', options.flashAttention, ['auto', 'on', 'off'] as const)];
    const nativeModel = model.nativeModel();
    const native = await callNative(() => nativeModel.createContext({
      contextSize, parallel, batchSize, threads, flashAttention,
      kvCacheF32: options.kvCacheType === undefined ? false : check.oneOf('kvCacheType', options.kvCacheType, ['f16', 'f32'] as const) === 'f32',
    }));
    // llama.cpp rounds the cache up to a multiple of 256 cells: report what it really holds.
    return new RolloutEngine(model, native, { contextSize: native.contextSize, parallel, batchSize, maxImagePixels });
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /**
   * Samples every request's n answers. Calls on one engine queue behind each other (one KV cache);
   * use several engines for concurrent batches.
   */
  generate(requests: RolloutRequest[], options: GenerateOptions = {}): Promise<RolloutResult> {
    return this.#enqueue(async () => {
      const started = performance.now();
      const batch = await this.#prepare(requests);
      const native = this.#context();
      const onProgress = options.onProgress;
      const result = await callNative(() => native.generate(batch,
        onProgress ? (done, total, tokens) => onProgress({ done, total, tokens }) : undefined));
      const samples = result.samples.map((rs) => rs.map((s) => ({
        text: s.text, tokens: Array.from(s.tokens), logprobs: Array.from(s.logprobs), finish: s.finish,
      })));
      return { samples, stats: { ...result.stats, wallMs: performance.now() - started, distinctImages: batch.images.length } };
    });
  }

  /**
   * Log-probs of `tokens` as the answer to `request`'s conversation, computed alone in one sequence
   * (the reference the batched loop's log-probs are tested against).
   */
  score(request: Omit<RolloutRequest, 'n' | 'maxTokens' | 'temperature' | 'topP' | 'topK' | 'seed'>, tokens: readonly number[]): Promise<number[]> {
    return this.#enqueue(async () => Array.from((await this.#score(request, tokens, false)).logprobs));
  }

  /**
   * llama_decode's raw logits for `tokens` after the prompt, computed alone in one sequence:
   * row 0 at the prompt's last token, row j at token j-1 ([tokens.length][vocab]). The
   * independent reference the training graph's logits are tested against.
   */
  scoreLogits(request: PromptSpec, tokens: readonly number[]): Promise<Float32Array> {
    return this.#enqueue(async () => (await this.#score(request, tokens, true)).logits!);
  }

  async #score(request: PromptSpec, tokens: readonly number[], returnLogits: boolean): Promise<{ logprobs: Float32Array; logits?: Float32Array }> {
    // Checked here, not only natively: Int32Array.from would silently truncate 1.5 to 1 and wrap
    // 2 ** 32 + 5 to 5, scoring a token the caller never named.
    this.#context();
    const ids = check.arrayOf('tokens', tokens, (name, v) => check.integer(name, v, 0, this.model.info.vocabSize - 1));
    const batch = await this.#prepare([{ ...request, n: 1, maxTokens: 1 }]);
    const native = this.#context();
    const req = batch.requests[0]!;
    const input = { images: batch.images, prompt: req.prompt, imageIndices: req.images, tokens: Int32Array.from(ids) };
    if (returnLogits) return callNative(() => native.score({ ...input, returnLogits: true }));
    return { logprobs: await callNative(() => native.score(input)) };
  }

  /**
   * Samples with `policy`'s live LoRA adapter from the next call on (null: the base model).
   * Prefer policy.attach(engine), which also keeps the policy's updates and this engine's calls apart.
   */
  useLora(policy: Policy | null): Promise<void> {
    return this.#enqueue(async () => {
      const native = this.#context();
      const p = policy === null ? null : policy.native();
      if (policy !== null && policy.model !== this.model) throw new VisplayError('ERR_INVALID_ARG', 'the policy belongs to another model');
      await callNative(() => native.useLora(p));
    });
  }

  /** @internal Runs `task` in this engine's queue: no generate or score call overlaps it. */
  runExclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.#enqueue(task);
  }

  /** Registers a callback run once on dispose (the model uses it to forget its engines). */
  onDispose(listener: () => void): void {
    this.#disposeListeners.push(listener);
  }

  /** Frees the KV cache. Work in flight finishes on memory it holds; later calls reject. Idempotent. */
  dispose(): void {
    if (!this.#native) return;
    this.#native.dispose();
    this.#native = undefined;
    for (const listener of this.#disposeListeners.splice(0)) listener();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  #context(): NativeRolloutContext {
    if (!this.#native) throw new VisplayError('ERR_DISPOSED', 'the rollout engine is disposed');
    if (this.model.disposed) throw new VisplayError('ERR_DISPOSED', 'the model of this rollout engine is disposed');
    return this.#native;
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Validates requests, renders prompts, decodes and deduplicates images. */
  async #prepare(requests: RolloutRequest[]): Promise<PreparedBatch> {
    this.#context();
    if (!Array.isArray(requests)) throw new VisplayError('ERR_INVALID_ARG', `Expected array for requests but received ${typeof requests}`);
    const batch = new BatchImages(this.#images, this.options.maxImagePixels);
    const out: NativeRequest[] = [];
    for (const [r, request] of requests.entries()) {
      const at = `requests[${r}]`;
      if (typeof request !== 'object' || request === null) throw new VisplayError('ERR_INVALID_ARG', `Expected object for ${at} but received ${request === null ? 'null' : typeof request}`);
      const n = request.n === undefined ? 1 : check.integer(`${at}.n`, request.n, 1, 4096);
      const maxTokens = request.maxTokens === undefined ? 256 : check.integer(`${at}.maxTokens`, request.maxTokens, 1, 1 << 20);
      const temperature = request.temperature === undefined ? 1 : check.number(`${at}.temperature`, request.temperature, 0, 100);
      const topP = request.topP === undefined ? 1 : check.number(`${at}.topP`, request.topP, 0, 1);
      const topK = request.topK === undefined ? 0 : check.integer(`${at}.topK`, request.topK, 0, 1 << 24);
      const seed = request.seed === undefined ? randomInt(0, 2 ** 47) : check.integer(`${at}.seed`, request.seed, 0, Number.MAX_SAFE_INTEGER);
      const { prompt, images: indices } = await preparePrompt(this.model, batch, request, at);
      const stopTokens = request.stopTokens === undefined ? [] : check.arrayOf(`${at}.stopTokens`, request.stopTokens,
        (name, v) => check.integer(name, v, 0, this.model.info.vocabSize - 1));
      out.push({ prompt, images: indices, n, maxTokens, temperature, topP, topK, seed, stopTokens, ignoreEos: request.ignoreEos === true });
    }
    return { images: batch.images, requests: out };
  }
}
