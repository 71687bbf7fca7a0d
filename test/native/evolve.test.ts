// The VisPlay loop on the embedded tiny model with tiny settings: a whole iteration through the
// library, the Reasoner phase on injected candidates, and kill -9 at several points followed by
// --resume, which must reproduce an uninterrupted run's records and adapters exactly.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/native.js';
import { evalHook } from '../../src/cli/evolve.js';
import { evolve, resumeEvolve } from '../../src/visplay/loop.js';
import type { EvalSummary, IterationSummary, QuestionRecord, ReasonerRecord, StepMetrics } from '../../src/visplay/records.js';
import { writeReport } from '../../src/visplay/report/index.js';
import { fingerprint, imagesDir, jsonl, TINY } from './evolve-helpers.js';
import { scratchDir } from './helpers.js';

describe('evolve on the tiny model', () => {
  it('runs a whole iteration: records, metrics, adapters, summary, report; undecodable images are skipped and listed', { timeout: 300_000 }, async () => {
    const images = await imagesDir();
    writeFileSync(join(images, 'broken.png'), 'not an image');
    const out = join(scratchDir(), 'run');
    const events: string[] = [];
    const result = await evolve({ images, out, config: TINY }, { onEvent: (e) => events.push(e.type) });
    assert.equal(result.completed, true);
    assert.equal(result.iterations.length, 1);
    const manifest = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8'));
    assert.equal(manifest.images.usable, 6);
    assert.deepEqual(manifest.images.skipped.map((s: { path: string }) => s.path), ['broken.png']);
    const qs = jsonl<QuestionRecord>(join(out, 'iter-1', 'questioner.jsonl'));
    assert.equal(qs.length, TINY.questionerSteps! * TINY.imagesPerStep! * TINY.groupSize!);
    for (const q of qs) {
      assert.equal(q.phase, 'questioner');
      assert.match(q.image.hash, /^[0-9a-f]{64}$/);
      assert.equal(typeof q.raw, 'string');
      assert.ok(q.rewards && Number.isFinite(q.rewards.total));
      // The tiny model's gibberish never parses: an invalid question scores -1 minus its penalty.
      if (!q.valid) assert.ok(q.rewards.total <= -1 && q.rewards.total > -2);
    }
    const cands = jsonl<QuestionRecord>(join(out, 'iter-1', 'candidates.jsonl'));
    assert.equal(cands.length, TINY.candidateImages! * TINY.candidatesPerImage!);
    assert.ok(cands.every((c) => typeof c.kept === 'boolean' && (c.kept || typeof c.dropReason === 'string')));
    const metrics = jsonl<StepMetrics>(join(out, 'metrics.jsonl'));
    assert.deepEqual(metrics.map((m) => `${m.role}${m.step}`).slice(0, 2), ['questioner1', 'questioner2']);
    assert.ok(metrics.every((m) => Number.isFinite(m.loss) && m.applied));
    for (const role of ['questioner', 'reasoner']) assert.ok(existsSync(join(out, `${role}-1`, 'adapter.gguf')), `${role}-1/adapter.gguf`);
    const summary = JSON.parse(readFileSync(join(out, 'iter-1', 'summary.json'), 'utf8')) as IterationSummary;
    assert.equal(summary.questioner.questions, qs.length);
    assert.equal(summary.candidates.total, cands.length);
    assert.ok(events.includes('phase') && events.includes('step') && events.includes('iteration'));
    const report = await writeReport(out);
    assert.ok(readFileSync(report.html, 'utf8').includes('<svg'));
    // Nothing temporary is left anywhere in the run folder.
    const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [e.name]));
    assert.deepEqual(walk(out).filter((n) => n.includes('.tmp')), []);
  });

  it('trains the Reasoner on kept candidates (injected, since the random model writes no valid question)', { timeout: 300_000 }, async () => {
    const images = await imagesDir();
    const out = join(scratchDir(), 'run');
    const controller = new AbortController();
    // Stop once every candidate chunk is committed: the run pauses at the Reasoner phase.
    const stopped = await evolve({ images, out, config: TINY }, {
      signal: controller.signal,
      onEvent: (e) => { if (e.type === 'candidates' && e.done === e.total) controller.abort(); },
    });
    assert.equal(stopped.completed, false);
    const path = join(out, 'iter-1', 'candidates.jsonl');
    const lines = jsonl<QuestionRecord>(path).map((c, i) => (i % 2 === 0
      ? { ...c, valid: true, type: 'numerical', question: 'How many shapes are in the image?', silver: String(1 + (i % 3)), confidence: 0.5, kept: true, dropReason: undefined }
      : c));
    writeFileSync(path, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
    const result = await resumeEvolve(out);
    assert.equal(result.completed, true);
    const rs = jsonl<ReasonerRecord>(join(out, 'iter-1', 'reasoner.jsonl'));
    assert.equal(rs.length, TINY.reasonerSteps! * TINY.imagesPerStep!);
    for (const r of rs) {
      assert.equal(r.question, 'How many shapes are in the image?');
      assert.equal(r.answers.length, TINY.groupSize);
      assert.ok(r.answers.every((a) => Number.isFinite(a.reward) && typeof a.correct === 'boolean'));
    }
    const metrics = jsonl<StepMetrics>(join(out, 'metrics.jsonl')).filter((m) => m.role === 'reasoner');
    assert.equal(metrics.length, TINY.reasonerSteps);
    assert.equal(result.iterations[0]!.reasoner.steps, TINY.reasonerSteps);
  });

  it('--eval: the benchmark is scored before training (iteration 0) and after every iteration, into eval.jsonl and the report', { timeout: 300_000 }, async () => {
    const images = await imagesDir();
    const bench = join(scratchDir(), 'bench.jsonl');
    writeFileSync(bench, [
      { image: join(images, 'shape-1.png'), question: 'What shape is shown?', options: ['circle', 'square', 'triangle', 'star'], answer: 'A', type: 'multiple choice' },
      { image: join(images, 'shape-4.png'), question: 'How many circles are there?', answer: '2', type: 'numeric' },
      { image: join(images, 'shape-2.png'), question: 'Is there a square?', answer: 'yes', type: 'yes/no' },
    ].map((l) => JSON.stringify(l)).join('\n'));
    const config = { ...TINY, eval: bench };
    const out = join(scratchDir(), 'run');
    await evolve({ images, out, config }, { evaluate: await evalHook(config) });
    const evals = jsonl<EvalSummary>(join(out, 'eval.jsonl'));
    assert.deepEqual(evals.map((e) => e.iteration), [0, 1]);
    for (const e of evals) {
      assert.equal(e.overall.total, 3);
      assert.ok(e.overall.accuracy >= 0 && e.overall.accuracy <= 1);
    }
    assert.equal(evals[0]!.adapter, '');
    assert.match(evals[1]!.adapter, /reasoner-1/);
    const report = await writeReport(out);
    assert.ok(JSON.stringify(report.report).includes('"accuracy"'));
  });

  it('kill -9 at several points, then --resume: the records and adapters equal an uninterrupted run\'s', { timeout: 900_000 }, async () => {
    const images = await imagesDir();
    const config = { ...TINY, iterations: 2, reasonerSteps: 1 };
    const reference = join(scratchDir(), 'reference');
    await evolve({ images, out: reference, config });
    const expected = fingerprint(reference);

    const cli = join(PACKAGE_ROOT, 'src', 'cli', 'index.ts');
    const flags = ['--images', images, '--iterations', '2', '--questioner-steps', '2', '--reasoner-steps', '1', '--group-size', '4', '--votes', '3',
      '--label-votes', '3', '--images-per-step', '2', '--candidate-images', '4', '--candidates-per-image', '2', '--questioner-max-tokens', '24',
      '--reasoner-max-tokens', '16', '--parallel', '8', '--context-size', '2048', '--lora-rank', '4', '--lora-alpha', '8', '--lr', '0.001',
      '--seed', '7', '--threads', '2'];
    const out = join(scratchDir(), 'killed');
    // Kill after the n-th JSON event (a step, a candidate chunk, an iteration boundary...), then resume.
    const killAfter = [2, 4, 7];
    let first = true;
    let kills = 0;
    for (const n of killAfter) {
      const args = first ? ['evolve', ...flags, '--out', out, '--json-log'] : ['evolve', '--resume', out, '--json-log'];
      first = false;
      const killed = await new Promise<boolean>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
        let seen = 0;
        let buf = '';
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          seen += lines.filter((l) => l.trim()).length;
          if (seen >= n && child.exitCode === null) child.kill('SIGKILL');
        });
        child.on('exit', (_code, signal) => resolve(signal === 'SIGKILL'));
      });
      if (killed) kills++;
      assert.ok(existsSync(join(out, 'run.json')), `the run folder exists after run ${n}`);
    }
    const done = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', cli, 'evolve', '--resume', out], { cwd: PACKAGE_ROOT, stdio: 'ignore' });
      child.on('exit', (code) => resolve(code));
    });
    assert.equal(kills, killAfter.length, 'every run was killed mid-way');
    assert.equal(done, 0);
    assert.equal(fingerprint(out), expected);
  });
});
