// `visplay-native evolve`: VisPlay self-evolution on a folder of unlabeled images (src/visplay/loop.ts).
// Every setting of EvolveConfig is a flag; `--resume DIR` continues a stopped or killed run with the
// settings it started with. Ctrl-C stops after the next checkpoint.
import type { Argv, CommandBuilder, CommandModule } from 'yargs';
import { VisplayError } from '../errors.js';
import { createProgress, type ProgressReporter } from '../progress.js';
import { DEFAULT_EVOLVE_CONFIG, resolveConfig, type EvolveConfig } from '../visplay/config.js';
import { loadPromptOverrides, resolvePromptFamily } from '../visplay/prompts.js';
import { evalSummaryOf, evaluate, loadBench } from '../visplay/eval.js';
import { evolve, resumeEvolve, type EvolveEvent, type EvolveHooks, type EvolveResult, type Phase } from '../visplay/loop.js';
import { writeReport } from '../visplay/report/index.js';

/** Flag name -> EvolveConfig field. */
const FLAGS: Array<[string, keyof EvolveConfig, 'number' | 'string' | 'boolean', string]> = [
  ['iterations', 'iterations', 'number', 'VisPlay iterations'],
  ['questioner-steps', 'questionerSteps', 'number', 'Questioner optimizer steps per iteration'],
  ['reasoner-steps', 'reasonerSteps', 'number', 'Reasoner optimizer steps per iteration'],
  ['group-size', 'groupSize', 'number', 'G: questions per image / answers per question in training'],
  ['votes', 'votes', 'number', 'm: Reasoner votes per question for the Questioner reward'],
  ['label-votes', 'labelVotes', 'number', 'Reasoner votes per candidate when labelling'],
  ['images-per-step', 'imagesPerStep', 'number', 'images per Questioner step, questions per Reasoner step'],
  ['candidate-images', 'candidateImages', 'number', 'images the trained Questioner writes candidates for'],
  ['candidates-per-image', 'candidatesPerImage', 'number', 'candidate questions per image'],
  ['candidate-selection', 'candidateSelection', 'string', "'first' (official: the same first images every iteration) or 'shuffle'"],
  ['uncertainty-reward', 'uncertaintyReward', 'string', "'min': min(c, 1-c) (official) or 'r-zero': 1 - 2|c - 1/2|"],
  ['require-think', 'requireThink', 'boolean', 'the Reasoner format reward requires <think>...</think> (official)'],
  ['shuffle-rewards', 'shuffleRewards', 'boolean', 'control run: shuffle each step\'s rewards across its samples'],
  ['lora-rank', 'loraRank', 'number', 'LoRA rank of both roles'],
  ['lora-alpha', 'loraAlpha', 'number', 'LoRA alpha (the delta is scaled by alpha / rank)'],
  ['lr', 'lr', 'number', 'AdamW learning rate'],
  ['kl-coef', 'klCoef', 'number', 'β of the KL term to the base model'],
  ['clip-low', 'clipLow', 'number', 'PPO clip: ρ >= 1 - clip-low'],
  ['clip-high', 'clipHigh', 'number', 'PPO clip: ρ <= 1 + clip-high'],
  ['weight-decay', 'weightDecay', 'number', 'AdamW weight decay'],
  ['max-grad-norm', 'maxGradNorm', 'number', 'global gradient-norm clip'],
  ['questioner-max-tokens', 'questionerMaxTokens', 'number', 'most tokens of a question'],
  ['reasoner-max-tokens', 'reasonerMaxTokens', 'number', 'most tokens of an answer'],
  ['temperature', 'temperature', 'number', 'rollout temperature'],
  ['train-top-p', 'trainTopP', 'number', 'top-p of training rollouts'],
  ['candidate-top-p', 'candidateTopP', 'number', 'top-p of candidate questions'],
  ['label-top-k', 'labelTopK', 'number', 'top-k of labelling votes'],
  ['parallel', 'parallel', 'number', 'sequences decoded together per engine'],
  ['context-size', 'contextSize', 'number', 'KV cells per rollout engine'],
  ['max-image-pixels', 'maxImagePixels', 'number', 'downscale larger images to this many pixels'],
  ['seed', 'seed', 'number', 'seed of every random choice of the run'],
  ['threads', 'threads', 'number', 'CPU threads (0: all)'],
  ['gpu-layers', 'gpuLayers', 'number', 'layers on the GPU on a CUDA build (-1: all, and the trainer runs there; 0: CPU only)'],
  ['micro-batch', 'microBatchTokens', 'number', 'packed rows per training micro-batch (less: less memory, more steps)'],
  ['release-buffers', 'releaseBuffers', 'boolean', "free the trainers' compute buffers after every step"],
  ['prompt-family', 'promptFamily', 'string', "prompt set: 'auto', 'qwen2.5-vl', 'mimo-vl', 'default'"],
  ['prompt-file', 'promptFile', 'string', 'JSON file overriding the Questioner/Reasoner prompts'],
  ['eval', 'eval', 'string', 'benchmark JSONL evaluated before training and after every iteration'],
  ['eval-limit', 'evalLimit', 'number', 'evaluate only the first N benchmark items'],
];

