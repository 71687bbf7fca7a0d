// `eval` end to end on the embedded tiny model: a six-item benchmark with images made here, through
// the library and the CLI, with and without a LoRA policy. The tiny model's answers are gibberish,
// so only the accounting is checked, not the accuracy.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Model } from '../../src/model.js';
import { PACKAGE_ROOT } from '../../src/native.js';
import { loadTinyModel } from '../../src/tiny-model.js';
import { evaluate, type EvalResult } from '../../src/visplay/eval.js';
import { patternPng, scratchDir } from './helpers.js';

const MAX_TOKENS = 16;

describe('eval on the tiny model', () => {
  let model: Model;
  let dir: string;
  let bench: string;

  before(async () => {
    dir = scratchDir();
    mkdirSync(join(dir, 'images'));
    for (let i = 0; i < 3; i++) writeFileSync(join(dir, 'images', `p${i}.png`), await patternPng(56, 56, i));
    bench = join(dir, 'bench.jsonl');
    writeFileSync(bench, [
      { id: 'mc', image: 'images/p0.png', question: 'Which colour dominates?', options: ['red', 'green', 'blue'], answer: 'A' },
      { id: 'yn', image: 'images/p1.png', question: 'Is there a stripe?', answer: 'yes' },
      { id: 'num', image: 'images/p2.png', question: 'How many stripes are there?', answer: '4' },
      { id: 'short', image: 'images/p0.png', question: 'What is the main colour?', answer: 'red', type: 'short' },
      { id: 'letter', image: 'images/p1.png', question: 'Which is it?\nA. a square\nB. a circle', answer: 'B', type: 'multiple choice' },
      { id: 'tol', image: join(dir, 'images', 'p2.png'), question: 'How wide is it, in pixels?', answer: '56', type: 'numeric', tolerance: 0.1 },
    ].map((l) => JSON.stringify(l)).join('\n') + '\n');
    model = await loadTinyModel({ threads: 2 });
  });
  after(() => model?.dispose());

  function checkCounts(r: EvalResult, total: number): void {
    assert.equal(r.overall.total, total);
    assert.equal(r.items.length, total);
    assert.ok(r.overall.accuracy >= 0 && r.overall.accuracy <= 1, String(r.overall.accuracy));
    assert.equal(r.overall.correct, r.items.filter((i) => i.correct).length);
    const types = Object.values(r.byType);
    assert.equal(types.reduce((a, t) => a + t.total, 0), total);
    assert.equal(types.reduce((a, t) => a + t.correct, 0), r.overall.correct);
    for (const t of types) assert.equal(t.accuracy, t.correct / t.total);
    assert.ok(Math.abs(r.overall.accuracy - r.overall.correct / total) < 1e-12);
    for (const item of r.items) assert.equal(typeof item.prediction, 'string');
  }

  let base: EvalResult;

  it('runs end to end: every item answered and scored, counts add up', async () => {
    const progress: number[] = [];
    base = await evaluate(model, bench, { maxTokens: MAX_TOKENS, parallel: 4, keepResponses: true, onProgress: (p) => progress.push(p.done) });
    checkCounts(base, 6);
    assert.equal(base.bench, bench);
    assert.equal(base.adapter, '');
    assert.equal(base.iteration, 0);
    assert.deepEqual(base.skipped, []);
    assert.deepEqual(base.items.map((i) => i.id), ['mc', 'yn', 'num', 'short', 'letter', 'tol']);
    assert.deepEqual(Object.keys(base.byType).sort(), ['multiple choice', 'numeric', 'short', 'yes/no']);
    assert.equal(base.byType['multiple choice']!.total, 2);
    assert.equal(base.byType.numeric!.total, 2);
    assert.equal(progress.at(-1), 6);
    for (const item of base.items) assert.ok(item.response && item.response.length > 0, 'the tiny model says something');
  });

  it('is greedy: the same answers again, and --limit takes the first items', async () => {
    const again = await evaluate(model, bench, { maxTokens: MAX_TOKENS, parallel: 2, limit: 4, keepResponses: true });
    checkCounts(again, 4);
    assert.deepEqual(again.items.map((i) => i.response), base.items.slice(0, 4).map((i) => i.response));
    assert.equal(again.items[0]!.response === again.items[1]!.response, false, 'different images and questions, different answers');
  });

  it('evaluates a saved policy (folder or adapter.gguf); a fresh LoRA (B = 0) changes no answer', async () => {
    const policyDir = join(dir, 'reasoner-1');
    const policy = await model.createPolicy({ rank: 4, seed: 3 });
    await policy.save(policyDir);
    policy.dispose();

    const withLora = await evaluate(model, bench, { lora: policyDir, maxTokens: MAX_TOKENS, parallel: 4, iteration: 1, keepResponses: true });
    checkCounts(withLora, 6);
    assert.equal(withLora.adapter, policyDir);
    assert.equal(withLora.iteration, 1);
    assert.deepEqual(withLora.items.map((i) => i.response), base.items.map((i) => i.response));

    const byFile = await evaluate(model, bench, { lora: join(policyDir, 'adapter.gguf'), maxTokens: MAX_TOKENS, parallel: 4, limit: 2 });
    checkCounts(byFile, 2);
    assert.equal(byFile.adapter, policyDir);
  });

  it('really applies the adapter: a LoRA with non-zero B changes the answers', async () => {
    const policy = await model.createPolicy({ rank: 4, seed: 3 });
    let state = 12345;
    const noise = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5);
    for (const name of policy.tensorNames().filter((n) => n.endsWith('lora_b'))) {
      const size = policy.tensorShape(name).reduce((a, b) => a * b, 1);
      await policy.setTensor(name, Array.from({ length: size }, () => noise()));
    }
    const policyDir = join(dir, 'perturbed');
    await policy.save(policyDir);
    policy.dispose();
    const r = await evaluate(model, bench, { lora: policyDir, maxTokens: MAX_TOKENS, parallel: 4, keepResponses: true });
    checkCounts(r, 6);
    assert.notDeepEqual(r.items.map((i) => i.response), base.items.map((i) => i.response));
  });

  it('visplay-native eval prints the table, or the summary as JSON', async () => {
    const text = await cli('eval', '--bench', bench, '--max-tokens', '8', '--limit', '3', '--threads', '2');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^type +correct +total +accuracy$/m);
    assert.match(text.stdout, /^overall +\d +3 +\d+\.\d%$/m);
    assert.match(text.stdout, /^accuracy \d+\.\d% \(\d of 3\)$/m);

    const json = await cli('eval', '--bench', bench, '--max-tokens', '8', '--limit', '3', '--threads', '2', '--json', '--lora', join(dir, 'reasoner-1'));
    assert.equal(json.code, 0, json.stderr);
    const r = JSON.parse(json.stdout) as EvalResult;
    assert.equal(r.overall.total, 3);
    assert.equal(r.adapter, join(dir, 'reasoner-1'));
    assert.equal(r.items.length, 3);

    const bad = await cli('eval', '--bench', join(dir, 'missing.jsonl'));
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, `visplay-native: benchmark file ${join(dir, 'missing.jsonl')} does not exist\n`);
  });
});

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: PACKAGE_ROOT, env: { ...process.env, VISPLAY_DEBUG: '' }, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }));
  });
}
