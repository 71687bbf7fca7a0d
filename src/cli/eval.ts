// `visplay-native eval`: accuracy of the model (optionally with a LoRA policy) on a benchmark JSONL
// (docs/benchmarks.md). Greedy answers, the last \boxed{} as the prediction, rule-based scoring per
// answer type and a judge endpoint for free-form answers. Without --model/--mmproj it runs the
// embedded tiny model (which answers gibberish: a check of the machinery, not a score).
//
// The benchmark, its images, the judge URL and the LoRA path are all checked before the model loads.
import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { VisplayError } from '../errors.js';
import type { Model } from '../model.js';
import { createProgress, type ProgressReporter } from '../progress.js';
import * as is from '../validate.js';
import { loadModelFiles, parseModelFiles } from './model-args.js';
import { describeProblems, evaluate, judgeEndpoint, loadBench, policyFolder, type EvalResult } from '../visplay/eval.js';
import { formatTable, percent } from '../visplay/report/tables.js';
import { plural } from './format.js';

export interface EvalArgs {
  bench?: string;
  model?: string;
  mmproj?: string;
  lora?: string;
  judge?: string;
  'judge-model'?: string;
  'judge-timeout'?: number;
  limit?: number;
  parallel?: number;
  'max-tokens'?: number;
  samples?: number;
  temperature?: number;
  'context-size'?: number;
  'max-image-pixels'?: number;
  responses: boolean;
  threads?: number;
  'gpu-layers'?: number;
  json: boolean;
}

export const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Score the model (and a LoRA policy) on a benchmark JSONL',
  builder: (yargs) => yargs
    .option('bench', { type: 'string', demandOption: true, describe: 'benchmark JSONL (see docs/benchmarks.md)' })
    .option('model', { type: 'string', describe: 'language-model GGUF file (default: the tiny model)' })
    .option('mmproj', { type: 'string', describe: 'its vision projector (mmproj) GGUF file' })
    .option('lora', { type: 'string', describe: 'a policy folder (or its adapter.gguf) to evaluate' })
    .option('judge', { type: 'string', describe: 'OpenAI-compatible chat endpoint for free-form answers (base URL or .../chat/completions)' })
    .option('judge-model', { type: 'string', describe: 'the "model" field sent to the judge' })
    .option('judge-timeout', { type: 'number', default: 60, describe: 'seconds to wait for each judge answer' })
    .option('limit', { type: 'number', describe: 'evaluate the first N usable items only' })
    .option('parallel', { type: 'number', describe: 'sequences decoded together (default 8)' })
    .option('max-tokens', { type: 'number', describe: 'most tokens per answer (default 2048)' })
    .option('samples', { type: 'number', describe: 'answers per item: 1 = greedy (default); N > 1 = N sampled answers each scored (mean@N)' })
    .option('temperature', { type: 'number', describe: 'sampling temperature with --samples N > 1 (default 1)' })
    .option('context-size', { type: 'number', describe: 'KV cache cells shared by all sequences' })
    .option('max-image-pixels', { type: 'number', describe: 'downscale larger images to this many pixels (e.g. 262144, as evolve does)' })
    .option('responses', { type: 'boolean', default: false, describe: 'with --json: include each item\'s whole response' })
    .option('threads', { type: 'number', describe: 'CPU threads' })
    .option('gpu-layers', { type: 'number', describe: 'layers offloaded to the GPU (CUDA builds)' })
    .option('json', { type: 'boolean', default: false, describe: 'print the summary and every item as one JSON document' })
    .example('$0 eval --bench mmstar.jsonl --model qwen.gguf --mmproj mmproj.gguf --lora runs/a/reasoner-3', 'the Reasoner of iteration 3')
    .epilog('The judge\'s API key, if it needs one, is read from $VISPLAY_JUDGE_API_KEY.'),
  handler: async (argv) => {
    const s = parseEvalArgs(argv);
    // Everything that can be checked without the model, first.
    const bench = await loadBench(s.bench);
    for (const p of bench.skipped) process.stderr.write(`skipped ${bench.path} line ${p.line}: ${p.message}\n`);
    if (s.judge !== undefined) judgeEndpoint(s.judge);
    if (s.lora !== undefined) policyFolder(s.lora);
    const freeForm = bench.items.slice(0, s.limit ?? bench.items.length).filter((i) => i.type === 'free-form').length;
    if (freeForm > 0 && s.judge === undefined) {
      throw new VisplayError('ERR_INVALID_ARG', `${plural(freeForm, 'free-form item')} in ${bench.path} need${freeForm === 1 ? 's' : ''} a judge: pass --judge URL`);
    }

    let model: Model | undefined;
    let progress: ProgressReporter | undefined;
    let result: EvalResult;
    try {
      model = await loadModel(s);
      const total = Math.min(bench.items.length, s.limit ?? Infinity) * (s.samples ?? 1);
      const bar = createProgress('eval', total, { unit: 'items' });
      progress = bar;
      result = await evaluate(model, bench, {
        lora: s.lora, judge: s.judge, judgeModel: s.judgeModel, judgeTimeoutMs: s.judgeTimeoutMs, judgeApiKey: process.env.VISPLAY_JUDGE_API_KEY || undefined,
        limit: s.limit, parallel: s.parallel, maxTokens: s.maxTokens, samples: s.samples, temperature: s.temperature, contextSize: s.contextSize, maxImagePixels: s.maxImagePixels,
        keepResponses: argv.responses,
        onProgress: (p) => bar.update(p.done, { tokens: p.tokens }),
      });
    } finally {
      progress?.stop();
      model?.dispose();
    }
    process.stdout.write(argv.json ? `${JSON.stringify(result)}\n` : formatEvalText(result));
    const unclear = result.items.filter((i) => i.judgeClear === false).length;
    if (unclear > 0) process.stderr.write(`${plural(unclear, 'judge reply')} said neither yes nor no (counted as wrong)\n`);
  },
};

