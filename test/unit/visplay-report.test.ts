// The run report: a synthetic run folder (two iterations, the second stopped early with a
// half-written line) -> index.html, report.json, charts; numbers checked against hand arithmetic.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { isVisplayError } from '../../src/errors.js';
import type { EvalSummary, IterationSummary, QuestionRecord, RunManifest, StepMetrics } from '../../src/visplay/records.js';
import { histogram, runBand } from '../../src/visplay/report/aggregate.js';
import { buildReport, formatTable, iterationTable, loadRun, writeReport } from '../../src/visplay/report/index.js';
import { PLOT_HEIGHT, PLOT_WIDTH, percentTickFormat, ticks } from '../../src/visplay/report/plots.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'visplay-report-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const SCRIPT = '<script>alert("x")</script>';

function manifest(model = '/models/Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf'): RunManifest {
  return {
    version: 1, createdAt: '2025-01-02T03:04:05.000Z', model, mmproj: '/models/mmproj.gguf',
    images: { root: '/images', usable: 12, skipped: [] },
    config: { band: [0.3, 0.8], iterations: 2 },
    software: { package: '0.1.0', llamaCpp: 'b0000' },
  };
}

function step(iteration: number, role: StepMetrics['role'], s: number, policyStep: number, meanReward: number, extra: Partial<StepMetrics> = {}): StepMetrics {
  return {
    iteration, role, step: s, policyStep, loss: 0.1, pgLoss: 0.09, kl: 0.001 * policyStep, clipFraction: 0.05 * s, gradNorm: 1, lr: 1e-5,
    meanReward, tokensPerSecond: 100, seconds: 2, applied: true, ...extra,
  };
}

let serial = 0;
function question(iteration: number, phase: QuestionRecord['phase'], confidence: number, o: Partial<QuestionRecord> = {}): QuestionRecord {
  const valid = o.valid ?? true;
  const n = serial++;
  return {
    iteration, phase, step: n, image: { hash: `h${n}`, path: `img${n}.png` },
    raw: valid ? `<type>numerical</type><question>q${n}</question><answer>1</answer>` : `gibberish ${n} <b>`,
    valid, type: valid ? 'numerical' : '', question: valid ? `How many things are in picture ${n}?` : '', questionerAnswer: valid ? '1' : '',
    reasonerAnswers: ['1', '2'], silver: valid ? '1' : '', confidence, ...o,
  };
}

function jsonl(records: unknown[]): string {
  return records.map((r) => `${JSON.stringify(r)}\n`).join('');
}

function evalSummary(iteration: number, correct: number, total: number, adapter = ''): EvalSummary {
  return {
    iteration, bench: '/benches/mmstar.jsonl', adapter,
    overall: { accuracy: correct / total, correct, total },
    byType: { 'multiple choice': { accuracy: correct / total, correct, total } },
  };
}

/** Two iterations: 1 finished (with summary.json), 2 stopped during labelling (no summary, a cut line). */
function makeRun(dir: string, model?: string): void {
  mkdirSync(join(dir, 'iter-1'), { recursive: true });
  mkdirSync(join(dir, 'iter-2'), { recursive: true });
  writeFileSync(join(dir, 'run.json'), JSON.stringify(manifest(model)));
  writeFileSync(join(dir, 'metrics.jsonl'), jsonl([
    step(1, 'questioner', 1, 1, 0.1), step(1, 'questioner', 2, 2, 0.3),
    step(1, 'reasoner', 1, 1, 0.5, { accuracy: 0.4 }), step(1, 'reasoner', 2, 2, 0.7, { accuracy: 0.6 }),
    step(2, 'questioner', 1, 3, 0.2),
    step(2, 'reasoner', 1, 3, 0.8, { accuracy: 0.9 }),
  ]));

  // Iteration 1: the summary is the loop's account; the candidates agree with it.
  const summary: IterationSummary = {
    iteration: 1,
    questioner: { steps: 2, questions: 16, validRate: 0.75, meanConfidence: 0.45, meanReward: 0.2, meanPenalty: 0.125 },
    candidates: { total: 6, valid: 5, inBand: 3, kept: 2, meanConfidence: 0.54, confidenceHistogram: [0, 0, 1, 0, 1, 1, 0, 1, 0, 1] },
    reasoner: { steps: 2, samples: 32, meanReward: 0.6, accuracy: 0.5 },
    seconds: { questioner: 10, candidates: 5, reasoner: 10, total: 25 },
  };
  writeFileSync(join(dir, 'iter-1', 'summary.json'), JSON.stringify(summary));
  writeFileSync(join(dir, 'iter-1', 'candidates.jsonl'), jsonl([
    question(1, 'candidates', 0.2, { kept: false, dropReason: 'confidence 0.20 below the band' }),
    question(1, 'candidates', 0.4, { kept: true }),
    question(1, 'candidates', 0.5, { kept: false, dropReason: 'silver answer contains "text"' }),
    question(1, 'candidates', 0.7, { kept: true }),
    question(1, 'candidates', 0.9, { kept: false, dropReason: 'confidence 0.90 above the band', question: `What is ${SCRIPT} here?` }),
    question(1, 'candidates', 0, { valid: false, kept: false }),
  ]));

  // Iteration 2: no summary; computed from the records and metrics.
  writeFileSync(join(dir, 'iter-2', 'questioner.jsonl'), jsonl([
    question(2, 'questioner', 0.5, { rewards: { uncertainty: 0.5, diversityPenalty: 0.25, total: 0.25 } }),
    question(2, 'questioner', 0.6, { rewards: { uncertainty: 0.4, diversityPenalty: 0.25, total: 0.15 } }),
    question(2, 'questioner', 0.3, { rewards: { uncertainty: 0.3, diversityPenalty: 0.5, total: -0.2 } }),
    question(2, 'questioner', 0, { valid: false, rewards: { uncertainty: 0, diversityPenalty: 0.25, total: -1.25 } }),
  ]));
  writeFileSync(join(dir, 'iter-2', 'candidates.jsonl'), jsonl([
    question(2, 'candidates', 0.6, { kept: true }),
    question(2, 'candidates', 1, { kept: false, dropReason: 'confidence 1.00 above the band' }),
    question(2, 'candidates', 0, { valid: false, kept: false }),
  ]) + '{"iteration":2,"phase":"candid');  // the run stopped mid-write
  writeFileSync(join(dir, 'eval.jsonl'), jsonl([evalSummary(0, 1, 4), evalSummary(1, 2, 4, join(dir, 'reasoner-1'))]));
}

