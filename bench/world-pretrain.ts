// Pre-trains the world model on a world and reports the loss curve and held-out accuracy (greedy
// and mean of 8 samples at T = 1, per family) of the result. Usage:
//   node --import tsx bench/world-pretrain.ts [--world DIR] [--out DIR] [--items N] [--epochs N] [--test N] [--threads N]
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Model } from '../src/model.js';
import { makeTinyModel, WORLD_MODEL_SHAPE } from '../src/tiny-model.js';
import { evaluateWorld } from '../src/world/evaluate.js';
import { writeWorld } from '../src/world/index.js';
import { pretrain } from '../src/world/pretrain.js';

const { values } = parseArgs({ options: {
  world: { type: 'string', default: 'bench-world/world' }, out: { type: 'string', default: 'bench-world/pretrain' },
  items: { type: 'string', default: '2000' }, epochs: { type: 'string', default: '3' }, test: { type: 'string', default: '600' },
  lr: { type: 'string', default: '1e-3' }, rank: { type: 'string', default: '64' }, threads: { type: 'string', default: '2' },
} });
const world = values.world!;
if (!existsSync(join(world, 'world.json'))) await writeWorld(world, { pretrain: Number(values.items), pool: 2000, test: 600, seed: 0 });
const threads = Number(values.threads);
const files = await makeTinyModel({ shape: WORLD_MODEL_SHAPE });
const base = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, repackWeights: false, threads });
const started = performance.now();
const summary = await pretrain(base, files, {
  world, out: values.out!, threads, epochs: Number(values.epochs), lr: Number(values.lr), rank: Number(values.rank),
  onStep: (p) => {
    if (p.step % 25 === 0 || p.step === 1) console.log(`step ${p.step}/${p.steps} epoch ${p.epoch} loss ${p.loss.toFixed(3)} ${p.tokensPerSecond.toFixed(0)} tok/s ${((performance.now() - started) / 1000).toFixed(0)} s`);
  },
});
base.dispose();
if (summary === null) process.exit(1);
console.log(JSON.stringify(summary));
const trained = await Model.load({ model: summary.modelPath, mmproj: summary.mmprojPath, threads });
for (const s of await evaluateWorld(trained, world, { limit: Number(values.test) })) {
  const families = Object.entries(s.byFamily).map(([k, v]) => `${k} ${(100 * v.accuracy).toFixed(1)}`).join(', ');
  console.log(`${s.mode}: ${(100 * s.overall.accuracy).toFixed(1)}% (${families})`);
}
trained.dispose();
