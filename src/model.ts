// Model: a GGUF language model plus its mmproj (vision projector), loaded natively in a worker thread.
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { detectChatFamily, renderWith, type ChatFamily, type ChatMessage } from './chat.js';
import { VisplayError, callNative } from './errors.js';
import { inspectModelPair } from './gguf.js';
import { loadBinding, type NativeModel, type NativeModelInfo } from './native.js';
import { Policy, type PolicyOptions } from './policy.js';
import { RolloutEngine, type RolloutOptions } from './rollout.js';
import * as check from './validate.js';

export interface LoadModelOptions {
  /** Language-model GGUF (e.g. Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf). */
  model: string;
  /** Its mmproj GGUF (vision tower + projector), as llama.cpp's converter writes it. */
  mmproj: string;
  /**
   * Layers offloaded to the GPU on a CUDA build (default: all there are; ignored on CPU builds).
   * Rollouts run there, and so does the trainer when every layer and the output head are there
   * (all layers, the default); `createPolicy` on a model split between CPU and GPU fails with
   * ERR_GPU_WEIGHTS. With 0 the trainer runs on the CPU.
   */
  gpuLayers?: number;
  /** Encode images with the vision tower on the GPU on a CUDA build (default true). */
  useGpuForVision?: boolean;
  /** CPU threads (default: the machine's available parallelism). */
  threads?: number;
  /** Image token budget per image (default: the projector's own). */
  imageMinTokens?: number;
  imageMaxTokens?: number;
  /** Run mtmd's warm-up encode at load (reserves the vision compute buffer up front). */
  warmup?: boolean;
  /**
   * Let llama.cpp repack quantized weights into its faster CPU layouts (default true). Training
   * reads the weights in place and cannot use that layout: load with false to train on a
   * quantized model (Q4_0, Q8_0, IQ4_NL, ...); F32/F16/BF16 weights are never repacked.
   */
  repackWeights?: boolean;
}

export interface ModelInfo extends NativeModelInfo {
  chatFamily: ChatFamily;
  modelPath: string;
  mmprojPath: string;
}

export interface RenderOptions {
  /** Append the assistant turn's opening (default true). */
  addGenerationPrompt?: boolean;
}

export class Model {
  readonly info: ModelInfo;
  #native: NativeModel | undefined;
  readonly #engines = new Set<RolloutEngine>();
  readonly #policies = new Set<Policy>();

  private constructor(native: NativeModel, info: ModelInfo) {
    this.#native = native;
    this.info = info;
  }

  /**
   * Loads a model pair. The GGUF headers are checked in TypeScript first, so a wrong file gets a
   * clear error (not GGUF, truncated, text-only, mismatched projector) instead of reaching
   * llama.cpp's asserts.
   */
  static async load(options: LoadModelOptions): Promise<Model> {
    const modelPath = resolve(check.nonEmptyString('model', options?.model));
    const mmprojPath = resolve(check.nonEmptyString('mmproj', options?.mmproj));
    const gpuLayers = options.gpuLayers === undefined ? 999 : check.integer('gpuLayers', options.gpuLayers, 0, 100000);
    const threads = options.threads === undefined ? availableParallelism() : check.integer('threads', options.threads, 1, 1024);
    const imageMinTokens = options.imageMinTokens === undefined ? 0 : check.integer('imageMinTokens', options.imageMinTokens, 1, 65536);
    const imageMaxTokens = options.imageMaxTokens === undefined ? 0 : check.integer('imageMaxTokens', options.imageMaxTokens, 1, 65536);
    await inspectModelPair(modelPath, mmprojPath);
    const binding = loadBinding();
    const native = await callNative(() => binding.loadModel({
      modelPath, mmprojPath, gpuLayers, threads, imageMinTokens, imageMaxTokens,
      useGpuForVision: options.useGpuForVision === undefined ? true : check.boolean('useGpuForVision', options.useGpuForVision),
      warmup: options.warmup ?? false,
      repackWeights: options.repackWeights === undefined ? true : check.boolean('repackWeights', options.repackWeights),
    }));
    const nativeInfo = native.info();
    const info: ModelInfo = { ...nativeInfo, chatFamily: detectChatFamily(nativeInfo), modelPath, mmprojPath };
    return new Model(native, info);
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** @internal the binding object, for the rollout engine. */
  nativeModel(): NativeModel {
    if (!this.#native) throw new VisplayError('ERR_DISPOSED', 'the model is disposed');
    return this.#native;
  }

  tokenize(text: string, options: { special?: boolean } = {}): number[] {
    check.string('text', text);
    return Array.from(this.nativeModel().tokenize(text, false, options.special ?? false));
  }

  detokenize(tokens: readonly number[]): string {
    return this.nativeModel().detokenize([...tokens]);
  }

  /** The prompt text for a conversation, with one image marker per image part. */
  renderChat(messages: ChatMessage[], options: RenderOptions = {}): string {
    const native = this.nativeModel();
    return renderWith(this.info.chatFamily, messages,
      { marker: this.info.projector.marker, addGenerationPrompt: options.addGenerationPrompt ?? true },
      (msgs, addAssistant) => native.applyChatTemplate(msgs, addAssistant));
  }

  /** A rollout engine (its own KV cache) over this model. */
  async createRollout(options: RolloutOptions = {}): Promise<RolloutEngine> {
    const engine = await RolloutEngine.create(this, options);
    this.#engines.add(engine);
    engine.onDispose(() => this.#engines.delete(engine));
    return engine;
  }

  /** A fresh LoRA policy over this model, trained with GRPO natively (see policy.ts). */
  async createPolicy(options: PolicyOptions = {}): Promise<Policy> {
    return this.#track(await Policy.create(this, options));
  }

  /** A policy saved by policy.save(dir), restored exactly (weights, moments, step, RNG state). */
  async loadPolicy(dir: string, options: Parameters<typeof Policy.load>[2] = {}): Promise<Policy> {
    return this.#track(await Policy.load(this, dir, options));
  }

  #track(policy: Policy): Policy {
    this.#policies.add(policy);
    return policy;
  }

  /**
   * Frees the model. Engines and policies made from it are disposed first; native work already in flight
   * finishes on memory it still holds. Idempotent.
   */
  dispose(): void {
    for (const engine of [...this.#engines]) engine.dispose();
    for (const policy of this.#policies) policy.dispose();
    this.#policies.clear();
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}
