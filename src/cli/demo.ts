// `visplay-native demo`: one short VisPlay iteration on the embedded tiny model with a handful of
// generated images (well under two minutes on two cores), ending with the report's path. The tiny
// model has random weights and writes gibberish, so nearly every question is invalid: the demo
// shows the machinery (rollouts, votes, rewards, GRPO steps, checkpoints, adapters, the report),
// not learning, and the report says so.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import type { CommandModule } from 'yargs';
import { VisplayError } from '../errors.js';
import type { EvolveConfig } from '../visplay/config.js';
import { evolve } from '../visplay/loop.js';
import { cliHooks, finishRun } from './evolve.js';

export interface DemoArgs {
  out?: string;
  'json-log': boolean;
  world: boolean;
  full: boolean;
  threads?: number;
}

/** The demo's settings: every phase runs, each as briefly as it can. */
export const DEMO_CONFIG: Partial<EvolveConfig> = {
  iterations: 1, questionerSteps: 2, reasonerSteps: 2, groupSize: 4, votes: 4, labelVotes: 4, imagesPerStep: 3,
  candidateImages: 6, candidatesPerImage: 2, questionerMaxTokens: 48, reasonerMaxTokens: 32, parallel: 16, contextSize: 4096,
  loraRank: 8, loraAlpha: 16, lr: 1e-4, seed: 1,
};

const SHAPES = [
  { fill: '#d62728', shape: '<circle cx="80" cy="80" r="50"/>' },
  { fill: '#1f77b4', shape: '<rect x="30" y="40" width="100" height="80"/>' },
  { fill: '#2ca02c', shape: '<polygon points="80,20 140,140 20,140"/>' },
  { fill: '#ff7f0e', shape: '<circle cx="50" cy="60" r="25"/><circle cx="115" cy="105" r="30"/>' },
  { fill: '#9467bd', shape: '<rect x="20" y="20" width="50" height="50"/><rect x="90" y="90" width="50" height="50"/>' },
  { fill: '#8c564b', shape: '<polygon points="80,15 95,60 145,60 105,90 120,140 80,110 40,140 55,90 15,60 65,60"/>' },
];

/** Writes the demo's images (PNG, 160x160, coloured shapes) into `dir`. */
export async function writeDemoImages(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (const [i, s] of SHAPES.entries()) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="160" height="160"><rect width="160" height="160" fill="#f4f1ea"/><g fill="${s.fill}">${s.shape}</g></svg>`;
    writeFileSync(join(dir, `shape-${i + 1}.png`), await sharp(Buffer.from(svg)).png().toBuffer());
  }
}

function freshDir(base: string): string {
  let dir = resolve(base);
  for (let i = 2; existsSync(join(dir, 'run.json')); i++) dir = resolve(`${base}-${i}`);
  return dir;
}

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe: 'A whole small VisPlay run on the embedded tiny model (under two minutes on two cores)',
  builder: (yargs) => yargs
    .option('out', { type: 'string', describe: 'run folder (default ./visplay-demo, or -2, -3, ... when taken)' })
    .option('json-log', { type: 'boolean', default: false, describe: 'one JSON event per line on stdout' })
    .option('world', { type: 'boolean', default: false, describe: 'the synthetic world instead: pre-train the world model, then VisPlay with zero labels against two controls, scored on a held-out test (about 10 minutes)' })
    .option('full', { type: 'boolean', default: false, describe: 'with --world: the full experiment (bigger world, 3 epochs of pre-training, 3 seeds; hours on 2 cores)' })
    .option('threads', { type: 'number', describe: 'CPU threads (default: all cores)' }),
  handler: async (argv) => {
    if (argv.world) {
      const { runWorldDemo } = await import('./world-demo.js');
      await runWorldDemo({ out: argv.out, full: argv.full, jsonLog: argv['json-log'], threads: argv.threads });
      return;
    }
    if (argv.full) throw new VisplayError('ERR_INVALID_ARG', '--full applies to --world only');
    const out = freshDir(argv.out ?? 'visplay-demo');
    const images = join(out, 'images');
    await writeDemoImages(images);
    if (!argv['json-log']) {
      process.stderr.write(`visplay-native demo: the embedded tiny model (random weights: expect gibberish) on ${SHAPES.length} generated images, into ${out}\n`);
    }
    const hooks = cliHooks(argv['json-log']);
    try {
      const result = await evolve({ images, out, config: DEMO_CONFIG }, hooks);
      await finishRun(result, argv['json-log']);
    } finally {
      hooks.dispose();
    }
  },
};
