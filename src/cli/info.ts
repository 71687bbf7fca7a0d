// `visplay-native info --model M [--mmproj P] [--json]`: what the model files are, read from their
// GGUF headers alone (no addon needed), and whether they form a vision-language model.
import type { CommandModule } from 'yargs';
import { inspectLanguageModel, inspectModelPair } from '../gguf.js';
import { summarizeModel, summarizeProjector, type ModelSummary, type ProjectorSummary } from '../model-summary.js';
import * as is from '../validate.js';
import { formatBytes, formatCount, formatFields, formatShares, plural } from './format.js';

export interface InfoArgs {
  model: string;
  mmproj?: string;
  json: boolean;
}

export interface InfoReport {
  model: ModelSummary;
  /** null when no --mmproj was given. */
  mmproj: ProjectorSummary | null;
}

export const infoCommand: CommandModule<object, InfoArgs> = {
  command: 'info',
  describe: 'Describe a model and its vision projector from their GGUF headers',
  builder: (yargs) => yargs
    .option('model', { type: 'string', demandOption: true, describe: 'language-model GGUF file' })
    .option('mmproj', { type: 'string', describe: 'its vision projector (mmproj) GGUF file' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document' })
    .example('$0 info --model qwen2.5-vl-7b-q4_k_m.gguf --mmproj mmproj-qwen2.5-vl-7b-f16.gguf', ''),
  handler: async (argv) => {
    const report = await inspect(is.nonEmptyString('model', argv.model), is.optional(argv.mmproj, (v) => is.nonEmptyString('mmproj', v)));
    process.stdout.write(argv.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  },
};

async function inspect(modelPath: string, mmprojPath: string | undefined): Promise<InfoReport> {
  if (mmprojPath === undefined) {
    return { model: summarizeModel((await inspectLanguageModel(modelPath)).file), mmproj: null };
  }
  const pair = await inspectModelPair(modelPath, mmprojPath);
  return { model: summarizeModel(pair.model), mmproj: summarizeProjector(pair.mmproj) };
}

function formatReport({ model, mmproj }: InfoReport): string {
  const lines = [
    `model   ${model.path}`,
    formatFields([
      ['architecture', model.architecture],
      ['name', model.name],
      ['parameters', `${formatCount(model.parameterCount)} in ${plural(model.tensorCount, 'tensor')}`],
      ['size', `${formatBytes(model.fileSize)} (${formatShares(model.tensorTypes)})`],
      ['embedding size', model.embeddingSize],
      ['layers', model.layerCount],
      ['heads', model.headCount === null ? null : `${model.headCount} (${model.headCountKv ?? model.headCount} for keys/values)`],
      ['context length', model.contextLength],
      ['vocabulary', model.vocabSize === null ? null : plural(model.vocabSize, 'token')],
      ['chat template', `${model.chatFamily}${model.hasChatTemplate ? '' : ' (the file has none)'}`],
      ['GGUF version', model.ggufVersion],
    ]),
  ];
  if (mmproj) {
    lines.push(
      `mmproj  ${mmproj.path}`,
      formatFields([
        ['projector', mmproj.projectorType],
        ['projection size', mmproj.projectionDim],
        ['image size', mmproj.imageSize],
        ['patch size', mmproj.patchSize],
        ['vision width', mmproj.visionEmbeddingSize],
        ['vision layers', mmproj.visionLayerCount],
        ['parameters', `${formatCount(mmproj.parameterCount)} in ${plural(mmproj.tensorCount, 'tensor')}`],
        ['size', `${formatBytes(mmproj.fileSize)} (${formatShares(mmproj.tensorTypes)})`],
      ]),
      'the two files form a vision-language model',
    );
  } else {
    lines.push('no --mmproj given: pass the model\'s mmproj file to check that the pair forms a vision-language model');
  }
  return `${lines.join('\n')}\n`;
}