function close(actual: number | null | undefined, expected: number, message?: string): void {
  assert.ok(typeof actual === 'number' && Math.abs(actual - expected) < 1e-9, `${message ?? ''} expected ${expected}, got ${actual}`);
}

describe('run report', () => {
  const run = join(tmp, 'run-a');
  makeRun(run);

  it('aggregates per iteration: the summary where there is one, the records otherwise', async () => {
    const report = await buildReport(run);
    assert.deepEqual(report.iterations.map((r) => [r.iteration, r.source]), [[0, 'records'], [1, 'summary'], [2, 'records']]);
    assert.deepEqual(report.warnings, [], 'a cut-off last line is skipped silently');
    const [base, one, two] = report.iterations;

    // Iteration 0: the base model's evaluation only.
    assert.equal(base!.questioner.steps, 0);
    close(base!.eval[0]!.overall.accuracy, 0.25);

    // Iteration 1 (summary.json): share in band = inBand / valid = 3 / 5; kept mean from the records.
    assert.equal(one!.questioner.steps, 2);
    close(one!.questioner.validRate, 0.75);
    close(one!.candidates.meanConfidence, 0.54);
    close(one!.candidates.shareInBand, 0.6);
    close(one!.candidates.keptMeanConfidence, (0.4 + 0.7) / 2);
    assert.deepEqual(one!.candidates.histogram, [0, 0, 1, 0, 1, 1, 0, 1, 0, 1]);
    assert.equal(one!.candidates.kept, 2);
    close(one!.reasoner.meanReward, 0.6);
    close(one!.reasoner.accuracy, 0.5);

    // Iteration 2 (records): 3 of 4 questions valid; confidence (0.5 + 0.6 + 0.3 + 0) / 4;
    // reward (0.25 + 0.15 - 0.2 - 1.25) / 4; penalty (0.25 + 0.25 + 0.5 + 0.25) / 4.
    assert.equal(two!.questioner.steps, 1);
    assert.equal(two!.questioner.questions, 4);
    close(two!.questioner.validRate, 0.75);
    close(two!.questioner.meanConfidence, 0.35);
    close(two!.questioner.meanReward, -0.2625);
    close(two!.questioner.meanPenalty, 0.3125);
    // Candidates: the cut line is gone; valid 0.6 (kept) and 1.0 (dropped), one invalid.
    assert.equal(two!.candidates.total, 3);
    assert.equal(two!.candidates.valid, 2);
    assert.equal(two!.candidates.inBand, 1);
    assert.equal(two!.candidates.kept, 1);
    close(two!.candidates.meanConfidence, 0.8);
    close(two!.candidates.shareInBand, 0.5);
    close(two!.candidates.keptMeanConfidence, 0.6);
    assert.deepEqual(two!.candidates.histogram, [0, 0, 0, 0, 0, 0, 1, 0, 0, 1]);
    // Reasoner from metrics.jsonl: one step.
    assert.equal(two!.reasoner.steps, 1);
    close(two!.reasoner.meanReward, 0.8);
    close(two!.reasoner.accuracy, 0.9);
    assert.equal(report.gibberish, null);
  });

  it('prints a table with a row per iteration and a column per benchmark', async () => {
    const table = iterationTable(await buildReport(run));
    assert.equal(table.headers.at(-1), 'eval mmstar');
    assert.deepEqual(table.rows.map((r) => r[0]), ['0 (base)', '1', '2']);
    assert.deepEqual(table.rows[1], ['1', '2', '75.0%', '0.540', '60.0%', '0.200', '0.125', '2/6', '0.600', '50.0%', '50.0% (2/4)']);
    assert.deepEqual(table.rows[2], ['2', '1', '75.0%', '0.800', '50.0%', '-0.263', '0.313', '1/3', '0.800', '90.0%', '-']);
    const text = formatTable(table).split('\n');
    assert.equal(text.length, 2 + 3);
    assert.match(text[0]!, /^iteration {2}Q steps/);
    assert.match(text[1]!, /^-+ {2}-+/);
  });

  it('writes index.html, report.json and the charts as SVG and PNG', async () => {
    const written = await writeReport(run);
    assert.equal(written.dir, join(run, 'report'));
    const html = readFileSync(written.html, 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok(html.includes('<table>'));
    assert.ok(html.includes('<th>valid questions</th>'));
    assert.ok(html.includes('<td class="num">60.0%</td>'));
    assert.ok((html.match(/<svg /g) ?? []).length >= 6, 'charts inline');
    assert.ok(!html.includes(SCRIPT), 'question text is escaped');
    assert.ok(html.includes('What is &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; here?'));
    assert.ok(!/<script|<link|src=|href="http/i.test(html), 'self-contained: no scripts, no external resources');
    assert.ok(!html.includes('shows the machinery'), 'no gibberish banner for a working run');
    assert.ok(html.includes('gibberish 5 &lt;b&gt;') || html.includes('&lt;b&gt;'), 'raw output of a question that does not parse, escaped');

    const json = JSON.parse(readFileSync(written.json, 'utf8')) as {
      version: number; band: number[]; iterations: Array<{ iteration: number; candidates: { shareInBand: number; keptMeanConfidence: number } }>;
      steps: unknown[]; evals: unknown[]; plots: string[];
    };
    assert.equal(json.version, 1);
    assert.deepEqual(json.band, [0.3, 0.8]);
    assert.equal(json.steps.length, 6);
    assert.equal(json.evals.length, 2);
    close(json.iterations[1]!.candidates.shareInBand, 0.6);
    close(json.iterations[2]!.candidates.keptMeanConfidence, 0.6);

    const names = ['confidence-iter-1', 'confidence-iter-2', 'rewards', 'kl', 'clip-fraction', 'difficulty', 'eval'];
    assert.deepEqual(json.plots, names.flatMap((n) => [`${n}.svg`, `${n}.png`]));
    assert.deepEqual(written.plots, json.plots.map((p) => join(written.dir, p)));
    for (const name of names) {
      const svg = readFileSync(join(written.dir, `${name}.svg`), 'utf8');
      assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      const meta = await sharp(join(written.dir, `${name}.png`)).metadata();
      assert.equal(meta.format, 'png');
      assert.equal(meta.width, PLOT_WIDTH);
      assert.equal(meta.height, PLOT_HEIGHT);
    }
    // The histogram shades the band and labels its bars; axes are labelled.
    const hist = readFileSync(join(written.dir, 'confidence-iter-1.svg'), 'utf8');
    assert.ok(hist.includes('kept band 0.3–0.8'));
    assert.ok(hist.includes('>candidates</text>'));
    // No temporary files are left behind.
    assert.ok(!readdirSync(written.dir).some((f) => f.includes('.tmp-')));
  });

  it('writes into --out and reports a run whose metrics end in a cut line', async () => {
    const dir = join(tmp, 'run-b');
    makeRun(dir);
    appendFileSync(join(dir, 'metrics.jsonl'), '{"iteration":2,"role":"ques');
    const out = join(tmp, 'elsewhere');
    const written = await writeReport(dir, { outDir: out });
    assert.equal(written.dir, out);
    assert.ok(existsSync(join(out, 'index.html')));
    assert.equal(written.report.steps.length, 6);
    assert.deepEqual(written.report.warnings, []);
  });

  it('warns about (and skips) a broken line in the middle of a file', () => {
    const dir = join(tmp, 'run-c');
    makeRun(dir);
    writeFileSync(join(dir, 'metrics.jsonl'), `${JSON.stringify(step(1, 'questioner', 1, 1, 0.1))}\nnot json\n{"no":"fields"}\n`);
    const records = loadRun(dir);
    assert.equal(records.metrics.length, 1);
    assert.deepEqual(records.warnings, ['metrics.jsonl line 2: not JSON; skipped', 'metrics.jsonl line 3: not the expected record; skipped']);
  });

  it('reports a run stopped before its first record, and one of the tiny model with a banner', async () => {
    const dir = join(tmp, 'run-d');
    mkdirSync(dir);
    writeFileSync(join(dir, 'run.json'), JSON.stringify(manifest('/home/u/.cache/visplay-native/tiny-0123456789abcdef/tiny-qwen2.5-vl.gguf')));
    const written = await writeReport(dir);
    assert.deepEqual(written.report.iterations, []);
    const html = readFileSync(written.html, 'utf8');
    assert.ok(html.includes('shows the machinery, not learning'));
    assert.ok(html.includes('gibberish'));
    assert.ok(html.includes('no data yet'));
  });

  it('shows the banner when almost no question parses', async () => {
    const dir = join(tmp, 'run-e');
    mkdirSync(join(dir, 'iter-1'), { recursive: true });
    writeFileSync(join(dir, 'run.json'), JSON.stringify(manifest()));
    writeFileSync(join(dir, 'iter-1', 'questioner.jsonl'), jsonl(Array.from({ length: 60 }, () => question(1, 'questioner', 0, { valid: false }))));
    const report = await buildReport(dir);
    assert.match(report.gibberish?.reason ?? '', /only 0\.0% of its questions parse/);
  });

  it('names the folder when it is not a run', async () => {
    const empty = join(tmp, 'not-a-run');
    mkdirSync(empty);
    await assert.rejects(writeReport(empty), (e: unknown) => isVisplayError(e, 'ERR_INVALID_ARG') && e.message.includes(empty) && e.message.includes('run.json'));
    const missing = join(tmp, 'missing');
    await assert.rejects(writeReport(missing), (e: unknown) => isVisplayError(e, 'ERR_FILE_NOT_FOUND') && e.message.includes(missing));
  });

  it('report DIR prints the table and the page; --json prints report.json', async () => {
    const text = await cli('report', run);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^iteration/m);
    assert.ok(text.stdout.includes(`report: ${join(run, 'report', 'index.html')}`));
    const json = await cli('report', run, '--json', '--out', join(tmp, 'cli-out'));
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { iterations: unknown[] };
    assert.equal(parsed.iterations.length, 3);
    assert.ok(json.stderr.includes(join(tmp, 'cli-out', 'index.html')));
    const bad = await cli('report', join(tmp, 'missing'));
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, `visplay-native: run folder ${join(tmp, 'missing')} does not exist\n`);
  });
});

