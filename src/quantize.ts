// Quantizing a language-model GGUF with llama.cpp's own quantizer (in the addon, no tool to build).
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { VisplayError, callNative } from './errors.js';
import { loadBinding, type QuantizationType } from './native.js';
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
