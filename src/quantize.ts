// Transforms of a language-model GGUF, in the addon (no tool to build): quantizing with llama.cpp's
// own quantizer, and merging a LoRA adapter into its base (and a projector adapter into its mmproj).
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { VisplayError, callNative } from './errors.js';
import { inspectLanguageModel, inspectProjector } from './model-pair.js';
import { loadBinding, type QuantizationType } from './native.js';
import { readGguf } from './gguf-reader.js';
import { metaString } from './gguf-metadata.js';
import * as check from './validate.js';

export const QUANTIZATION_TYPES: readonly QuantizationType[] = ['f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m'];
export type { QuantizationType };

/**
 * Writes `output`, `input` with its weights in `type` (llama.cpp's rules: 1-D tensors stay F32,
 * tensors whose rows do not fit a k-quant's 256-wide blocks fall back to a compatible type).
 * The file appears under its name only when complete.
 */
export async function quantizeModel(input: string, output: string, type: QuantizationType, options: { threads?: number } = {}): Promise<void> {
  const inPath = resolve(check.string('input', input));
  const outPath = resolve(check.string('output', output));
  const t = check.oneOf('type', type, QUANTIZATION_TYPES);
  if (!existsSync(inPath)) throw new VisplayError('ERR_FILE_NOT_FOUND', `model file not found: ${inPath}`);
  if (!existsSync(dirname(outPath))) throw new VisplayError('ERR_OUTPUT', `the output folder does not exist: ${dirname(outPath)}`);
  const threads = options.threads === undefined ? 0 : check.integer('threads', options.threads, 1, 1024);
  await callNative(() => loadBinding().quantizeModel({ input: inPath, output: outPath, type: t, threads }));
}

/**
 * Writes `output`: the base model `base` with the LoRA adapter `adapter` (an adapter.gguf as
 * policy.save writes it, or a policy folder) folded in, W + (alpha / rank) B A, every other tensor and
 * key unchanged. Only F32, F16 and BF16 base weights take a merge (merge before quantizing). Both
 * headers are checked here before the addon reads them. Returns the number of merged weights.
 */
export async function mergeLora(base: string, adapter: string, output: string): Promise<number> {
  const basePath = resolve(check.nonEmptyString('base', base));
  let adapterPath = resolve(check.nonEmptyString('adapter', adapter));
  const outPath = resolve(check.nonEmptyString('output', output));
  if (existsSync(adapterPath) && statSync(adapterPath).isDirectory()) adapterPath = join(adapterPath, 'adapter.gguf');
  if (!existsSync(adapterPath)) throw new VisplayError('ERR_FILE_NOT_FOUND', `adapter file not found: ${adapterPath}`);
  if (!existsSync(dirname(outPath))) throw new VisplayError('ERR_OUTPUT', `the output folder does not exist: ${dirname(outPath)}`);
  if (outPath === basePath) throw new VisplayError('ERR_INVALID_ARG', 'mergeLora writes a new file: output must differ from base');
  await inspectLanguageModel(basePath, 'base');
  const file = await readGguf(adapterPath, { role: 'adapter', option: 'adapter' });
  if (metaString(file, 'general.type') !== 'adapter' || metaString(file, 'adapter.type') !== 'lora') {
    throw new VisplayError('ERR_CHECKPOINT', `${adapterPath} is not a LoRA adapter (general.type / adapter.type are not adapter / lora)`);
  }
  return callNative(() => loadBinding().mergeLora(basePath, adapterPath, outPath));
}

/**
 * Writes `output`: the mmproj `mmproj` with a policy's projector adapter (projector.gguf, from a
 * policy trained with `projectorRank`; or the policy folder) folded into its last linear layer,
 * W2' = (I + B A) W2 and b2' = (I + B A) b2, every other tensor and key unchanged. Qwen2-VL and
 * Qwen2.5-VL projectors only (their image rows are exactly that layer's output). Returns the number of
 * changed tensors.
 */
export async function mergeProjector(mmproj: string, adapter: string, output: string): Promise<number> {
  const mmprojPath = resolve(check.nonEmptyString('mmproj', mmproj));
  let adapterPath = resolve(check.nonEmptyString('adapter', adapter));
  const outPath = resolve(check.nonEmptyString('output', output));
  if (existsSync(adapterPath) && statSync(adapterPath).isDirectory()) adapterPath = join(adapterPath, 'projector.gguf');
  if (!existsSync(adapterPath)) throw new VisplayError('ERR_FILE_NOT_FOUND', `projector adapter not found: ${adapterPath} (was the policy trained with projectorRank?)`);
  if (!existsSync(dirname(outPath))) throw new VisplayError('ERR_OUTPUT', `the output folder does not exist: ${dirname(outPath)}`);
  if (outPath === mmprojPath) throw new VisplayError('ERR_INVALID_ARG', 'mergeProjector writes a new file: output must differ from mmproj');
  await inspectProjector(mmprojPath, 'mmproj');
  const file = await readGguf(adapterPath, { role: 'adapter', option: 'adapter' });
  if (metaString(file, 'adapter.type') !== 'visplay-projector') {
    throw new VisplayError('ERR_CHECKPOINT', `${adapterPath} is not a projector adapter (adapter.type is not visplay-projector)`);
  }
  return callNative(() => loadBinding().mergeProjector(mmprojPath, adapterPath, outPath));
}
