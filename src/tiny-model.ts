// The embedded tiny VLM: generated deterministically from a seed by the addon (ggml's gguf writer),
// never downloaded, cached by (generator version, seed, config) under the user's cache folder.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { QWEN25VL_CHAT_TEMPLATE } from './chat.js';
import { VisplayError, callNative } from './errors.js';
import { Model, type LoadModelOptions } from './model.js';
import { PACKAGE_ROOT, loadBinding } from './native.js';
import * as check from './validate.js';

/** Bump when the generator's output changes, so cached files are made anew. */
const GENERATOR_VERSION = 1;

/** Shapes of the tiny model (see native/src/tiny_model.h for why each value is what it is). */
export const TINY_MODEL_CONFIG = {
  embeddingSize: 128,
  layerCount: 2,
  headCount: 4,
  headCountKv: 2,
  feedForwardSize: 384,
  contextLength: 4096,
  visionEmbeddingSize: 64,
  visionLayerCount: 2,
  visionHeadCount: 4,
  visionFeedForwardSize: 96,
  imageSize: 560,
  patchSize: 14,
} as const;

/** The shapes as numbers, plus the init scales of the output head and of the blocks' matrices (native defaults 0.02). */
export type TinyModelConfig = { -readonly [K in keyof typeof TINY_MODEL_CONFIG]: number } & { outputStd?: number; blockStd?: number };

/**
 * The world model of issue 7: the tiny model with 4 layers instead of 2 (the vocabulary head, not the
 * blocks, dominates a step's cost, so depth is cheap) and an output head of std 0.25 instead of 0.02.
 * At 0.02 behind a unit-weight RMSNorm no logit can pass 0.02 * 128 = 2.6, so sampling stays
 * near-uniform over 151,936 tokens whatever the blocks learn; at 0.25 a learned direction reaches
 * logits of ~32 while a random competitor's stay within ~12 (4.3 sd of 0.25 * sqrt(128)).
 * Its blocks' matrices are drawn at std 0.088 = 1/sqrt(128) instead of 0.02: at 0.02 each matrix
 * shrinks its input to 0.23 of its scale, attention starts uniform, and a LoRA on that base did not
 * learn to read a colour from the image or to match a word against a list in 225 steps; at 0.088
 * it did (bench/world-diagnostics.ts, docs/world.md).
 */
export const WORLD_MODEL_SHAPE: Partial<TinyModelConfig> = { layerCount: 4, outputStd: 0.25, blockStd: 0.088 };

export interface TinyModelFiles {
  modelPath: string;
  mmprojPath: string;
  seed: number;
  config: TinyModelConfig;
  /** Whether this call wrote the files (false: they were already cached). */
  created: boolean;
}

export interface MakeTinyModelOptions {
  seed?: number;
  /** Folder for the two files; default: the cache folder, one subfolder per (seed, config). */
  outDir?: string;
  /**
   * Storage of the token embedding and output head: 'f16' (default) or 'f32', for tests that
   * compare against float32 references without F16 rounding in the head's matmuls.
   */
  embeddingType?: 'f16' | 'f32';
  /** Shapes to change from TINY_MODEL_CONFIG (e.g. WORLD_MODEL_SHAPE); part of the cache key. */
  shape?: Partial<TinyModelConfig>;
  /**
   * Texts whose Qwen2 tokens the vocabulary keeps (e.g. worldVocabularyTexts()): the embedding and
   * head get one row per kept token instead of 151,936, and these texts tokenize exactly as with the
   * full vocabulary (other text falls back towards byte tokens). Part of the cache key.
   */
  vocabularyTexts?: readonly string[];
}

/** The cache folder: $VISPLAY_CACHE_DIR, else $XDG_CACHE_HOME/visplay-native, else ~/.cache/visplay-native. */
export function cacheDir(): string {
  if (process.env.VISPLAY_CACHE_DIR) return process.env.VISPLAY_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'visplay-native');
}

export function vocabularyPath(): string {
  return join(PACKAGE_ROOT, 'native', 'vendor', 'llama.cpp', 'models', 'ggml-vocab-qwen2.gguf');
}

/** sha256 of a vocabulary's texts (part of the cache key and the stamp). */
function vocabularyKey(texts: readonly string[]): string {
  const h = createHash('sha256');
  for (const t of texts) h.update(t).update('\0');
  return h.digest('hex').slice(0, 16);
}

/**
 * What sets a model apart from the default F16, full-vocabulary one: absent keys for those, so that
 * cached models of the defaults keep their folders and stamps.
 */
function variantOf(embeddingType: 'f16' | 'f32', vocabulary: string | undefined): { embeddingType?: 'f32'; vocabulary?: string } {
  return { ...(embeddingType === 'f16' ? {} : { embeddingType }), ...(vocabulary === undefined ? {} : { vocabulary }) };
}

function configKey(seed: number, config: TinyModelConfig, variant: ReturnType<typeof variantOf>): string {
  const h = createHash('sha256').update(JSON.stringify({ v: GENERATOR_VERSION, seed, config, ...variant }));
  return h.digest('hex').slice(0, 16);
}