describe('report helpers', () => {
  it('bins confidences over [0, 1] with 1 in the last bin', () => {
    assert.deepEqual(histogram([0, 0.05, 0.1, 0.35, 0.7, 0.99, 1]), [2, 1, 0, 1, 0, 0, 0, 1, 0, 2]);
  });

  it('reads the band from the config under the names a loop may use', () => {
    assert.deepEqual(runBand({}), [0.3, 0.8]);
    assert.deepEqual(runBand({ band: [0.25, 0.75] }), [0.25, 0.75]);
    assert.deepEqual(runBand({ band: { low: 0.2, high: 0.7 } }), [0.2, 0.7]);
    assert.deepEqual(runBand({ bandLow: 0.1, bandHigh: 0.9 }), [0.1, 0.9]);
    assert.deepEqual(runBand({ band: [0.9, 0.1] }), [0.3, 0.8]);
  });

  it('picks round ticks', () => {
    assert.deepEqual(ticks(0, 1, 5, false), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(ticks(1, 3, 6, true), [1, 2, 3]);
    assert.deepEqual(ticks(0, 37, 5, true), [0, 10, 20, 30, 40]);
  });

  it('labels percent ticks with the decimals their step needs, so no two labels read the same', () => {
    const whole = ticks(0, 1, 5, false);
    assert.deepEqual(whole.map(percentTickFormat(whole)), ['0%', '20%', '40%', '60%', '80%', '100%']);
    const zoomed = ticks(0.33, 0.35, 5, false); // steps of half a point
    const labels = zoomed.map(percentTickFormat(zoomed));
    assert.deepEqual(labels, ['33.0%', '33.5%', '34.0%', '34.5%', '35.0%']);
    const fine = ticks(0.271, 0.2725, 5, false); // steps of 0.05 points
    const fineLabels = fine.map(percentTickFormat(fine));
    assert.equal(new Set(fineLabels).size, fineLabels.length, fineLabels.join(' '));
    assert.equal(fineLabels[0], '27.10%');
  });
});

interface Run { code: number; stdout: string; stderr: string }

function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: ROOT, env: { ...process.env, VISPLAY_DEBUG: '' } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }));
  });
}