export interface EvalSettings {
  bench: string;
  files: { model: string; mmproj: string } | null;
  lora?: string;
  judge?: string;
  judgeModel?: string;
  judgeTimeoutMs: number;
  limit?: number;
  parallel?: number;
  maxTokens?: number;
  samples?: number;
  temperature?: number;
  contextSize?: number;
  maxImagePixels?: number;
  threads?: number;
  gpuLayers?: number;
}

export function parseEvalArgs(argv: EvalArgs): EvalSettings {
  const files = parseModelFiles(argv);
  return {
    bench: resolve(is.nonEmptyString('bench', argv.bench)),
    files,
    lora: is.optional(argv.lora, (v) => is.nonEmptyString('lora', v)),
    judge: is.optional(argv.judge, (v) => is.nonEmptyString('judge', v)),
    judgeModel: is.optional(argv['judge-model'], (v) => is.nonEmptyString('judge-model', v)),
    judgeTimeoutMs: Math.round(1000 * is.number('judge-timeout', argv['judge-timeout'] ?? 60, 0.001, 86400)),
    limit: is.optional(argv.limit, (v) => is.positiveInteger('limit', v)),
    parallel: is.optional(argv.parallel, (v) => is.integer('parallel', v, 1, 128)),
    maxTokens: is.optional(argv['max-tokens'], (v) => is.integer('max-tokens', v, 1, 1 << 20)),
    samples: is.optional(argv.samples, (v) => is.integer('samples', v, 1, 1024)),
    temperature: is.optional(argv.temperature, (v) => is.number('temperature', v, 0, 100)),
    contextSize: is.optional(argv['context-size'], (v) => is.integer('context-size', v, 64, 1 << 20)),
    maxImagePixels: is.optional(argv['max-image-pixels'], (v) => is.integer('max-image-pixels', v, 64, 1 << 28)),
    threads: is.optional(argv.threads, (v) => is.integer('threads', v, 1, 1024)),
    gpuLayers: is.optional(argv['gpu-layers'], (v) => is.integer('gpu-layers', v, 0, 100000)),
  };
}

function loadModel(s: EvalSettings): Promise<Model> {
  return loadModelFiles(s.files, { threads: s.threads, gpuLayers: s.gpuLayers });
}

/** The per-type table and the overall accuracy. */
export function formatEvalText(r: EvalResult): string {
  const types = Object.entries(r.byType).sort(([a], [b]) => a.localeCompare(b));
  const table = formatTable({
    headers: ['type', 'correct', 'total', 'accuracy'],
    align: ['left', 'right', 'right', 'right'],
    rows: [
      ...types.map(([type, t]) => [type, String(t.correct), String(t.total), percent(t.accuracy)]),
      ['overall', String(r.overall.correct), String(r.overall.total), percent(r.overall.accuracy)],
    ],
  });
  const lines = [`${r.bench}${r.adapter ? ` with ${r.adapter}` : ''}`, table, `accuracy ${percent(r.overall.accuracy)} (${r.overall.correct} of ${r.overall.total})`];
  if (r.skipped.length > 0) lines.push(`${plural(r.skipped.length, 'line')} skipped: ${describeProblems(r.skipped)}`);
  return `${lines.join('\n')}\n`;
}