/** TINY_MODEL_CONFIG with `shape` applied; each value checked (the native writer trusts them). */
function resolveShape(shape: Partial<TinyModelConfig> | undefined): TinyModelConfig {
  const config: TinyModelConfig = { ...TINY_MODEL_CONFIG };
  for (const [key, value] of Object.entries(shape ?? {})) {
    if (value === undefined) continue;
    if (key === 'outputStd') config.outputStd = check.number('shape.outputStd', value, 1e-6, 100);
    else if (key === 'blockStd') config.blockStd = check.number('shape.blockStd', value, 1e-6, 100);
    else if (key in TINY_MODEL_CONFIG) config[key as keyof typeof TINY_MODEL_CONFIG] = check.integer(`shape.${key}`, value, 1, 1 << 16);
    else throw check.invalidArg('shape', `only keys of TINY_MODEL_CONFIG, outputStd or blockStd`, key);
  }
  if (config.embeddingSize % config.headCount !== 0 || config.headCount % config.headCountKv !== 0) {
    throw check.invalidArg('shape', 'embeddingSize divisible by headCount, headCount by headCountKv', shape);
  }
  return config;
}

/**
 * Writes (or finds in the cache) the tiny model's language-model and mmproj GGUF files.
 * Safe to call from several processes at once: each writes into its own temporary folder, which is
 * renamed into place in one step; a loser of that race keeps the winner's identical files.
 */
export async function makeTinyModel(options: MakeTinyModelOptions = {}): Promise<TinyModelFiles> {
  const seed = options.seed === undefined ? 1 : check.integer('seed', options.seed, 0, 2 ** 32 - 1);
  const embeddingType = options.embeddingType === undefined ? 'f16' : check.oneOf('embeddingType', options.embeddingType, ['f16', 'f32'] as const);
  const config = resolveShape(options.shape);
  const texts = options.vocabularyTexts === undefined ? undefined
    : check.arrayOf('vocabularyTexts', options.vocabularyTexts, check.string);
  if (texts !== undefined && texts.length === 0) throw check.invalidArg('vocabularyTexts', 'at least one text', texts);
  const variant = variantOf(embeddingType, texts === undefined ? undefined : vocabularyKey(texts));
  const dir = options.outDir ?? join(cacheDir(), `tiny-${configKey(seed, config, variant)}`);
  const files = { modelPath: join(dir, 'tiny-qwen2.5-vl.gguf'), mmprojPath: join(dir, 'mmproj-tiny-qwen2.5-vl.gguf') };
  const stamp = join(dir, 'visplay-tiny.json');
  const wanted = JSON.stringify({ generator: GENERATOR_VERSION, seed, config, ...variant });
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted && existsSync(files.modelPath) && existsSync(files.mmprojPath)) {
    return { ...files, seed, config, created: false };
  }
  const vocabPath = vocabularyPath();
  if (!existsSync(vocabPath)) {
    throw new VisplayError('ERR_FILE_NOT_FOUND',
      `the Qwen2 vocabulary ${vocabPath} is missing; run \`npm run setup\` to fetch the pinned llama.cpp`);
  }
  const tmp = `${dir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    mkdirSync(tmp, { recursive: true });
  } catch (e) {
    throw new VisplayError('ERR_OUTPUT', `cannot create the folder ${tmp}: ${(e as Error).message}`);
  }
  try {
    const binding = loadBinding();
    await callNative(() => binding.makeTinyModel({
      seed, vocabPath, chatTemplate: QWEN25VL_CHAT_TEMPLATE, ...config, embeddingType, ...(texts === undefined ? {} : { vocabularyTexts: [...texts] }),
      modelPath: join(tmp, 'tiny-qwen2.5-vl.gguf'), mmprojPath: join(tmp, 'mmproj-tiny-qwen2.5-vl.gguf'),
    }));
    writeFileSync(join(tmp, 'visplay-tiny.json'), wanted);
    if (options.outDir !== undefined && existsSync(dir)) {
      // A user-chosen folder may hold other files: move ours in one by one (each rename is atomic).
      for (const name of ['tiny-qwen2.5-vl.gguf', 'mmproj-tiny-qwen2.5-vl.gguf', 'visplay-tiny.json']) {
        renameSync(join(tmp, name), join(dir, name));
      }
    } else {
      try {
        renameSync(tmp, dir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;  // another process won the race
      }
    }
  } catch (e) {
    if (e instanceof VisplayError) throw e;
    throw new VisplayError('ERR_OUTPUT', `cannot write the tiny model to ${dir}: ${(e as Error).message}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { ...files, seed, config, created: true };
}

/** Makes (or finds) the tiny model and loads it. */
export async function loadTinyModel(options: MakeTinyModelOptions & Omit<LoadModelOptions, 'model' | 'mmproj'> = {}): Promise<Model> {
  const { seed, outDir, embeddingType, shape, vocabularyTexts, ...load } = options;
  const files = await makeTinyModel({ seed, outDir, embeddingType, shape, vocabularyTexts });
  return Model.load({ ...load, model: files.modelPath, mmproj: files.mmprojPath });
}
