// The world experiment's report: a synthetic experiment.json (2 seeds, 3 arms, 3 iterations, known
// accuracies) -> tables checked against hand arithmetic; a fixture with a minimal VisPlay run folder
// and a pre-training log -> every PNG decoded, index.html and summary.json checked for the numbers.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { isVisplayError } from '../../src/errors.js';
import type { QuestionRecord, RunManifest } from '../../src/visplay/records.js';
import { PLOT_HEIGHT, PLOT_WIDTH } from '../../src/visplay/report/plots.js';
import type { Arm, ExperimentScore, ExperimentSummary } from '../../src/world/experiment.js';
import type { PretrainSummary } from '../../src/world/pretrain.js';
import { checkExperiment, formatWorldTable, worldTables, writeWorldReport, type Stat } from '../../src/world/report.js';

const tmp = mkdtempSync(join(tmpdir(), 'world-report-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const SCRIPT = '<script>alert("x")</script>';
const ARMS: Arm[] = ['visplay', 'shuffled-rewards', 'frozen-questioner'];

// Greedy overall accuracy per arm, seed and iteration 1..3; mean@8 is 5 points lower throughout.
// Families: 'count' is 5 points below the overall accuracy, 'colour' 5 above (100 items each).
const BASELINE = 0.45;
const GREEDY: Record<Arm, [number[], number[]]> = {
  'visplay': [[0.50, 0.55, 0.60], [0.48, 0.52, 0.50]],
  'shuffled-rewards': [[0.44, 0.45, 0.46], [0.45, 0.43, 0.44]],
  'frozen-questioner': [[0.46, 0.47, 0.47], [0.47, 0.50, 0.51]],
};

function score(arm: ExperimentScore['arm'], seed: number | null, iteration: number, mode: string, overall: number): ExperimentScore {
  const acc = (a: number, total: number) => ({ accuracy: a, correct: Math.round(a * total), total });
  return { mode, arm, seed, iteration, seconds: 10, overall: acc(overall, 200), byFamily: { colour: acc(overall + 0.05, 100), count: acc(overall - 0.05, 100) } };
}

function scores(): ExperimentScore[] {
  const out = [score('pretrained', null, 0, 'greedy', BASELINE), score('pretrained', null, 0, 'mean@8', BASELINE - 0.05)];
  for (const seed of [0, 1]) {
    for (const arm of ARMS) {
      for (let it = 1; it <= 3; it++) {
        const g = GREEDY[arm][seed]![it - 1]!;
        out.push(score(arm, seed, it, 'greedy', g), score(arm, seed, it, 'mean@8', g - 0.05));
      }
    }
  }
  return out;
}

function experiment(out: string, over: Partial<ExperimentSummary> = {}): ExperimentSummary {
  const pretrainDir = join(out, 'pretrain');
  const summary: PretrainSummary = {
    settings: { epochs: 3, itemsPerStep: 16, items: 320, steps: 60, rank: 64, alpha: 64, lr: 1e-3, seed: 0, data: 'abc' },
    modelPath: join(pretrainDir, 'model.gguf'), mmprojPath: join(pretrainDir, 'mmproj.gguf'),
    firstLoss: 2.5, lastLoss: 0.75, trainedTokens: 12345, seconds: 321, mergedWeights: 168, mergedProjectorTensors: 0,
  };
  return {
    world: join(out, 'world'), pretrained: { dir: pretrainDir, modelPath: summary.modelPath, mmprojPath: summary.mmprojPath, summary },
    seeds: [0, 1], arms: [...ARMS], evolve: { iterations: 3, questionerSteps: 6, reasonerSteps: 6, band: [0.3, 0.8] }, evalSamples: 8, evalLimit: null,
    scores: scores(), seconds: { pretrain: 321, evolve: 900, eval: 279, total: 1500 }, ...over,
  };
}

/** The sample sd of two values is |a − b| / √2; their mean (a + b) / 2. */
function two(a: number, b: number): { mean: number; sd: number } {
  return { mean: (a + b) / 2, sd: Math.abs(a - b) / Math.SQRT2 };
}

function close(actual: Stat | null | undefined, expected: { mean: number; sd: number; n?: number }, what: string): void {
  assert.ok(actual, `${what}: no value`);
  assert.ok(Math.abs(actual.mean - expected.mean) < 1e-12, `${what}: mean ${actual.mean}, expected ${expected.mean}`);
  assert.ok(Math.abs(actual.sd - expected.sd) < 1e-12, `${what}: sd ${actual.sd}, expected ${expected.sd}`);
  if (expected.n !== undefined) assert.equal(actual.n, expected.n, `${what}: n`);
}

describe('world report tables', () => {
  const t = worldTables(experiment(join(tmp, 'tables')));

  it('gives mean ± sd over seeds per arm and iteration, with the shared baseline at iteration 0', () => {
    assert.deepEqual(t.modes, ['greedy', 'mean@8']);
    assert.equal(t.lastIteration, 3);
    assert.deepEqual(t.families, ['count', 'colour'], 'FAMILIES order, not alphabetical');
    assert.equal(t.baseline.greedy, BASELINE);
    assert.ok(Math.abs(t.baseline['mean@8']! - 0.40) < 1e-12);
    assert.equal(t.accuracy.length, 2 * 3);
    for (const mode of ['greedy', 'mean@8']) {
      const shift = mode === 'greedy' ? 0 : 0.05;
      for (const arm of ARMS) {
        const row = t.accuracy.find((r) => r.mode === mode && r.arm === arm)!;
        assert.equal(row.accuracy.length, 4);
        close(row.accuracy[0], { mean: BASELINE - shift, sd: 0, n: 1 }, `${mode} ${arm} iteration 0`);
        assert.equal(row.gain[0], null);
        for (let it = 1; it <= 3; it++) {
          const [a, b] = [GREEDY[arm][0]![it - 1]! - shift, GREEDY[arm][1]![it - 1]! - shift];
          close(row.accuracy[it], { ...two(a, b), n: 2 }, `${mode} ${arm} iteration ${it}`);
          // The gain is per seed against the same baseline: its sd is the accuracy's, in points.
          close(row.gain[it], { mean: 100 * (two(a, b).mean - (BASELINE - shift)), sd: 100 * two(a, b).sd, n: 2 }, `${mode} ${arm} gain ${it}`);
        }
      }
    }
    assert.deepEqual(t.warnings, []);
  });

  it('formats the accuracy table cells', () => {
    assert.deepEqual(t.accuracyTable.headers, ['mode', 'arm', 'iter 0 (pre-trained)', 'iter 1', 'iter 2', 'iter 3', 'gain @3 (points)']);
    assert.deepEqual(t.accuracyTable.rows, [
      ['greedy', 'visplay', '45.0', '49.0 ± 1.4', '53.5 ± 2.1', '55.0 ± 7.1', '+10.0 ± 7.1'],
      ['greedy', 'shuffled-rewards', '45.0', '44.5 ± 0.7', '44.0 ± 1.4', '45.0 ± 1.4', '0.0 ± 1.4'],
      ['greedy', 'frozen-questioner', '45.0', '46.5 ± 0.7', '48.5 ± 2.1', '49.0 ± 2.8', '+4.0 ± 2.8'],
      ['mean@8', 'visplay', '40.0', '44.0 ± 1.4', '48.5 ± 2.1', '50.0 ± 7.1', '+10.0 ± 7.1'],
      ['mean@8', 'shuffled-rewards', '40.0', '39.5 ± 0.7', '39.0 ± 1.4', '40.0 ± 1.4', '0.0 ± 1.4'],
      ['mean@8', 'frozen-questioner', '40.0', '41.5 ± 0.7', '43.5 ± 2.1', '44.0 ± 2.8', '+4.0 ± 2.8'],
    ]);
  });

  it('compares each family at the last iteration with the pre-trained model', () => {
    assert.equal(t.byFamily.length, 2 * 2);
    const count = t.byFamily.find((r) => r.mode === 'greedy' && r.family === 'count')!;
    assert.equal(count.items, 100);
    assert.ok(Math.abs(count.baseline! - 0.40) < 1e-12);
    close(count.arms.visplay!.accuracy, two(0.55, 0.45), 'visplay count');
    close(count.arms.visplay!.gain, { mean: 100 * (0.50 - 0.40), sd: 100 * two(0.55, 0.45).sd }, 'visplay count gain');
    close(count.arms['frozen-questioner']!.gain, { mean: 100 * (two(0.42, 0.46).mean - 0.40), sd: 100 * two(0.42, 0.46).sd }, 'frozen count gain');
    assert.deepEqual(t.familyTable.headers,
      ['mode', 'family', 'items', 'pre-trained', 'visplay @3', 'gain', 'shuffled-rewards @3', 'gain', 'frozen-questioner @3', 'gain']);
    assert.deepEqual(t.familyTable.rows[1], ['greedy', 'colour', '100', '50.0', '60.0 ± 7.1', '+10.0 ± 7.1', '50.0 ± 1.4', '0.0 ± 1.4', '54.0 ± 2.8', '+4.0 ± 2.8']);
  });

  it('prints a fixed-width table and a markdown one', () => {
    const { text, markdown } = formatWorldTable(experiment(join(tmp, 'tables')));
    assert.ok(text.endsWith(' ± 2.8\n') && markdown.endsWith(' |\n'), 'each ends with one newline, ready for stdout');
    const lines = text.split('\n');
    const header = lines.findIndex((l) => l.startsWith('mode'));
    assert.ok(header > 0, 'a caption, then the header');
    assert.match(lines[header + 1]!, /^-+ {2}-+ {2}-+/);
    // Columns are aligned: every row of the first table has the gain column ending at the same place.
    const rows = lines.slice(header + 2, header + 8);
    assert.equal(new Set(rows.map((r) => r.length)).size, 1, rows.join('\n'));
    assert.ok(rows[0]!.endsWith('+10.0 ± 7.1'));
    assert.ok(markdown.includes('| mode | arm | iter 0 (pre-trained) | iter 1 | iter 2 | iter 3 | gain @3 (points) |'));
    assert.ok(markdown.includes('|---|---|---:|---:|---:|---:|---:|'));
    assert.ok(markdown.includes('| greedy | visplay | 45.0 | 49.0 ± 1.4 | 53.5 ± 2.1 | 55.0 ± 7.1 | +10.0 ± 7.1 |'));
    assert.ok(markdown.includes('| greedy | colour | 100 | 50.0 | 60.0 ± 7.1 | +10.0 ± 7.1 |'));
  });

  it('marks partial seeds, keeps the last of repeated scores and leaves out unlisted seeds', () => {
    const base = experiment(join(tmp, 'partial'));
    const kept = base.scores.filter((s) => !(s.arm === 'visplay' && s.seed === 1 && s.iteration === 3 && s.mode === 'greedy'));
    const t2 = worldTables({
      ...base,
      scores: [...kept, score('shuffled-rewards', 0, 1, 'greedy', 0.70), score('visplay', 7, 1, 'greedy', 1)],
    });
    const visplay = t2.accuracy.find((r) => r.mode === 'greedy' && r.arm === 'visplay')!;
    close(visplay.accuracy[3], { mean: 0.60, sd: 0, n: 1 }, 'visplay iteration 3, seed 0 only');
    close(visplay.accuracy[1], { ...two(0.50, 0.48), n: 2 }, 'seed 7 is not in the experiment');
    assert.equal(t2.accuracyTable.rows[0]![5], '60.0 (n=1)');
    assert.equal(t2.accuracyTable.rows[0]![6], '+15.0 (n=1)');
    const shuffled = t2.accuracy.find((r) => r.mode === 'greedy' && r.arm === 'shuffled-rewards')!;
    close(shuffled.accuracy[1], two(0.70, 0.45), 'the later score replaces the earlier one');
    assert.deepEqual(t2.warnings, [
      '1 scores of arms or seeds that experiment.json does not list were left out',
      '1 scores were repeated in the results; the last of each was used',
      'visplay, greedy, iteration 3: 1 of 2 seeds scored',
    ]);
  });

  it('shows "-" and no gain without a baseline', () => {
    const base = experiment(join(tmp, 'nobase'));
    const t3 = worldTables({ ...base, scores: base.scores.filter((s) => !(s.arm === 'pretrained' && s.mode === 'mean@8')) });
    assert.equal(t3.baseline['mean@8'], null);
    const row = t3.accuracyTable.rows.find((r) => r[0] === 'mean@8' && r[1] === 'visplay')!;
    assert.equal(row[2], '-');
    assert.equal(row[6], '-');
    assert.ok(t3.warnings.includes('no mean@8 score of the pre-trained model: no baseline and no gains for mean@8'));
  });
});

describe('experiment.json checks', () => {
  it('names the missing file, and says when the experiment is still running', async () => {
    const dir = join(tmp, 'empty');
    mkdirSync(dir);
    await assert.rejects(writeWorldReport(dir), (e: unknown) => isVisplayError(e, 'ERR_FILE_NOT_FOUND') && e.message.includes(join(dir, 'experiment.json')) && !e.message.includes('results.jsonl'));
    writeFileSync(join(dir, 'results.jsonl'), '');
    await assert.rejects(writeWorldReport(dir), (e: unknown) => isVisplayError(e, 'ERR_FILE_NOT_FOUND') && e.message.includes('has not finished'));
  });

  it('rejects a file that is not JSON', async () => {
    const dir = join(tmp, 'broken');
    mkdirSync(dir);
    writeFileSync(join(dir, 'experiment.json'), '{"world": ');
    await assert.rejects(writeWorldReport(dir), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.includes('is not valid JSON'));
  });

  it('names the first bad field', () => {
    const good = experiment(join(tmp, 'fields'));
    const bad = (mutate: (v: Record<string, unknown>) => void) => {
      const v = JSON.parse(JSON.stringify(good)) as Record<string, unknown>;
      mutate(v);
      return () => checkExperiment(v, 'X/experiment.json');
    };
    const rejects = (fn: () => unknown, text: string) =>
      assert.throws(fn, (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.startsWith('X/experiment.json: ') && e.message.includes(text), text);
    assert.equal(checkExperiment(JSON.parse(JSON.stringify(good))).seeds.length, 2);
    rejects(bad((v) => { (v.scores as Array<{ overall: { accuracy: unknown } }>)[1]!.overall.accuracy = 'high'; }), 'scores[1].overall.accuracy must be a number in [0, 1] (got "high")');
    rejects(bad((v) => { (v.scores as Array<{ arm: unknown }>)[2]!.arm = 'other'; }), 'scores[2].arm');
    rejects(bad((v) => { (v.scores as Array<{ seed: unknown }>)[0]!.seed = 3; }), 'scores[0] must be the pre-trained baseline');
    rejects(bad((v) => { v.arms = ['visplay', 'nope']; }), 'arms must be a list of visplay, shuffled-rewards, frozen-questioner');
    rejects(bad((v) => { delete v.scores; }), 'scores must be a list of scores (got nothing)');
    rejects(bad((v) => { v.seeds = [0, 1.5]; }), 'seeds must be a list of integers');
    rejects(bad((v) => { delete (v.pretrained as { summary: { seconds?: number } }).summary.seconds; }), 'pretrained.summary.seconds must be a number (got nothing)');
    assert.throws(() => checkExperiment([], 'Y'), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.includes('one JSON object'));
  });
});

// ---- the written report -------------------------------------------------------------------------

function jsonl(records: unknown[]): string {
  return records.map((r) => `${JSON.stringify(r)}\n`).join('');
}

let serial = 0;
function candidate(iteration: number, confidence: number, image: string, o: Partial<QuestionRecord> = {}): QuestionRecord {
  const n = serial++;
  const valid = o.valid ?? true;
  return {
    iteration, phase: 'candidates', step: n, image: { hash: `h${n}`, path: image },
    raw: valid ? '<type>numerical</type>...' : `garbled ${n}`, valid, type: valid ? 'numerical' : '',
    question: valid ? `How many red shapes, question ${n}?` : '', questionerAnswer: '2', reasonerAnswers: ['2', '2', '3'],
    silver: valid ? `silver-${n}` : '', confidence, kept: confidence >= 0.3 && confidence <= 0.8 && valid,
    dropReason: !valid ? 'the output does not parse' : confidence > 0.8 ? 'confidence above the band' : confidence < 0.3 ? 'confidence below the band' : '', ...o,
  };
}

/** OUT with experiment.json, a pre-training log, and runs/visplay-seed0 with three iterations of candidates. */
async function makeExperiment(out: string): Promise<void> {
  const summary = experiment(out);
  mkdirSync(join(out, 'pretrain'), { recursive: true });
  writeFileSync(join(out, 'experiment.json'), JSON.stringify(summary));
  writeFileSync(join(out, 'pretrain', 'log.jsonl'), jsonl(Array.from({ length: 20 }, (_, i) => ({ step: i + 1, epoch: Math.floor(i / 7), loss: 2.5 / (1 + i / 4), tokens: 600, seconds: 1.5 }))));

  // The pool: two small PNGs; the run records name them relative to the pool folder.
  const pool = join(out, 'world', 'pool');
  mkdirSync(pool, { recursive: true });
  await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toFile(join(pool, 'a.png'));
  await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 30, g: 30, b: 200 } } }).png().toFile(join(pool, 'b.png'));

  const run = join(out, 'runs', 'visplay-seed0');
  const manifest: RunManifest = {
    version: 1, createdAt: '2026-01-01T00:00:00.000Z', model: summary.pretrained.modelPath, mmproj: summary.pretrained.mmprojPath,
    images: { manifest: join(out, 'world', 'pool.jsonl'), usable: 2, skipped: [] }, config: { band: [0.3, 0.8], iterations: 3 },
    software: { package: '0.0.0', llamaCpp: 'b0' },
  };
  for (const it of [1, 2, 3]) mkdirSync(join(run, `iter-${it}`), { recursive: true });
  writeFileSync(join(run, 'run.json'), JSON.stringify(manifest));
  // a.png only through images.json; b.png resolved against the manifest's folder as the loop does.
  writeFileSync(join(run, 'images.json'), JSON.stringify([{ file: join(pool, 'a.png'), path: 'pool-a', hash: 'ha' }]));
  // Confidence moves down over the iterations: 1.0, 0.875, 0.75 -> ... -> 0.5, 0.375, 0.25.
  writeFileSync(join(run, 'iter-1', 'candidates.jsonl'), jsonl([
    candidate(1, 1, 'pool-a'), candidate(1, 0.875, 'pool/b.png'), candidate(1, 0.75, 'pool-a', { question: `What is ${SCRIPT} here?` }),
  ]));
  writeFileSync(join(run, 'iter-2', 'candidates.jsonl'), jsonl([candidate(2, 0.75, 'pool-a'), candidate(2, 0.625, 'pool/b.png'), candidate(2, 0.5, 'pool-a')]));
  writeFileSync(join(run, 'iter-3', 'candidates.jsonl'), jsonl([
    candidate(3, 0.5, 'pool/b.png'), candidate(3, 0.375, 'pool-a'), candidate(3, 0.25, 'pool-a'), candidate(3, 0, 'missing.png', { valid: false }),
  ]));
}

