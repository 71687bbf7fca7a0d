// The one place that loads the addon and types it. Nothing else in src/ touches the binding directly.
//
// The addon is built by cmake-js into build/Release/visplay.node (`npm run build:native`). When it is
// missing or fails to load, the error lists concrete fixes built from what went wrong.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VisplayError } from './errors.js';

/** Package root (src/ or dist/ sit one level below it). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// ---- types of the binding -------------------------------------------------------------------

export interface NativeProjectorInfo {
  /** clip.projector_type as mtmd resolved it, e.g. "qwen2.5vl". */
  type: string;
  /** Output width of the projector (must equal the language model's input embedding size). */
  embeddingSize: number;
  imageSize: number;
  patchSize: number;
  usesMRope: boolean;
  /** Marker that stands for one image in a prompt (mtmd's media marker). */
  marker: string;
}

export interface NativeModelInfo {
  architecture: string;
  name: string;
  description: string;
  /** Context length the model was trained with. */
  trainContextSize: number;
  vocabSize: number;
  embeddingSize: number;
  layerCount: number;
  headCount: number;
  headCountKv: number;
  parameterCount: number;
  sizeBytes: number;
  /** tokenizer.chat_template from the GGUF, or null. */
  chatTemplate: string | null;
  /** End-of-generation tokens (eos, eot, im_end, ...). */
  eogTokens: number[];
  bosToken: number;
  eosToken: number;
  addBos: boolean;
  /** Weight tensors llama.cpp put in GPU memory (gpuLayers on a CUDA build); 0 on the CPU. */
  gpuWeightTensors: number;
  projector: NativeProjectorInfo;
}

export interface NativeLoadOptions {
  modelPath: string;
  mmprojPath: string;
  /** Layers to offload to the GPU (CUDA builds); 0 on CPU builds. */
  gpuLayers: number;
  threads: number;
  useGpuForVision: boolean;
  /** Image token budget (0 = the projector's default). */
  imageMinTokens: number;
  imageMaxTokens: number;
  /** Run mtmd's warm-up encode at load (reserves the compute buffer for the largest image). */
  warmup: boolean;
  repackWeights?: boolean;
}

export interface NativeImage {
  /** Content hash; equal keys are the same image and are encoded once. */
  key: string;
  width: number;
  height: number;
  /** width * height * 3 bytes, RGB. */
  rgb: Uint8Array;
}

export interface NativeRequest {
  /** Fully templated prompt; each image stands where `projector.marker` is. */
  prompt: string;
  /** Indices into NativeGenerateInput.images, in marker order. */
  images: number[];
  n: number;
  maxTokens: number;
  /** <= 0 means greedy. */
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  seed: number;
  /** Extra stop tokens besides the model's end-of-generation tokens. */
  stopTokens: number[];
  /** Generate maxTokens whatever is sampled (benchmarks). */
  ignoreEos?: boolean;
}

export interface NativeGenerateInput {
  images: NativeImage[];
  requests: NativeRequest[];
}

export type FinishReason = 'stop' | 'length';

export interface NativeSample {
  tokens: Int32Array;
  /** Log-prob of each sampled token under the unmodified model distribution (T = 1, no top-k/top-p). */
  logprobs: Float32Array;
  text: string;
  finish: FinishReason;
}

export interface NativeGenerateStats {
  imageEncodes: number;
  promptTokens: number;
  generatedTokens: number;
  decodeCalls: number;
  encodeMs: number;
  prefillMs: number;
  generateMs: number;
  /** Of generateMs: in llama_decode (and fetching the logits), and drawing tokens with their log-probs on the host. */
  decodeMs: number;
  sampleMs: number;
  maxLiveSequences: number;
}

export interface NativeGenerateResult {
  /** samples[r][i]: sample i of request r. */
  samples: NativeSample[][];
  stats: NativeGenerateStats;
}

export interface NativeScoreInput {
  images: NativeImage[];
  prompt: string;
  imageIndices: number[];
  /** Response tokens to score after the prompt. */
  tokens: Int32Array;
}

export interface NativeContextOptions {
  /** Total KV cells shared by all sequences. */
  contextSize: number;
  /** Maximum sequences that decode together. */
  parallel: number;
  batchSize: number;
  threads: number;
  /** -1 auto, 0 off, 1 on. */
  flashAttention: number;
  /** F32 instead of F16 KV cache. */
  kvCacheF32?: boolean;
}

