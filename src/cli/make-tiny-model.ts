// `visplay-native make-tiny-model [--seed N] [--out DIR] [--json]`: writes the embedded tiny
// vision-language model (generated from the seed, never downloaded) and prints where it is.
import type { CommandModule } from 'yargs';
import * as is from '../validate.js';

export interface MakeTinyModelArgs {
  seed?: number;
  out?: string;
  json: boolean;
}

export const makeTinyModelCommand: CommandModule<object, MakeTinyModelArgs> = {
  command: 'make-tiny-model',
  describe: 'Write the tiny test vision-language model (deterministic from its seed)',
  builder: (yargs) => yargs
    .option('seed', { type: 'number', describe: 'generator seed (default 1)' })
    .option('out', { type: 'string', describe: 'folder for the two GGUF files (default: the cache folder)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON document' }),
  handler: async (argv) => {
    const seed = is.optional(argv.seed, (v) => is.integer('seed', v, 0, 2 ** 32 - 1));
    const outDir = is.optional(argv.out, (v) => is.nonEmptyString('out', v));
    // Imported here, not at the top: the addon loads only for commands that need it.
    const { makeTinyModel } = await import('../tiny-model.js');
    const files = await makeTinyModel({ seed, outDir });
    if (argv.json) {
      process.stdout.write(`${JSON.stringify(files, null, 2)}\n`);
      return;
    }
    process.stdout.write(`model   ${files.modelPath}\nmmproj  ${files.mmprojPath}\n`);
    process.stderr.write(files.created ? `written (seed ${files.seed})\n` : `already there (seed ${files.seed})\n`);
  },
};
