// Checks that a --model/--mmproj pair forms a vision-language model: a language model, a projector
// with a vision encoder, and image embeddings of the width the model takes. Read from the GGUF
// headers alone, before llama.cpp loads anything, so each mistake gets its own message.
import { VisplayError } from './errors.js';
import { describeFile } from './files.js';
import { metaBoolean, metaNumber, metaString } from './gguf-metadata.js';
import { readGguf, type GgufFile } from './gguf-reader.js';

export interface LanguageModelFile {
  file: GgufFile;
  /** general.architecture, e.g. "qwen2vl". */
  architecture: string;
  /** `${architecture}.embedding_length`: the width the projector must produce. */
  embeddingSize: number;
}

export interface ProjectorFile {
  file: GgufFile;
  /** clip.vision.projector_type / clip.projector_type, e.g. "qwen2.5vl"; null when the file does not say. */
  projectorType: string | null;
  /** clip.vision.projection_dim; null in files written before llama.cpp recorded it. */
  projectionDim: number | null;
}

export interface ModelPair {
  model: GgufFile;
  mmproj: GgufFile;
  architecture: string;
  embeddingSize: number;
  projectorType: string | null;
  projectionDim: number | null;
}

const MMPROJ_HELP = 'visplay-native needs a vision-language model: pass its mmproj file with --mmproj';

/** Reads `path` and checks it is a language model (not a projector, an adapter or a vocabulary). */
export async function inspectLanguageModel(path: string, option = '--model'): Promise<LanguageModelFile> {
  const file = await readGguf(path, { role: 'model file', option });
  const architecture = metaString(file, 'general.architecture');
  if (architecture === undefined) {
    throw new VisplayError('ERR_NOT_VLM', `${file.label} has no general.architecture; it is not a llama.cpp model`);
  }
  if (architecture === 'clip') {
    throw new VisplayError('ERR_NOT_VLM',
      `${file.label} is a vision projector (mmproj), not a language model: pass it with --mmproj and the language model with --model`);
  }
  if (metaString(file, 'general.type') === 'adapter') {
    throw new VisplayError('ERR_NOT_VLM',
      `${file.label} is a LoRA adapter, not a model: pass the base model with --model`);
  }
  const embeddingSize = metaNumber(file, `${architecture}.embedding_length`);
  if (embeddingSize === undefined) {
    throw new VisplayError('ERR_NOT_VLM',
      `${file.label} has no ${architecture}.embedding_length; it is not a language model`);
  }
  checkLanguageModelHeader(file, architecture, embeddingSize);
  return { file, architecture, embeddingSize };
}

/** Reads `path` and checks it is a projector (mmproj) with a vision encoder. */
export async function inspectProjector(path: string, option = '--mmproj'): Promise<ProjectorFile> {
  const file = await readGguf(path, { role: 'mmproj file', option });
  const architecture = metaString(file, 'general.architecture');
  if (architecture !== 'clip') {
    const isLanguageModel = architecture !== undefined && file.metadata.has(`${architecture}.embedding_length`);
    throw new VisplayError('ERR_NOT_VLM', isLanguageModel
      ? `${file.label} is a language model (${architecture}), not a vision projector: pass the mmproj file that belongs to the model`
      : `${file.label} is not a vision projector (its general.architecture is ${architecture === undefined ? 'missing' : `'${architecture}'`}, not 'clip')`);
  }
  if (metaBoolean(file, 'clip.has_vision_encoder') !== true) {
    const audioOnly = metaBoolean(file, 'clip.has_audio_encoder') === true ? ' (it is an audio projector)' : '';
    throw new VisplayError('ERR_NOT_VLM', `${file.label} has no vision encoder${audioOnly}; ${MMPROJ_HELP}`);
  }
  const projectorType = metaString(file, 'clip.vision.projector_type') ?? metaString(file, 'clip.projector_type')
    ?? (metaBoolean(file, 'clip.has_qwen2vl_merger') === true ? 'qwen2vl_merger' : null);
  checkProjectorHeader(file, projectorType);
  return { file, projectorType, projectionDim: metaNumber(file, 'clip.vision.projection_dim') ?? null };
}

/**
 * Checks that `modelPath` is a language model and `mmprojPath` its vision projector: the projector
 * must produce embeddings of the width the model takes. Files are read one after the other, so the
 * first problem reported is always the model's.
 */
export async function inspectModelPair(modelPath: string, mmprojPath: string): Promise<ModelPair> {
  const model = await inspectLanguageModel(modelPath);
  const projector = await inspectProjector(mmprojPath);
  if (projector.projectionDim !== null && projector.projectionDim !== model.embeddingSize) {
    throw new VisplayError('ERR_MMPROJ_MISMATCH',
      `${projector.file.label} produces ${projector.projectionDim}-dimensional image embeddings, but ` +
      `${model.file.label} takes ${model.embeddingSize}-dimensional ones: pass the mmproj file made for this model`);
  }
  return {
    model: model.file,
    mmproj: projector.file,
    architecture: model.architecture,
    embeddingSize: model.embeddingSize,
    projectorType: projector.projectorType,
    projectionDim: projector.projectionDim,
  };
}