export interface NativePromptInfo {
  /** KV cells the prompt occupies (text tokens + image tokens). */
  tokens: number;
  /** Positions it advances (differs from tokens under M-RoPE). */
  positions: number;
}

export interface NativeRolloutContext {
  readonly contextSize: number;
  readonly parallel: number;
  generate(input: NativeGenerateInput, onProgress?: (done: number, total: number, tokens: number) => void): Promise<NativeGenerateResult>;
  score(input: NativeScoreInput): Promise<Float32Array>;
  score(input: NativeScoreInput & { returnLogits: true }): Promise<{ logprobs: Float32Array; logits: Float32Array }>;
  /** Sample with this policy's live LoRA adapter from now on (null: the base model). */
  useLora(policy: NativePolicy | null): void;
  dispose(): void;
  readonly disposed: boolean;
}

// ---- training (native/src/policy.h) ----------------------------------------------------------

export interface NativePolicyOptions {
  rank: number;
  alpha: number;
  targets: string[];
  seed: number;
  threads: number;
  microBatchTokens: number;
  headChunk: number;
  contextSize: number;
  /** Rank of the image-row (projector) adapter, 0: none. */
  projectorRank: number;
  releaseBuffers: boolean;
  /** Products with frozen quantized weights on a GPU: 'bf16' tensor cores or llama.cpp's kernels. */
  frozenMatmul: 'bf16' | 'llama';
  /** A folder written by save(): rank, alpha, targets, weights, moments and step come from it. */
  resumeFrom?: string;
}

export interface NativeLossConfig {
  /** 'grpo' (default) or 'sft': supervised cross-entropy -logp, advantages ignored. */
  kind?: 'grpo' | 'sft';
  clipLow: number;
  clipHigh: number;
  dualClip: number;
  klCoef: number;
  aggregation: 'token-mean' | 'seq-mean-token-mean';
}

export interface NativeOptimizerConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  maxGradNorm: number;
  schedule: 'constant' | 'cosine';
  warmupSteps: number;
  totalSteps: number;
  minLrRatio: number;
}

export interface NativeTrainSample {
  tokens: Int32Array;
  /** Behaviour-policy log-probs, one per token; absent: the current policy's own. */
  logprobs?: Float32Array;
  advantage: number;
}

export interface NativeTrainGroup {
  prompt: string;
  images: number[];
  samples: NativeTrainSample[];
}

export interface NativeTrainBatch {
  images: NativeImage[];
  groups: NativeTrainGroup[];
}

export interface NativeRunStats {
  /** The aggregated loss: pgLoss + klCoef · kl (SFT: the mean -logp). */
  loss: number;
  pgLoss: number;
  /** The k3 estimate of KL to the reference policy, aggregated like the loss (0 when klCoef is 0). */
  kl: number;
  /** Share of tokens where the clipped branch won, and where the dual-clip cap did. */
  clipFraction: number;
  dualClipFraction: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Learning rate of this step (0 when nothing was applied). */
  lr: number;
  seconds: number;
  /** Response tokens trained on, and per second of the whole step. */
  tokens: number;
  tokensPerSecond: number;
  sequences: number;
  /** Rows of the packed graphs (prompts once per group plus responses) and their number. */
  packedRows: number;
  microBatches: number;
  imageEncodes: number;
  /** Optimizer steps taken by the policy so far, and steps skipped for non-finite values. */
  step: number;
  skippedSteps: number;
  /** False when the step was skipped (non-finite loss or gradient): nothing was updated. */
  applied: boolean;
  skipReason?: string;
}

export interface NativeRunResult extends NativeRunStats {
  logprobs: Float32Array[];
  refLogprobs?: Float32Array[];
  gradients?: Record<string, Float32Array>;
}

export interface NativePromptInputs {
  tokens: number;
  nextPosition: number;
  /** tokens * n_embd input embeddings (text rows and image embeddings). */
  embeddings: Float32Array;
  /** tokens values, or 4 * tokens stream-major (t, y, x, z) for M-RoPE. */
  positions: Int32Array;
  positionStreams: number;
}

export interface NativePolicyInfo {
  rank: number;
  alpha: number;
  scale: number;
  targets: string[];
  seed: number;
  contextSize: number;
  microBatchTokens: number;
  step: number;
  vocabularySize: number;
  architecture: string;
  parameters: number;
}