/** Whether the decoded image has a pixel within 12 of `rgb` in every channel, in columns [x0, x1). */
async function hasColour(path: string, rgb: [number, number, number], x0 = 0, x1 = Infinity): Promise<boolean> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  for (let y = 0; y < info.height; y++) {
    for (let x = x0; x < Math.min(x1, info.width); x++) {
      const i = (y * info.width + x) * 3;
      if (Math.abs(data[i]! - rgb[0]) <= 12 && Math.abs(data[i + 1]! - rgb[1]) <= 12 && Math.abs(data[i + 2]! - rgb[2]) <= 12) return true;
    }
  }
  return false;
}

describe('writeWorldReport', () => {
  const out = join(tmp, 'exp');

  it('writes every PNG at its size, with the arms drawn in both panels', async () => {
    await makeExperiment(out);
    const written = await writeWorldReport(out);
    assert.equal(written.dir, join(out, 'report'));
    const sizes: Record<string, [number, number]> = {
      'accuracy.png': [2 * PLOT_WIDTH, PLOT_HEIGHT],        // greedy | mean@8
      'families.png': [2 * PLOT_WIDTH, PLOT_HEIGHT],
      'confidence.png': [2 * PLOT_WIDTH, 2 * PLOT_HEIGHT],  // shares + 3 iteration histograms, 2 to a row
      'pretrain-loss.png': [PLOT_WIDTH, PLOT_HEIGHT],
    };
    assert.deepEqual(written.plots, Object.keys(sizes).map((f) => join(written.dir, f)));
    for (const [file, [width, height]] of Object.entries(sizes)) {
      const { info } = await sharp(join(written.dir, file)).raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height], [width, height], file);
    }
    // The visplay line (#d62728) is in both panels of accuracy.png, and the bars in both of families.png.
    const red: [number, number, number] = [0xd6, 0x27, 0x28];
    for (const file of ['accuracy.png', 'families.png']) {
      assert.ok(await hasColour(join(written.dir, file), red, 0, PLOT_WIDTH), `${file}: left panel`);
      assert.ok(await hasColour(join(written.dir, file), red, PLOT_WIDTH), `${file}: right panel`);
    }
    assert.ok(!readdirSync(written.dir).some((f) => f.includes('.tmp-')), 'no temporary files left');
  });

  it('writes an index.html with the tables, the plots and the examples with their images', async () => {
    const html = readFileSync(join(out, 'report', 'index.html'), 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    for (const cell of ['55.0 ± 7.1', '+10.0 ± 7.1', '0.0 ± 1.4', '+4.0 ± 2.8', '44.0 ± 2.8', '60.0 ± 7.1']) {
      assert.ok(html.includes(`<td class="num">${cell}</td>`), cell);
    }
    for (const name of ['accuracy', 'families', 'confidence', 'pretrain-loss']) {
      assert.match(html, new RegExp(`<figure id="plot-${name}"><img class="plot[^"]*" src="data:image/png;base64,`), name);
    }
    assert.ok(!/<script|<link|src="(?!data:)|href=/i.test(html), 'self-contained: nothing fetched, no scripts');
    assert.ok(html.includes('What is &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; here?'), 'questions are escaped');
    for (const it of [1, 2, 3]) assert.ok(html.includes(`<h3>Iteration ${it}</h3>`));
    // Kept and dropped examples with their confidence and silver label.
    assert.ok(html.includes('<td class="num">0.38</td>'), 'confidence 0.375');
    assert.ok(/<td>silver-\d+<\/td>/.test(html));
    assert.ok(html.includes('image not found: missing.png'));
    // Both pool images are embedded (one found through images.json, one through the manifest's folder) and decode at their size.
    const scenes = [...html.matchAll(/<img class="scene" src="data:image\/png;base64,([^"]+)" alt="([^"]+)">/g)];
    assert.deepEqual(new Set(scenes.map((m) => m[2])), new Set(['pool-a', 'pool/b.png']));
    for (const m of scenes) {
      const meta = await sharp(Buffer.from(m[1]!, 'base64')).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 32, 24]);
    }
    // Difficulty per iteration: the valid candidates' mean confidence goes down.
    assert.ok(html.includes('mean confidence 0.88'));   // (1 + 0.875 + 0.75) / 3
    assert.ok(html.includes('mean confidence 0.38'));   // (0.5 + 0.375 + 0.25) / 3
    // Settings.
    assert.ok(html.includes('<tr><th>questionerSteps</th><td>6</td></tr>'));
    assert.ok(html.includes('<tr><th>loss, last 10% of steps</th><td>0.750</td></tr>'));
    assert.ok(!html.includes('<h2>Notes</h2>'), 'a complete fixture has nothing to note');
  });

  it('writes summary.json with the tables\' numbers', () => {
    const json = JSON.parse(readFileSync(join(out, 'report', 'summary.json'), 'utf8')) as {
      version: number; modes: string[]; seeds: number[]; lastIteration: number; baseline: Record<string, number>;
      accuracy: Array<{ mode: string; arm: string; accuracy: Array<Stat | null>; gain: Array<Stat | null> }>;
      byFamily: unknown[]; plots: string[]; pretrain: { lastLoss: number }; accuracyTable?: unknown;
    };
    assert.equal(json.version, 1);
    assert.deepEqual(json.modes, ['greedy', 'mean@8']);
    assert.deepEqual(json.seeds, [0, 1]);
    assert.equal(json.lastIteration, 3);
    assert.equal(json.baseline.greedy, BASELINE);
    const visplay = json.accuracy.find((r) => r.mode === 'greedy' && r.arm === 'visplay')!;
    close(visplay.accuracy[3], { ...two(0.60, 0.50), n: 2 }, 'summary.json visplay iteration 3');
    close(visplay.gain[3], { mean: 10, sd: 100 * two(0.60, 0.50).sd }, 'summary.json visplay gain');
    assert.equal(json.byFamily.length, 4);
    assert.deepEqual(json.plots, ['accuracy.png', 'families.png', 'confidence.png', 'pretrain-loss.png']);
    assert.equal(json.pretrain.lastLoss, 0.75);
    assert.equal(json.accuracyTable, undefined, 'numbers only, not the cells');
  });

  it('still writes the report when the VisPlay run folder and the pre-training log are missing, and says so', async () => {
    const bare = join(tmp, 'bare');
    mkdirSync(bare);
    writeFileSync(join(bare, 'experiment.json'), JSON.stringify(experiment(bare)));
    const written = await writeWorldReport(bare);
    const html = readFileSync(written.html, 'utf8');
    assert.ok(html.includes('<h2>Notes</h2>'));
    assert.ok(html.includes(`no confidence histograms or examples: run folder ${join(bare, 'runs', 'visplay-seed0')} does not exist`));
    assert.ok(html.includes(`no pre-training log at ${join(bare, 'pretrain', 'log.jsonl')}`));
    assert.ok(html.includes('<td class="num">55.0 ± 7.1</td>'), 'the tables do not need the run folders');
    const { info } = await sharp(join(written.dir, 'confidence.png')).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual([info.width, info.height], [PLOT_WIDTH, PLOT_HEIGHT], 'one empty panel');
  });

  it('writes a report of an experiment with no scores at all', async () => {
    const none = join(tmp, 'none');
    mkdirSync(none);
    writeFileSync(join(none, 'experiment.json'), JSON.stringify(experiment(none, { scores: [] })));
    const written = await writeWorldReport(none);
    assert.deepEqual(written.tables.modes, []);
    for (const file of ['accuracy.png', 'families.png']) {
      const { info } = await sharp(join(written.dir, file)).raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height], [PLOT_WIDTH, PLOT_HEIGHT], `${file}: one empty panel`);
    }
    assert.ok(readFileSync(written.html, 'utf8').includes('<th>gain @3 (points)</th>'), 'the table\'s header, with no rows');
  });
});
