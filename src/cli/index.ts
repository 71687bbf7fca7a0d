#!/usr/bin/env node
// The visplay-native command line. One command per file, each a thin layer over the library API
// that users can import too; this file wires them up and turns any failure into one line on stderr
// and exit status 1.
import { readFileSync } from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { VisplayError } from '../errors.js';
import { benchCommand } from './bench.js';
import { pretrainCommand, worldCommand } from './world.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { evolveCommand } from './evolve.js';
import { generateCommand } from './generate.js';
import { infoCommand } from './info.js';
import { makeTinyModelCommand } from './make-tiny-model.js';
import { PROGRAM, formatError } from './report.js';
import { reportRunCommand } from './report-run.js';

function packageVersion(): string {
  // src/cli/ and dist/cli/ both sit two levels below the package root.
  const json = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(json) as { version: string }).version;
}

async function main(): Promise<void> {
  const cli = yargs(hideBin(process.argv))
    .scriptName(PROGRAM)
    .command(infoCommand)
    .command(generateCommand)
    .command(makeTinyModelCommand)
    .command(evolveCommand)
    .command(demoCommand)
    .command(reportRunCommand)
    .command(evalCommand)
    .command(benchCommand)
    .command(worldCommand)
    .command(pretrainCommand)
    .demandCommand(1, 'name a command: demo, evolve, eval, report, bench, world, pretrain, generate, info or make-tiny-model')
    .strict()
    .strictCommands()
    .recommendCommands()
    .version(packageVersion())
    .help()
    .alias('help', 'h')
    .wrap(null)
    .showHelpOnFail(false)
    // Usage mistakes (unknown option, missing value) and handler failures both end up in the catch
    // below, so every failure is reported the same way.
    .fail((message, error) => {
      throw error ?? new VisplayError('ERR_INVALID_ARG', `${message} (see --help)`);
    });
  try {
    await cli.parseAsync();
  } catch (e) {
    process.stderr.write(`${formatError(e, process.env.VISPLAY_DEBUG === '1')}\n`);
    process.exitCode = 1;
  }
}

await main();
