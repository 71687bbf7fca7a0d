// `visplay-native bench`: measures us against our peers in one run on this machine: rollouts against
// llama-batched-bench and llama-server (built from the same vendored llama.cpp), the GRPO train step
// against the PyTorch reference, peak memory of each. Without --model/--mmproj it runs the
// embedded tiny model. The table goes to stdout (or one JSON document with --json); a progress line
// to stderr.
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { VisplayError } from '../errors.js';
import * as is from '../validate.js';
import { parseModelFiles } from './model-args.js';

export interface BenchArgs {
  model?: string;
  mmproj?: string;
  json: boolean;
  plot?: string;
  repeats?: number;
  quick: boolean;
  threads?: number;
  parallel?: number[];
  python?: string;
  'build-tools': boolean;
}

export const benchCommand: CommandModule<object, BenchArgs> = {
  command: 'bench',
  describe: 'Measure rollouts, image encodes, the GRPO train step and memory against llama.cpp\'s tools and PyTorch',
  builder: (yargs) => yargs
    .option('model', { type: 'string', describe: 'language-model GGUF file (default: the tiny model)' })
    .option('mmproj', { type: 'string', describe: 'its vision projector (mmproj) GGUF file' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document instead of the table' })
    .option('plot', { type: 'string', describe: 'also write a bar chart of tokens/s, ours vs peers (.png, or .svg)' })
    .option('repeats', { type: 'number', describe: 'timed runs per figure after a warm-up (default 5; --quick: 1)' })
    .option('quick', { type: 'boolean', default: false, describe: 'one repeat, fewer tokens, smaller images (about a minute)' })
    .option('threads', { type: 'number', describe: 'CPU threads, ours and every peer\'s (default: all cores)' })
    .option('parallel', { type: 'number', array: true, describe: 'parallel sequences per level (default 1 8 32)' })
    .option('python', { type: 'string', describe: 'Python with torch for the PyTorch reference (default $VISPLAY_PYTHON or /usr/bin/python3)' })
    .option('build-tools', { type: 'boolean', default: true, describe: 'build llama-batched-bench / llama-server in build/ when missing' })
    .example('$0 bench', 'the full comparison on the tiny model (a few minutes)')
    .example('$0 bench --quick --json --plot bench.png', 'a quick run as JSON, with a chart'),
  handler: async (argv) => {
    const files = parseModelFiles(argv);
    const model = files?.model;
    const mmproj = files?.mmproj;
    for (const [flag, path] of [['model', model], ['mmproj', mmproj]] as const) {
      if (path !== undefined && !existsSync(path)) throw new VisplayError('ERR_FILE_NOT_FOUND', `--${flag} ${path} does not exist`);
    }
    const plot = is.optional(argv.plot, (v) => is.nonEmptyString('plot', v));
    if (plot !== undefined) {
      if (!/\.(png|svg)$/i.test(plot)) throw is.invalidArg('plot', 'a file name ending in .png or .svg', plot);
      const dir = dirname(resolve(plot));
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new VisplayError('ERR_OUTPUT', `cannot write --plot ${plot}: ${dir} is not a folder`);
    }
    const options = {
      model, mmproj, quick: argv.quick,
      repeats: is.optional(argv.repeats, (v) => is.integer('repeats', v, 1, 1000)),
      threads: is.optional(argv.threads, (v) => is.integer('threads', v, 1, 1024)),
      parallel: is.optional(argv.parallel, (v) => is.arrayOf('parallel', v, (n, x) => is.integer(n, x, 1, 128))),
      python: is.optional(argv.python, (v) => is.nonEmptyString('python', v)),
      buildTools: argv['build-tools'],
    };
    // Imported here: the addon loads only for commands that need it.
    const { formatBench, runBench, writeBenchPlot } = await import('../bench/index.js');
    const result = await runBench(options);
    if (plot !== undefined) await writeBenchPlot(result, plot);
    process.stdout.write(argv.json ? `${JSON.stringify(result, null, 2)}\n` : formatBench(result));
  },
};
