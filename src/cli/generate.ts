// `visplay-native generate`: n samples for one prompt over one or more images, through the same
// batched rollout engine VisPlay uses. Without --model/--mmproj it runs the embedded tiny model.
//
// Everything a user can get wrong is checked before the model loads (seconds to minutes for real
// models): option values here, image files by decoding them, model files by their GGUF headers.
import type { CommandModule } from 'yargs';
import { userTurn, type ChatMessage } from '../chat.js';
import { loadImage } from '../images.js';
import type { Model } from '../model.js';
import { createProgress, type ProgressReporter } from '../progress.js';
import type { RolloutEngine, RolloutResult } from '../rollout.js';
import * as is from '../validate.js';
import { loadModelFiles, parseModelFiles } from './model-args.js';
import { plural } from './format.js';

export interface GenerateArgs {
  model?: string;
  mmproj?: string;
  image?: string[];
  prompt: string;
  system?: string;
  n: number;
  'max-tokens': number;
  temperature: number;
  'top-p'?: number;
  'top-k'?: number;
  seed?: number;
  parallel?: number;
  'context-size'?: number;
  threads?: number;
  'gpu-layers'?: number;
  json: boolean;
}

/** The options once validated, named as the library names them. */
export interface GenerateSettings {
  /** null: the embedded tiny model. */
  files: { model: string; mmproj: string } | null;
  images: string[];
  prompt: string;
  system: string | undefined;
  n: number;
  maxTokens: number;
  temperature: number;
  topP: number | undefined;
  topK: number | undefined;
  seed: number | undefined;
  parallel: number | undefined;
  contextSize: number | undefined;
  threads: number | undefined;
  gpuLayers: number | undefined;
}

export const generateCommand: CommandModule<object, GenerateArgs> = {
  command: 'generate',
  describe: 'Sample answers to a prompt about images',
  builder: (yargs) => yargs
    .option('model', { type: 'string', describe: 'language-model GGUF file (default: the tiny model)' })
    .option('mmproj', { type: 'string', describe: 'its vision projector (mmproj) GGUF file' })
    .option('image', { type: 'string', array: true, describe: 'image file (repeat for several)' })
    .option('prompt', { type: 'string', demandOption: true, describe: 'the user message' })
    .option('system', { type: 'string', describe: 'system message (default: the model family\'s own)' })
    .option('n', { type: 'number', default: 1, describe: 'samples to draw' })
    .option('max-tokens', { type: 'number', default: 256, describe: 'most tokens per sample' })
    .option('temperature', { type: 'number', default: 1, describe: 'sampling temperature (0 = greedy)' })
    .option('top-p', { type: 'number', describe: 'nucleus sampling mass (default 1 = off)' })
    .option('top-k', { type: 'number', describe: 'top-k sampling (default 0 = off)' })
    .option('seed', { type: 'number', describe: 'sampling seed (default: random)' })
    .option('parallel', { type: 'number', describe: 'sequences decoded together' })
    .option('context-size', { type: 'number', describe: 'KV cache cells shared by all sequences' })
    .option('threads', { type: 'number', describe: 'CPU threads' })
    .option('gpu-layers', { type: 'number', describe: 'layers offloaded to the GPU (CUDA builds)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document' })
    .example('$0 generate --image cat.jpg --prompt "What is in the picture?" -n 4', 'four answers from the tiny model'),
  handler: async (argv) => {
    const settings = parseGenerateArgs(argv);
    const result = await generate(settings);
    process.stdout.write(argv.json ? formatJson(result) : formatText(result));
    if (!argv.json) process.stderr.write(formatStats(result));
  },
};

export function parseGenerateArgs(argv: GenerateArgs): GenerateSettings {
  const files = parseModelFiles(argv);
  return {
    files,
    images: is.optional(argv.image, (v) => is.arrayOf('image', v, is.nonEmptyString)) ?? [],
    prompt: is.string('prompt', argv.prompt),
    system: is.optional(argv.system, (v) => is.string('system', v)),
    n: is.integer('n', argv.n, 1, 4096),
    maxTokens: is.integer('max-tokens', argv['max-tokens'], 1, 1 << 20),
    temperature: is.number('temperature', argv.temperature, 0, 100),
    topP: is.optional(argv['top-p'], (v) => is.number('top-p', v, 0, 1)),
    topK: is.optional(argv['top-k'], (v) => is.integer('top-k', v, 0, 1 << 24)),
    seed: is.optional(argv.seed, (v) => is.nonNegativeInteger('seed', v)),
    parallel: is.optional(argv.parallel, (v) => is.integer('parallel', v, 1, 128)),
    contextSize: is.optional(argv['context-size'], (v) => is.integer('context-size', v, 64, 1 << 20)),
    threads: is.optional(argv.threads, (v) => is.integer('threads', v, 1, 1024)),
    gpuLayers: is.optional(argv['gpu-layers'], (v) => is.integer('gpu-layers', v, 0, 100000)),
  };
}

async function generate(s: GenerateSettings): Promise<RolloutResult> {
  // Decoding first: a missing or broken image fails in milliseconds, not after the model loads.
  const images = await Promise.all(s.images.map((path) => loadImage(path)));
  const messages: ChatMessage[] = [
    ...(s.system === undefined ? [] : [{ role: 'system' as const, content: s.system }]),
    userTurn(s.prompt, images.length),
  ];

  let model: Model | undefined;
  let engine: RolloutEngine | undefined;
  let progress: ProgressReporter | undefined;
  try {
    model = await loadModel(s);
    engine = await model.createRollout({ contextSize: s.contextSize, parallel: s.parallel, threads: s.threads });
    // Started after loading, so its rates and ETA measure sampling alone. It draws on stderr and
    // only on a terminal, so it never mixes into --json output.
    const bar = createProgress('generate', s.n);
    progress = bar;
    return await engine.generate(
      [{ messages, images, n: s.n, maxTokens: s.maxTokens, temperature: s.temperature, topP: s.topP, topK: s.topK, seed: s.seed }],
      { onProgress: (p) => bar.update(p.done, { tokens: p.tokens }) },
    );
  } finally {
    progress?.stop();
    engine?.dispose();
    model?.dispose();
  }
}

function loadModel(s: GenerateSettings): Promise<Model> {
  return loadModelFiles(s.files, { threads: s.threads, gpuLayers: s.gpuLayers });
}

// ---- output -------------------------------------------------------------------------------------

/** One document: every sample of every request, requests in order. */
export function formatJson(result: RolloutResult): string {
  const samples = result.samples.flat().map(({ text, tokens, logprobs, finish }) => ({ text, tokens, logprobs, finish }));
  return `${JSON.stringify({ samples })}\n`;
}

export function formatText(result: RolloutResult): string {
  const samples = result.samples.flat();
  return samples.map((s, i) =>
    `--- sample ${i + 1} of ${samples.length} (${s.tokens.length} tokens, ${s.finish === 'stop' ? 'stopped' : 'hit --max-tokens'}) ---\n${s.text}\n`,
  ).join('\n');
}

function formatStats({ samples, stats }: RolloutResult): string {
  const seconds = stats.wallMs / 1000;
  const rate = seconds > 0 ? Math.round(stats.generatedTokens / seconds) : 0;
  return `${plural(samples.flat().length, 'sample')}, ${plural(stats.generatedTokens, 'token')} in ${seconds.toFixed(2)} s ` +
    `(${rate} tokens/s); prompt ${plural(stats.promptTokens, 'token')}, ${plural(stats.imageEncodes, 'image encode')}\n`;
}
