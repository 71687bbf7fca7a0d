// What `visplay-native info` reports about model files, read from their GGUF headers alone: it works
// without the native addon and takes milliseconds even for multi-GB files.
import { detectChatFamily, type ChatFamily } from './chat.js';
import type { GgufFile, GgufValue } from './gguf.js';

export interface TensorTypeShare {
  type: string;
  /** Fraction of the tensor data bytes in this type. */
  share: number;
}

export interface FileSummary {
  path: string;
  fileSize: number;
  ggufVersion: number;
  tensorCount: number;
  parameterCount: number;
  /** Tensor types by share of the data, largest first (shows the quantization mix). */
  tensorTypes: TensorTypeShare[];
}

export interface ModelSummary extends FileSummary {
  architecture: string;
  name: string | null;
  embeddingSize: number | null;
  layerCount: number | null;
  headCount: number | null;
  headCountKv: number | null;
  contextLength: number | null;
  vocabSize: number | null;
  hasChatTemplate: boolean;
  chatFamily: ChatFamily;
}

export interface ProjectorSummary extends FileSummary {
  projectorType: string | null;
  projectionDim: number | null;
  imageSize: number | null;
  patchSize: number | null;
  visionEmbeddingSize: number | null;
  visionLayerCount: number | null;
}

export function summarizeModel(file: GgufFile): ModelSummary {
  const arch = stringAt(file, 'general.architecture') ?? 'unknown';
  const name = stringAt(file, 'general.name');
  const chatTemplate = stringAt(file, 'tokenizer.chat_template');
  return {
    ...summarizeFile(file),
    architecture: arch,
    name,
    embeddingSize: numberAt(file, `${arch}.embedding_length`),
    layerCount: numberAt(file, `${arch}.block_count`),
    headCount: numberAt(file, `${arch}.attention.head_count`),
    headCountKv: numberAt(file, `${arch}.attention.head_count_kv`),
    contextLength: numberAt(file, `${arch}.context_length`),
    vocabSize: arrayLengthAt(file, 'tokenizer.ggml.tokens'),
    hasChatTemplate: chatTemplate !== null,
    chatFamily: detectChatFamily({ architecture: arch, name: name ?? '', chatTemplate }),
  };
}

export function summarizeProjector(file: GgufFile): ProjectorSummary {
  return {
    ...summarizeFile(file),
    projectorType: stringAt(file, 'clip.vision.projector_type') ?? stringAt(file, 'clip.projector_type'),
    projectionDim: numberAt(file, 'clip.vision.projection_dim'),
    imageSize: numberAt(file, 'clip.vision.image_size'),
    patchSize: numberAt(file, 'clip.vision.patch_size'),
    visionEmbeddingSize: numberAt(file, 'clip.vision.embedding_length'),
    visionLayerCount: numberAt(file, 'clip.vision.block_count'),
  };
}

function summarizeFile(file: GgufFile): FileSummary {
  let parameterCount = 0;
  let dataBytes = 0;
  const bytesByType = new Map<string, number>();
  for (const t of file.tensors) {
    parameterCount += t.dims.reduce((a, b) => a * b, 1);
    dataBytes += t.size;
    bytesByType.set(t.type, (bytesByType.get(t.type) ?? 0) + t.size);
  }
  const tensorTypes = [...bytesByType]
    .map(([type, bytes]) => ({ type, share: dataBytes > 0 ? bytes / dataBytes : 0 }))
    .sort((a, b) => b.share - a.share);
  return {
    path: file.path,
    fileSize: file.fileSize,
    ggufVersion: file.version,
    tensorCount: file.tensorCount,
    parameterCount,
    tensorTypes,
  };
}

// Lenient accessors: a summary shows what is there and null for what is absent or unexpected
// (some architectures store per-layer arrays where others store one number).

function valueAt(file: GgufFile, key: string): GgufValue | undefined {
  return file.metadata.get(key);
}

function stringAt(file: GgufFile, key: string): string | null {
  const value = valueAt(file, key);
  return typeof value === 'string' ? value : null;
}

function numberAt(file: GgufFile, key: string): number | null {
  const value = valueAt(file, key);
  return typeof value === 'number' ? value : null;
}

function arrayLengthAt(file: GgufFile, key: string): number | null {
  const value = valueAt(file, key);
  return typeof value === 'object' ? value.length : null;
}