export interface NativePolicy {
  run(batch: NativeTrainBatch, options: { loss: NativeLossConfig; optimizer: NativeOptimizerConfig; apply: boolean; gradients: boolean }): Promise<NativeRunResult>;
  promptInputs(input: { images: NativeImage[]; prompt: string; imageIndices: number[] }): Promise<NativePromptInputs>;
  logits(input: { images: NativeImage[]; prompt: string; imageIndices: number[]; tokens: Int32Array }): Promise<Float32Array>;
  save(dir: string, optimizer: NativeOptimizerConfig): Promise<void>;
  tensorNames(): string[];
  tensorShape(name: string): number[];
  getTensor(name: string): Float32Array;
  setTensor(name: string, data: Float32Array): void;
  info(): NativePolicyInfo;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array | number[]): string;
  /** Tokens and positions of a templated prompt with its images (images need only width/height). */
  measurePrompt(prompt: string, images: Array<{ width: number; height: number }>): Promise<NativePromptInfo>;
  /** llama_chat_apply_template with the GGUF's template (for families without a registry entry). */
  applyChatTemplate(messages: Array<{ role: string; content: string }>, addAssistant: boolean): string;
  createContext(options: NativeContextOptions): Promise<NativeRolloutContext>;
  createPolicy(options: NativePolicyOptions): Promise<NativePolicy>;
  dispose(): void;
  readonly disposed: boolean;
}

export interface NativeTinyModelConfig {
  seed: number;
  vocabPath: string;
  modelPath: string;
  mmprojPath: string;
  embeddingSize: number;
  layerCount: number;
  headCount: number;
  headCountKv: number;
  feedForwardSize: number;
  contextLength: number;
  visionEmbeddingSize: number;
  visionLayerCount: number;
  visionHeadCount: number;
  visionFeedForwardSize: number;
  imageSize: number;
  patchSize: number;
  embeddingType?: 'f16' | 'f32';
  /** Std of the output head's rows (default 0.02). */
  outputStd?: number;
  /** Std of the language-model blocks' weight matrices (default 0.02). */
  blockStd?: number;
  /** Texts whose Qwen2 tokens the vocabulary keeps (absent: the whole 151,936-token vocabulary). */
  vocabularyTexts?: string[];
  chatTemplate: string;
}

export type QuantizationType = 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k_m';

export interface NativeBinding {
  systemInfo(): string;
  /** 0 = silent ... 4 = debug. Errors are always captured into thrown messages. */
  setLogLevel(level: number): void;
  /** Whether this build has ggml's CUDA backend and a device. */
  gpuInfo(): { cudaBuild: boolean; devices: Array<{ name: string; memoryTotal: number; memoryFree: number }> };
  loadModel(options: NativeLoadOptions): Promise<NativeModel>;
  makeTinyModel(config: NativeTinyModelConfig): Promise<void>;
  /** llama.cpp's quantizer (llama_model_quantize). */
  quantizeModel(options: { input: string; output: string; type: QuantizationType; threads?: number }): Promise<void>;
  /** Folds a LoRA adapter into a copy of its base GGUF (F32/F16/BF16 weights); the count of merged weights. */
  mergeLora(base: string, adapter: string, output: string): Promise<number>;
  mergeProjector(mmproj: string, adapter: string, output: string): Promise<number>;
  /** Count of live native objects (models, contexts) for lifecycle tests. */
  liveObjects(): { models: number; contexts: number; policies: number };
  /** Group-relative advantages (native/kernels): (r - mean) / (std + eps) per group, unbiased std. */
  groupAdvantages(rewards: Float32Array, groupSizes: Int32Array, eps: number): Float32Array;
}

// ---- loading ------------------------------------------------------------------------------

let cached: NativeBinding | undefined;

export function addonPath(): string {
  return process.env.VISPLAY_ADDON ?? join(PACKAGE_ROOT, 'build', 'Release', 'visplay.node');
}

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new VisplayError('ERR_ADDON_MISSING',
      `the native addon is not built (${path} does not exist). What to do:\n` +
      '  - run `npm ci` (fetches llama.cpp and builds the addon), or\n' +
      '  - run `npm run setup && npm run build:native` in the package folder');
  }
  try {
    const require = createRequire(import.meta.url);
    cached = require(path) as NativeBinding;
  } catch (e) {
    throw new VisplayError('ERR_ADDON_LOAD',
      `the native addon at ${path} failed to load: ${(e as Error).message}. What to do:\n` +
      '  - rebuild it for this Node.js version: `npm run build:native`\n' +
      '  - a CUDA build needs the CUDA runtime and cuBLAS libraries on the library path');
  }
  return cached;
}
