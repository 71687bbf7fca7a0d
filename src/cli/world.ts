// `visplay-native world` writes a synthetic image world (shapes and colours with known truth: a
// labelled pre-training split, an unlabelled pool, a held-out labelled test) and `visplay-native
// pretrain` pre-trains the world model on its labelled split (src/world). Together with `evolve` on
// the pool and `eval` on the test they make VisPlay's claim testable; `demo --world` runs it all.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { VisplayError } from '../errors.js';
import { createProgress } from '../progress.js';
import * as is from '../validate.js';
import type { WorldVocabulary } from '../world/experiment.js';

export interface WorldArgs {
  out: string;
  pretrain?: number;
  pool?: number;
  test?: number;
  seed?: number;
  size?: number;
  occlusion?: number;
}

export const worldCommand: CommandModule<object, WorldArgs> = {
  command: 'world',
  describe: 'Write a synthetic image world with known truth (pre-training, pool and test splits)',
  builder: (yargs) => yargs
    .option('out', { type: 'string', demandOption: true, describe: 'world folder (world.json, *.jsonl, images/)' })
    .option('pretrain', { type: 'number', describe: 'labelled pre-training items (default 2000)' })
    .option('pool', { type: 'number', describe: 'unlabelled pool images (default 2000)' })
    .option('test', { type: 'number', describe: 'held-out labelled test items (default 600)' })
    .option('seed', { type: 'number', describe: 'seed of every scene and question (default 0)' })
    .option('size', { type: 'number', describe: 'image width = height in pixels (default 224)' })
    .option('occlusion', { type: 'number', describe: 'chance of an object overlapping another, 0-1 (default 0)' }),
  handler: async (argv) => {
    const { writeWorld, resolveWorldOptions } = await import('../world/index.js');
    const options = resolveWorldOptions({ pretrain: argv.pretrain, pool: argv.pool, test: argv.test, seed: argv.seed, size: argv.size, occlusion: argv.occlusion });
    const out = resolve(is.nonEmptyString('out', argv.out));
    const started = performance.now();
    const manifest = await writeWorld(out, options);
    process.stdout.write(`${out}: ${manifest.counts.pretrain} pre-training items, ${manifest.counts.pool} pool images, ` +
      `${manifest.counts.test} test items, ${manifest.size}x${manifest.size} (${((performance.now() - started) / 1000).toFixed(1)} s)\n`);
  },
};

export interface PretrainArgs {
  world: string;
  out: string;
  epochs?: number;
  'items-per-step'?: number;
  rank?: number;
  'projector-rank'?: number;
  lr?: number;
  seed?: number;
  'model-seed'?: number;
  vocabulary: WorldVocabulary;
  limit?: number;
  threads?: number;
  json: boolean;
}

export const pretrainCommand: CommandModule<object, PretrainArgs> = {
  command: 'pretrain',
  describe: 'Pre-train the world model on a world\'s labelled split (resumes an interrupted run)',
  builder: (yargs) => yargs
    .option('world', { type: 'string', demandOption: true, describe: 'world folder written by `visplay-native world`' })
    .option('out', { type: 'string', demandOption: true, describe: 'output folder: model.gguf + mmproj.gguf, checkpoints, log' })
    .option('epochs', { type: 'number', describe: 'passes over the labelled split (default 3)' })
    .option('items-per-step', { type: 'number', describe: 'labelled items per optimizer step (default 16)' })
    .option('rank', { type: 'number', describe: 'LoRA rank, merged at the end (default 64)' })
    .option('projector-rank', { type: 'number', describe: 'rank of a trainable update of the image rows, merged into the mmproj (default 0: off)' })
    .option('lr', { type: 'number', describe: 'peak learning rate, cosine schedule (default 1e-3)' })
    .option('seed', { type: 'number', describe: 'data order and LoRA initialisation (default 0)' })
    .option('model-seed', { type: 'number', describe: 'seed of the world model\'s random weights (default 1)' })
    .option('vocabulary', { choices: ['world', 'qwen2'] as const, default: 'world' as const, describe: 'the world model\'s vocabulary: only the 582 tokens of the world\'s texts, or Qwen2\'s 151,936' })
    .option('limit', { type: 'number', describe: 'use only the first N labelled items' })
    .option('threads', { type: 'number', describe: 'CPU threads' })
    .option('json', { type: 'boolean', default: false, describe: 'print the summary as JSON' }),
  handler: async (argv) => {
    const world = resolve(is.nonEmptyString('world', argv.world));
    if (!existsSync(join(world, 'world.json'))) throw new VisplayError('ERR_FILE_NOT_FOUND', `${world} is not a world folder (no world.json): write one with \`visplay-native world --out ${argv.world}\``);
    const options = {
      world, out: resolve(is.nonEmptyString('out', argv.out)),
      epochs: is.optional(argv.epochs, (v) => is.integer('epochs', v, 1, 1000)),
      itemsPerStep: is.optional(argv['items-per-step'], (v) => is.integer('items-per-step', v, 1, 4096)),
      rank: is.optional(argv.rank, (v) => is.integer('rank', v, 1, 1024)),
      projectorRank: is.optional(argv['projector-rank'], (v) => is.integer('projector-rank', v, 0, 4096)),
      lr: is.optional(argv.lr, (v) => is.number('lr', v, 1e-9, 1)),
      seed: is.optional(argv.seed, (v) => is.integer('seed', v, 0, 0xffffffff)),
      limit: is.optional(argv.limit, (v) => is.positiveInteger('limit', v)),
      threads: is.optional(argv.threads, (v) => is.integer('threads', v, 1, 1024)),
    };
    const modelSeed = is.optional(argv['model-seed'], (v) => is.integer('model-seed', v, 0, 0xffffffff)) ?? 1;
    const { makeTinyModel, WORLD_MODEL_SHAPE } = await import('../tiny-model.js');
    const { Model } = await import('../model.js');
    const { pretrain } = await import('../world/pretrain.js');
    const vocabularyTexts = argv.vocabulary === 'world' ? (await import('../world/vocabulary.js')).worldVocabularyTexts() : undefined;
    const files = await makeTinyModel({ seed: modelSeed, shape: WORLD_MODEL_SHAPE, vocabularyTexts });
    const model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads: options.threads, repackWeights: false, gpuLayers: 0 });
    let bar: ReturnType<typeof createProgress> | undefined;
    let tokens = 0;
    try {
      const summary = await pretrain(model, files, {
        ...options,
        onStep: (p) => {
          bar ??= createProgress('pretrain', p.steps, { unit: 'steps' });
          tokens += p.tokens;
          bar.update(p.step, { tokens });
          if (!process.stderr.isTTY && (p.step % 10 === 0 || p.step === p.steps)) process.stderr.write(`pretrain step ${p.step}/${p.steps} loss ${p.loss.toFixed(3)}\n`);
        },
      });
      bar?.stop();
      if (summary === null) return;
      process.stdout.write(argv.json ? `${JSON.stringify(summary)}\n`
        : `pre-trained in ${summary.seconds.toFixed(0)} s: loss ${summary.firstLoss.toFixed(3)} -> ${summary.lastLoss.toFixed(3)} ` +
          `over ${summary.settings.steps} steps; model ${summary.modelPath} with ${summary.mmprojPath}\n`);
    } finally {
      bar?.stop();
      model.dispose();
    }
  },
};
