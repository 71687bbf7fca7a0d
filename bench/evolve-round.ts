// One VisPlay round on the embedded tiny model: 8 images x G = 8 questions x m = 10 votes, time per
// phase and in total.
//
//   node --import tsx bench/evolve-round.ts [--questioner-max-tokens 128] [--reasoner-max-tokens 128] [--threads N] [--json]
//
// The tiny model has random weights, so its questions never parse and no vote or Reasoner step
// would run on its own. To time every phase the round pauses after the candidates phase and marks
// the candidates as kept with a fixed question and silver label (as the native test does); the
// Reasoner phase then trains on them: 1 step of 8 questions x G = 8 answers.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import type { EvolveConfig } from '../src/visplay/config.js';
import { evolve, resumeEvolve } from '../src/visplay/loop.js';
import type { QuestionRecord } from '../src/visplay/records.js';

const { values } = parseArgs({
  options: {
    'questioner-max-tokens': { type: 'string', default: '128' }, 'reasoner-max-tokens': { type: 'string', default: '128' },
    threads: { type: 'string' }, json: { type: 'boolean', default: false },
  },
});
const threads = values.threads ? Number(values.threads) : availableParallelism();

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'visplay-bench-'));
  const images = join(dir, 'images');
  (await import('node:fs')).mkdirSync(images);
  for (let i = 0; i < 8; i++) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="224" height="224"><rect width="224" height="224" fill="#eee"/>` +
      `<circle cx="${40 + i * 18}" cy="112" r="${20 + i * 3}" fill="hsl(${i * 45},70%,45%)"/></svg>`;
    writeFileSync(join(images, `img-${i}.png`), await sharp(Buffer.from(svg)).png().toBuffer());
  }
  const config: Partial<EvolveConfig> = {
    iterations: 1, questionerSteps: 1, reasonerSteps: 1, groupSize: 8, votes: 10, labelVotes: 9, imagesPerStep: 8, candidateImages: 8,
    candidatesPerImage: 8, questionerMaxTokens: Number(values['questioner-max-tokens']), reasonerMaxTokens: Number(values['reasoner-max-tokens']),
    parallel: 32, contextSize: 4096, loraRank: 8, loraAlpha: 16, seed: 1, threads,
  };
  const out = join(dir, 'run');
  const controller = new AbortController();
  const t0 = performance.now();
  await evolve({ images, out, config }, { signal: controller.signal, onEvent: (e) => { if (e.type === 'candidates' && e.done === e.total) controller.abort(); } });
  const path = join(out, 'iter-1', 'candidates.jsonl');
  const lines = readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as QuestionRecord)
    .map((c, i) => ({ ...c, valid: true, type: 'numerical', question: 'How many circles are in the image?', silver: String(1 + (i % 3)), confidence: 0.5, kept: true }));
  writeFileSync(path, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
  const result = await resumeEvolve(out);
  const wall = (performance.now() - t0) / 1000;
  const s = result.iterations[0]!.seconds;
  const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${availableParallelism()} cores, ${threads} threads`;
  const row = { machine, config, seconds: { ...s, wallIncludingLoads: wall } };
  if (values.json) {
    console.log(JSON.stringify(row, null, 2));
    return;
  }
  console.log(`One VisPlay round, tiny model: 8 images x G = 8 x m = 10 (questions <= ${config.questionerMaxTokens} tokens, answers <= ${config.reasonerMaxTokens})`);
  console.log(`machine: ${machine}\n`);
  console.log('| phase | seconds |');
  console.log('|---|---:|');
  console.log(`| questioner (1 step: 64 questions; votes for valid ones) | ${s.questioner.toFixed(1)} |`);
  console.log(`| candidates (64 questions, labelled with 9 votes each when valid) | ${s.candidates.toFixed(1)} |`);
  console.log(`| reasoner (1 step: 8 questions x 8 answers) | ${s.reasoner.toFixed(1)} |`);
  console.log(`| total (phases) | ${s.total.toFixed(1)} |`);
  console.log(`| wall, with model loads and the pause/resume | ${wall.toFixed(1)} |`);
}

await main();
