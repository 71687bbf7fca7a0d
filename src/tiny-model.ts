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

export type TinyModelConfig = typeof TINY_MODEL_CONFIG;

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

function configKey(seed: number, embeddingType: 'f16' | 'f32'): string {
  const extra = embeddingType === 'f16' ? {} : { embeddingType };  // f16 keys stay as before
  const h = createHash('sha256').update(JSON.stringify({ v: GENERATOR_VERSION, seed, config: TINY_MODEL_CONFIG, ...extra }));
  return h.digest('hex').slice(0, 16);
}

/**
 * Writes (or finds in the cache) the tiny model's language-model and mmproj GGUF files.
 * Safe to call from several processes at once: each writes into its own temporary folder, which is
 * renamed into place in one step; a loser of that race keeps the winner's identical files.
 */
export async function makeTinyModel(options: MakeTinyModelOptions = {}): Promise<TinyModelFiles> {
  const seed = options.seed === undefined ? 1 : check.integer('seed', options.seed, 0, 2 ** 32 - 1);
  const embeddingType = options.embeddingType === undefined ? 'f16' : check.oneOf('embeddingType', options.embeddingType, ['f16', 'f32'] as const);
  const dir = options.outDir ?? join(cacheDir(), `tiny-${configKey(seed, embeddingType)}`);
  const files = { modelPath: join(dir, 'tiny-qwen2.5-vl.gguf'), mmprojPath: join(dir, 'mmproj-tiny-qwen2.5-vl.gguf') };
  const stamp = join(dir, 'visplay-tiny.json');
  const wanted = JSON.stringify({ generator: GENERATOR_VERSION, seed, config: TINY_MODEL_CONFIG, ...(embeddingType === 'f16' ? {} : { embeddingType }) });
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted && existsSync(files.modelPath) && existsSync(files.mmprojPath)) {
    return { ...files, seed, config: TINY_MODEL_CONFIG, created: false };
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
      seed, vocabPath, chatTemplate: QWEN25VL_CHAT_TEMPLATE, ...TINY_MODEL_CONFIG, embeddingType,
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
  return { ...files, seed, config: TINY_MODEL_CONFIG, created: true };
}

/** Makes (or finds) the tiny model and loads it. */
export async function loadTinyModel(options: MakeTinyModelOptions & Omit<LoadModelOptions, 'model' | 'mmproj'> = {}): Promise<Model> {
  const { seed, outDir, embeddingType, ...load } = options;
  const files = await makeTinyModel({ seed, outDir, embeddingType });
  return Model.load({ ...load, model: files.modelPath, mmproj: files.mmprojPath });
}