/** The message for a --model given without --mmproj (shared by the CLI and the library). */
export function missingProjectorMessage(modelPath: string): string {
  return `${describeFile(modelPath, 'model file', '--model')} has no vision encoder; ${MMPROJ_HELP}`;
}

// ---- header values llama.cpp trusts -----------------------------------------------------------------
// A few hyperparameters reach llama.cpp's asserts and divisions before it compares them with the
// tensors, so a damaged or hand-edited header would abort the whole process (found by feeding it
// edited copies of the tiny model: test/native/hardening-bad-input.test.ts). Each is checked here,
// against the file's own tensors where they say what the value must be.

/** LLAMA_MAX_LAYERS: llama.cpp asserts 1 <= block_count <= this. */
const MAX_LAYERS = 512;

function corrupt(file: GgufFile, what: string): VisplayError {
  return new VisplayError('ERR_GGUF_CORRUPT', `${file.label} is corrupt: ${what}`);
}

function checkLayers(file: GgufFile, key: string): void {
  const blocks = metaNumber(file, key);
  if (blocks !== undefined && !(Number.isInteger(blocks) && blocks >= 1 && blocks <= MAX_LAYERS)) {
    throw corrupt(file, `${key} is ${blocks}; llama.cpp takes 1 to ${MAX_LAYERS} blocks`);
  }
}

function checkLanguageModelHeader(file: GgufFile, architecture: string, embeddingSize: number): void {
  checkLayers(file, `${architecture}.block_count`);
  // M-RoPE (qwen2vl): ggml asserts that a section is positive and divides by their sum.
  const key = `${architecture}.rope.dimension_sections`;
  const sections = file.metadata.get(key);
  if (typeof sections !== 'object' || sections.values === null) return;
  const values = sections.values.map(Number);
  const heads = file.metadata.get(`${architecture}.attention.head_count`);
  const rot = file.metadata.get(`${architecture}.rope.dimension_count`);
  const headWidth = typeof rot === 'number' ? rot : typeof heads === 'number' && heads > 0 ? embeddingSize / heads : Infinity;
  const sum = values.reduce((a, b) => a + b, 0);
  if (values.some((v) => !Number.isInteger(v) || v < 0) || values.slice(0, 3).every((v) => v === 0) || sum > headWidth) {
    throw corrupt(file, `${key} is [${values.join(', ')}]; M-RoPE needs sections of zero or more, not all zero, ` +
      `adding up to at most the head width ${headWidth}`);
  }
}

function checkProjectorHeader(file: GgufFile, projectorType: string | null): void {
  checkLayers(file, 'clip.vision.block_count');
  const width = metaNumber(file, 'clip.vision.embedding_length');
  const heads = metaNumber(file, 'clip.vision.attention.head_count');
  if (heads !== undefined && width !== undefined && !(Number.isInteger(heads) && heads >= 1 && width % heads === 0 && width / heads >= 4)) {
    throw corrupt(file, `clip.vision.attention.head_count is ${heads}, which does not split the ${width}-wide embedding into heads of 4 or more values`);
  }
  // The patch embedding is a convolution whose kernel is [patch, patch, 3 channels, width].
  const patchEmbedding = file.tensors.find((t) => t.name === 'v.patch_embd.weight');
  if (patchEmbedding?.dims.length === 4) {
    const [kw, kh, , out] = patchEmbedding.dims;
    const patch = metaNumber(file, 'clip.vision.patch_size');
    if (patch !== undefined && (kw !== patch || kh !== patch)) {
      throw corrupt(file, `clip.vision.patch_size is ${patch}, but the tensor v.patch_embd.weight takes ${kw}x${kh} patches`);
    }
    if (width !== undefined && out !== width) {
      throw corrupt(file, `clip.vision.embedding_length is ${width}, but the tensor v.patch_embd.weight makes ${out}-wide embeddings`);
    }
  }
  // Qwen2.5-VL: every n-th block attends fully, the others within windows; llama.cpp's graph needs
  // at least one windowed block (a pattern of 1 makes none, and it aborts).
  if (projectorType?.startsWith('qwen2.5vl') && metaNumber(file, 'clip.vision.n_wa_pattern') === 1) {
    throw corrupt(file, 'clip.vision.n_wa_pattern is 1 (no block attends within windows), which llama.cpp\'s Qwen2.5-VL encoder cannot run');
  }
}
