// Writing the synthetic world (src/world): scene and question generation alone, then the whole
// writeWorld (render every PNG with sharp, write the JSONL files and world.json), and the size of
// what it leaves.
//
//   node --import tsx bench/world.ts [--pretrain 2000] [--pool 2000] [--test 600] [--size 224] [--occlusion 0] [--seed 0] [--concurrency N] [--json]
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateWorld, writeWorld } from '../src/world/index.js';

const { values } = parseArgs({
  options: {
    pretrain: { type: 'string', default: '2000' },
    pool: { type: 'string', default: '2000' },
    test: { type: 'string', default: '600' },
    size: { type: 'string', default: '224' },
    occlusion: { type: 'string', default: '0' },
    seed: { type: 'string', default: '0' },
    concurrency: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const options = {
  pretrain: Number(values.pretrain), pool: Number(values.pool), test: Number(values.test),
  size: Number(values.size), occlusion: Number(values.occlusion), seed: Number(values.seed),
};
const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);

const t0 = performance.now();
generateWorld(options);
const generateSeconds = (performance.now() - t0) / 1000;

const dir = mkdtempSync(join(tmpdir(), 'visplay-world-bench-'));
try {
  const t1 = performance.now();
  await writeWorld(dir, options, { concurrency });
  const writeSeconds = (performance.now() - t1) / 1000;
  let bytes = 0;
  let files = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    files++;
    bytes += statSync(join(entry.parentPath, entry.name)).size;
  }
  const images = options.pretrain + options.pool + options.test;
  const result = {
    ...options, images, cpus: availableParallelism(), concurrency: concurrency ?? Math.max(4, 2 * availableParallelism()),
    generateSeconds: round(generateSeconds), writeSeconds: round(writeSeconds), imagesPerSecond: round(images / writeSeconds), files, megabytes: round(bytes / 1e6),
  };
  if (values.json) console.log(JSON.stringify(result));
  else {
    console.log(`world ${options.pretrain}/${options.pool}/${options.test} at ${options.size} px, occlusion ${options.occlusion}, ${result.cpus} CPUs`);
    console.log(`  scenes + questions: ${result.generateSeconds} s`);
    console.log(`  writeWorld:         ${result.writeSeconds} s (${result.imagesPerSecond} images/s), ${files} files, ${result.megabytes} MB`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