export interface EvolveArgs {
  images?: string;
  model?: string;
  mmproj?: string;
  out?: string;
  resume?: string;
  steps?: number;
  band?: string;
  'json-log': boolean;
  [flag: string]: unknown;
}

export function evolveOptions<T>(yargs: Argv<T>): Argv<T> {
  let y = yargs;
  for (const [flag, field, type, describe] of FLAGS) {
    const def = DEFAULT_EVOLVE_CONFIG[field];
    y = y.option(flag, { type, describe: `${describe} (default ${JSON.stringify(def)})` });
  }
  return y
    .option('steps', { type: 'number', describe: 'optimizer steps per role per iteration (sets both)' })
    .option('band', { type: 'string', describe: 'keep candidates with LOW <= confidence <= HIGH (default 0.3,0.8)' })
    .option('json-log', { type: 'boolean', default: false, describe: 'one JSON event per line on stdout (for machines)' });
}

/** The config fields given on the command line. */
export function configFromArgs(argv: Record<string, unknown>): Partial<EvolveConfig> {
  const c: Record<string, unknown> = {};
  for (const [flag, field] of FLAGS) if (argv[flag] !== undefined) c[field] = argv[flag];
  if (argv.steps !== undefined) {
    c.questionerSteps ??= argv.steps;
    c.reasonerSteps ??= argv.steps;
  }
  if (argv.band !== undefined) {
    const parts = String(argv.band).split(',').map((x) => Number(x.trim()));
    if (parts.length !== 2 || parts.some((x) => !Number.isFinite(x))) throw new VisplayError('ERR_INVALID_ARG', `--band must be LOW,HIGH (e.g. 0.3,0.8), not ${String(argv.band)}`);
    c.band = parts;
  }
  return c as Partial<EvolveConfig>;
}

