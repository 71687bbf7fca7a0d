// The world experiment of issue 7 (src/world/experiment.ts) with its table: pre-trained baseline,
// VisPlay iterations 1-3, and the two controls, over seeds. Resumable: rerun the same command.
// --size full (default) runs WORLD_FULL; --size demo runs the shortened demo's sizes (WORLD_DEMO) with
// these seeds, which gives the 3-seed table in about 25 minutes on 2 cores. --evolve-size demo keeps
// the world and pre-training of --size but runs the demo's short VisPlay iterations.
//   node --import tsx bench/world-experiment.ts [--out DIR] [--size full|demo] [--evolve-size full|demo] [--seeds 0,1,2]
//        [--threads N] [--eval-limit N] [--samples N] [--patch-size P] [--align-images N]
//        [--world DIR] [--epochs N] [--vocabulary world|qwen2]
// --patch-size 28 gives the world model 16 image rows per scene; --align-images N fits the aligned
// projector (src/world/align.ts) on N labelled images before pre-training. --world uses an existing
// world folder (`visplay-native world --out DIR ...`) instead of writing one of --size's; --epochs
// overrides the pre-training's passes over the labelled split. --vocabulary world (default) gives the
// world model only the 582 tokens of the world's texts (src/world/vocabulary.ts); qwen2 gives it
// Qwen2's 151,936, as in tables A-D of docs/world.md.
import { parseArgs } from 'node:util';
import { runWorldExperiment } from '../src/world/experiment.js';
import { formatWorldTable, writeWorldReport } from '../src/world/report.js';
import { WORLD_DEMO, WORLD_FULL } from '../src/cli/world-demo.js';

const { values } = parseArgs({ options: {
  out: { type: 'string', default: 'bench-world' }, size: { type: 'string', default: 'full' }, 'evolve-size': { type: 'string' }, seeds: { type: 'string', default: '0,1,2' },
  threads: { type: 'string' }, 'eval-limit': { type: 'string' }, samples: { type: 'string' },
  'patch-size': { type: 'string' }, 'align-images': { type: 'string' }, world: { type: 'string' }, epochs: { type: 'string' },
  vocabulary: { type: 'string' },
} });
if (values.vocabulary !== undefined && values.vocabulary !== 'world' && values.vocabulary !== 'qwen2') throw new Error(`--vocabulary is world or qwen2, not ${values.vocabulary}`);
if (values.size !== 'full' && values.size !== 'demo') throw new Error(`--size is full or demo, not ${values.size}`);
const sizes = values.size === 'demo' ? WORLD_DEMO : WORLD_FULL;
const evolveSizes = (values['evolve-size'] ?? values.size) === 'demo' ? WORLD_DEMO : WORLD_FULL;
const summary = await runWorldExperiment({
  out: values.out!, world: values.world, worldOptions: sizes.world,
  pretrain: values.epochs === undefined ? sizes.pretrain : { ...sizes.pretrain, epochs: Number(values.epochs) }, evolve: evolveSizes.evolve, evalSamples: values.samples === undefined ? sizes.evalSamples : Number(values.samples),
  seeds: values.seeds!.split(',').map(Number), threads: values.threads === undefined ? undefined : Number(values.threads),
  modelShape: values['patch-size'] === undefined ? undefined : { patchSize: Number(values['patch-size']) },
  vocabulary: values.vocabulary as 'world' | 'qwen2' | undefined,
  alignImages: values['align-images'] === undefined ? undefined : Number(values['align-images']),
  evalLimit: values['eval-limit'] === undefined ? sizes.evalLimit : Number(values['eval-limit']),
  onEvent: (e) => {
    if (e.type === 'stage') console.error(e.message);
    else if (e.type === 'score') console.error(`  ${e.score.arm} ${e.score.seed ?? ''} it${e.score.iteration} ${e.score.mode} ${(100 * e.score.overall.accuracy).toFixed(1)}%`);
    else if (e.type === 'pretrain' && e.step % 25 === 0) console.error(`  pretrain ${e.step}/${e.steps} loss ${e.loss.toFixed(3)}`);
  },
});
if (summary === null) process.exit(1);
const report = await writeWorldReport(values.out!);
process.stdout.write(formatWorldTable(summary).markdown);
console.log(`seconds: ${JSON.stringify(summary.seconds)}; report ${report.html}`);
