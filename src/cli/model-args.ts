// The --model/--mmproj pair every model-loading command takes: both, or neither (the embedded tiny
// model); checked before anything loads.
import { VisplayError } from '../errors.js';
import { missingProjectorMessage } from '../gguf.js';
import type { Model } from '../model.js';
import * as is from '../validate.js';

export interface ModelFiles {
  model: string;
  mmproj: string;
}

/** The pair from the flags; null for the tiny model. A model without its projector is not a VLM. */
export function parseModelFiles(argv: { model?: unknown; mmproj?: unknown }): ModelFiles | null {
  const model = is.optional(argv.model, (v) => is.nonEmptyString('model', v));
  const mmproj = is.optional(argv.mmproj, (v) => is.nonEmptyString('mmproj', v));
  if (model !== undefined && mmproj === undefined) throw new VisplayError('ERR_NOT_VLM', missingProjectorMessage(model));
  if (mmproj !== undefined && model === undefined) throw new VisplayError('ERR_INVALID_ARG', '--mmproj needs the --model it belongs to');
  return model !== undefined && mmproj !== undefined ? { model, mmproj } : null;
}

/** Loads the pair, or the tiny model. Imported lazily: the addon loads only for commands that need it. */
export async function loadModelFiles(files: ModelFiles | null, load: { threads?: number; gpuLayers?: number }): Promise<Model> {
  if (files === null) {
    const { loadTinyModel } = await import('../tiny-model.js');
    return loadTinyModel(load);
  }
  const { Model } = await import('../model.js');
  return Model.load({ ...load, model: files.model, mmproj: files.mmproj });
}