/** Progress bars per phase on a terminal, or JSON events with --json-log; Ctrl-C stops after a checkpoint. */
export function cliHooks(jsonLog: boolean): EvolveHooks & { dispose(): void } {
  const controller = new AbortController();
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(130);  // a second Ctrl-C does not wait
    process.stderr.write('\nvisplay-native: stopping after the next checkpoint (Ctrl-C again to quit now; --resume continues)\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let bar: ProgressReporter | undefined;
  let barDone = 0;
  let tokens = 0;
  let tokensBase = 0;
  const labels: Record<Phase, [string, string]> = {
    questioner: ['questioner', 'steps'], candidates: ['candidates', 'chunks'], reasoner: ['reasoner', 'steps'], finish: ['finish', 'steps'],
  };
  const onEvent = (e: EvolveEvent) => {
    if (jsonLog) {
      process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
      return;
    }
    switch (e.type) {
      case 'phase': {
        bar?.stop();
        const [label, unit] = labels[e.phase];
        process.stderr.write(`iteration ${e.iteration}: ${label}\n`);
        bar = createProgress(`  ${label}`, e.total, { unit });
        barDone = e.done;
        tokensBase = tokens;
        bar.update(barDone, { tokens: 0 });
        break;
      }
      case 'progress':
        bar?.update(barDone, { tokens: tokens - tokensBase + e.tokens });
        break;
      case 'step':
        barDone = e.metrics.step;
        tokens += e.metrics.tokensPerSecond * e.metrics.seconds;
        bar?.update(barDone, { tokens: tokens - tokensBase });
        if (!process.stderr.isTTY) {
          const m = e.metrics;
          process.stderr.write(`  ${m.role} step ${m.step}: reward ${m.meanReward.toFixed(3)} loss ${m.loss.toFixed(4)} kl ${m.kl.toFixed(4)}\n`);
        }
        break;
      case 'candidates':
        barDone = e.done;
        bar?.update(barDone, { tokens: tokens - tokensBase });
        break;
      case 'iteration': {
        bar?.stop();
        bar = undefined;
        const s = e.summary;
        process.stderr.write(`iteration ${s.iteration} done in ${s.seconds.total.toFixed(0)} s: valid questions ${(100 * s.questioner.validRate).toFixed(0)}%, ` +
          `candidates kept ${s.candidates.kept}/${s.candidates.total}, reasoner accuracy ${(100 * s.reasoner.accuracy).toFixed(0)}%\n`);
        break;
      }
      case 'log':
        bar?.stop();
        process.stderr.write(`${e.message}\n`);
        break;
    }
  };
  return {
    onEvent, signal: controller.signal,
    dispose() {
      bar?.stop();
      process.off('SIGINT', onSigint);
    },
  };
}

/** The evaluation hook for --eval FILE. */
export async function evalHook(partial: Partial<EvolveConfig>): Promise<EvolveHooks['evaluate']> {
  if (!partial.eval) return undefined;
  const config = resolveConfig(partial);
  const bench = await loadBench(partial.eval);
  const promptOverrides = config.promptFile ? loadPromptOverrides(config.promptFile) : undefined;
  return async (iteration, reasonerDir, model) => evalSummaryOf(await evaluate(model, bench, {
    lora: reasonerDir ?? undefined, limit: config.evalLimit, iteration, maxTokens: config.reasonerMaxTokens, parallel: config.parallel,
    contextSize: Math.min(config.contextSize, model.info.trainContextSize), maxImagePixels: config.maxImagePixels,
    promptFamily: resolvePromptFamily(config.promptFamily, model.info.chatFamily), promptOverrides,
  }));
}

export async function finishRun(result: EvolveResult, jsonLog: boolean): Promise<void> {
  const report = await writeReport(result.out);
  if (jsonLog) {
    process.stdout.write(`${JSON.stringify({ type: 'done', completed: result.completed, out: result.out, report: report.html })}\n`);
  } else if (result.completed) {
    process.stderr.write(`run complete: adapters in ${result.out} (questioner-N/, reasoner-N/: adapter.gguf loads with llama.cpp --lora)\n`);
    process.stderr.write(`report: ${report.html}\n`);
  } else {
    process.stderr.write(`stopped at a checkpoint; continue with: visplay-native evolve --resume ${result.out}\nreport so far: ${report.html}\n`);
  }
}

export const evolveCommand: CommandModule<object, EvolveArgs> = {
  command: 'evolve',
  describe: 'Improve a VLM from unlabeled images with VisPlay self-evolution',
  builder: ((yargs: Argv) => evolveOptions(yargs
    .option('images', { type: 'string', describe: 'folder of images (searched recursively) or a JSONL manifest ({"image": path} per line)' })
    .option('model', { type: 'string', describe: 'language-model GGUF (default: the embedded tiny model)' })
    .option('mmproj', { type: 'string', describe: 'its vision projector GGUF' })
    .option('out', { type: 'string', describe: 'run folder (records, adapters, report)' })
    .option('resume', { type: 'string', describe: 'continue the run in this folder' }))
    .example('$0 evolve --images ./photos --model qwen2.5-vl-3b.gguf --mmproj mmproj.gguf --out runs/a --iterations 3', '')
    .example('$0 evolve --resume runs/a', 'continue after a crash, kill -9 or Ctrl-C')) as unknown as CommandBuilder<object, EvolveArgs>,
  handler: async (argv) => {
    const hooks = cliHooks(argv['json-log']);
    try {
      let result: EvolveResult;
      if (argv.resume !== undefined) {
        const given = Object.keys(configFromArgs(argv));
        if (given.length > 0 || argv.images || argv.model) {
          throw new VisplayError('ERR_INVALID_ARG', `--resume continues with the run's own settings; drop ${given.length ? given.join(', ') : '--images/--model'}`);
        }
        const { readJson } = await import('../visplay/run-store.js');
        const manifest = readJson<{ config: Partial<EvolveConfig> }>(`${argv.resume}/run.json`);
        result = await resumeEvolve(argv.resume, { ...hooks, evaluate: await evalHook(manifest.config) });
      } else {
        if (!argv.images) throw new VisplayError('ERR_INVALID_ARG', 'give --images FOLDER_OR_MANIFEST (or --resume RUN_DIR)');
        if (!argv.out) throw new VisplayError('ERR_INVALID_ARG', 'give --out RUN_DIR for the records, adapters and report');
        const config = configFromArgs(argv);
        result = await evolve({ images: argv.images, model: argv.model, mmproj: argv.mmproj, out: argv.out, config }, { ...hooks, evaluate: await evalHook(config) });
      }
      await finishRun(result, argv['json-log']);
    } finally {
      hooks.dispose();
    }
  },
};
