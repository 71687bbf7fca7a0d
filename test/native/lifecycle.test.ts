// Lifecycle of the native objects: dispose() while native work is in flight, collection of
// unreferenced models by the garbage collector, use from worker_threads (the addon is
// context-aware), and the process ending (process.exit, a Worker terminated) while a native call
// runs. What may not happen anywhere: a crash, a hang, a leak of native objects.
//
// liveObjects() counts native objects process-wide: models and rollout contexts until their
// native state is freed (dispose() plus the end of the calls in flight), policies until their JS
// wrapper is collected. Checks that need the garbage collector run in a child started with
// --expose-gc, so they see exactly their own objects.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { after, before, describe, it } from 'node:test';
import { VisplayError } from '../../src/errors.js';
import type { Model } from '../../src/model.js';
import { loadBinding, PACKAGE_ROOT } from '../../src/native.js';
import type { Policy, TrainGroup } from '../../src/policy.js';
import type { RolloutEngine, RolloutRequest, RolloutResult } from '../../src/rollout.js';
import { loadTiny, patternPng, scratchDir, tinyFiles } from './helpers.js';

const src = (file: string) => pathToFileURL(join(PACKAGE_ROOT, 'src', file)).href;
const TSX_API = pathToFileURL(join(PACKAGE_ROOT, 'node_modules', 'tsx', 'dist', 'esm', 'api', 'index.mjs')).href;

const HELLO: RolloutRequest = { messages: [{ role: 'user', content: 'Hello.' }], maxTokens: 3, temperature: 0 };
/** Long enough that it is surely still running when the test acts (a thousand decode steps; fits 4096 cells). */
const LONG: RolloutRequest = { messages: [{ role: 'user', content: 'Tell me everything.' }], n: 4, maxTokens: 1000, temperature: 1, seed: 1, ignoreEos: true };
const GROUPS: TrainGroup[] = [{
  messages: [{ role: 'user', content: 'Say something.' }],
  samples: [{ tokens: Array.from({ length: 48 }, (_, i) => 100 + i), advantage: 1 }, { tokens: [4, 5, 6], advantage: -1 }],
}];

/** Settles to the value or the error, never throws. */
function settle<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return p.then((value) => ({ value }), (error: unknown) => ({ error }));
}

/** A call in flight when its object was disposed: it finished on the memory it held, or rejected with ERR_DISPOSED. */
function settledCleanly(outcome: { value?: unknown; error?: unknown }, what: string): void {
  if (outcome.error === undefined) return;
  assert.ok(outcome.error instanceof VisplayError && outcome.error.code === 'ERR_DISPOSED', `${what}: ${String(outcome.error)}`);
}

async function rejectsDisposed(call: () => Promise<unknown> | unknown, pattern: RegExp): Promise<void> {
  await assert.rejects(async () => call(), (e: unknown) => e instanceof VisplayError && e.code === 'ERR_DISPOSED' && pattern.test(e.message));
}

interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `code` (an ES module with top-level await) in a fresh node with tsx; SIGKILLed after `timeoutMs`. */
function runScript(code: string, options: { timeoutMs: number; execArgv?: string[] }): Promise<ChildRun> {
  const file = join(scratchDir(), 'child.mts');
  writeFileSync(file, code);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(options.execArgv ?? []), '--import', 'tsx', file], {
      cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'pipe'], timeout: options.timeoutMs, killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr, ms: performance.now() - started }));
  });
}

/** The worker_threads script: loads the tiny model through the library and generates `request`. */
function workerScript(): string {
  const file = join(scratchDir(), 'worker.mjs');
  writeFileSync(file, `
import { parentPort, workerData } from 'node:worker_threads';
import { register } from '${TSX_API}';
register();
const { Model } = await import('${src('model.ts')}');
const { loadBinding } = await import('${src('native.ts')}');
const model = await Model.load({ ...workerData.files, threads: 1 });
const engine = await model.createRollout({ contextSize: 4096, parallel: 4, threads: 1 });
parentPort.postMessage({ type: 'loaded', live: loadBinding().liveObjects() });
const { samples } = await engine.generate([workerData.request]);
parentPort.postMessage({ type: 'done', tokens: samples.map((s) => s.map((x) => Array.from(x.tokens))) });
if (workerData.dispose) model.dispose();
`);
  return file;
}

describe('native lifecycle', () => {
  let model: Model;
  let engine: RolloutEngine;
  let baseline: number[];

  before(async () => {
    model = await loadTiny();
    engine = await model.createRollout({ contextSize: 1024, parallel: 2 });
    baseline = (await engine.generate([HELLO])).samples[0]![0]!.tokens;
  });
  after(() => model?.dispose());

  /** The shared model answers as before. */
  async function assertAlive(): Promise<void> {
    assert.deepEqual((await engine.generate([HELLO])).samples[0]![0]!.tokens, baseline);
  }

  it('model.dispose() while a generate and a training step run: both settle cleanly, every later call rejects with ERR_DISPOSED, the native objects are freed', { timeout: 120_000 }, async () => {
    const binding = loadBinding();
    const before = binding.liveObjects();
    const doomed = await loadTiny();
    const doomedEngine = await doomed.createRollout({ contextSize: 4096, parallel: 4 });
    const policy = await doomed.createPolicy({ rank: 2, seed: 1 });
    const during = binding.liveObjects();
    assert.deepEqual([during.models - before.models, during.contexts - before.contexts, during.policies - before.policies], [1, 1, 1]);
    let progressed = 0;
    const generating = settle(doomedEngine.generate([{ ...LONG, maxTokens: 64 }], { onProgress: () => { progressed++; } }));
    const stepping = settle(policy.step(GROUPS));
    // Dispose once the generate is running natively (its first progress report).
    while (progressed === 0) await new Promise((r) => setTimeout(r, 5));
    doomed.dispose();
    assert.equal(doomed.disposed, true);
    assert.equal(doomedEngine.disposed, true, 'the model disposes its engines');
    assert.equal(policy.disposed, true, 'and its policies');
    const [g, s] = await Promise.all([generating, stepping]);
    settledCleanly(g, 'the generate in flight');
    settledCleanly(s, 'the step in flight');
    if (g.value) assert.equal((g.value as RolloutResult).samples[0]!.length, 4, 'a finished generate is whole');
    await rejectsDisposed(() => doomedEngine.generate([HELLO]), /disposed/);
    await rejectsDisposed(() => doomedEngine.score({ messages: HELLO.messages }, [1]), /disposed/);
    await rejectsDisposed(() => policy.step(GROUPS), /disposed/);
    await rejectsDisposed(() => policy.save(scratchDir()), /disposed/);
    await rejectsDisposed(() => doomed.createRollout(), /the model is disposed/);
    await rejectsDisposed(() => doomed.createPolicy(), /the model is disposed/);
    const end = binding.liveObjects();
    assert.deepEqual([end.models, end.contexts], [before.models, before.contexts], 'the model and its context are freed once the calls in flight end');
    await assertAlive();
  });

  it('policy.dispose() while its step runs: the step settles cleanly, later steps reject, the model and its engines carry on', { timeout: 120_000 }, async () => {
    const policy = await model.createPolicy({ rank: 4, seed: 2 });
    const other = await model.createRollout({ contextSize: 512, parallel: 1 });
    await policy.attach(other);
    const stepping = settle(policy.step(GROUPS));
    // The step is queued behind nothing: it reaches the native worker within a tick; dispose then.
    await new Promise((r) => setImmediate(r));
    policy.dispose();
    policy.dispose();
    settledCleanly(await stepping, 'the step in flight');
    await rejectsDisposed(() => policy.step(GROUPS), /the policy is disposed/);
    await rejectsDisposed(() => policy.evaluate(GROUPS), /the policy is disposed/);
    await rejectsDisposed(() => policy.save(scratchDir()), /the policy is disposed/);
    assert.equal(model.disposed, false);
    const { samples } = await other.generate([HELLO]);
    assert.equal(samples[0]![0]!.tokens.length, 3, 'an engine it was attached to still generates');
    other.dispose();
    await assertAlive();
  });

  it('engine.dispose() right after a generate is called: it settles cleanly; the model\'s other engines carry on', async () => {
    const doomed = await model.createRollout({ contextSize: 4096, parallel: 4 });
    const image = await patternPng(64, 64, 9);
    const generating = settle(doomed.generate([{ ...LONG, maxTokens: 32, images: [image] }]));
    doomed.dispose();
    settledCleanly(await generating, 'the generate');
    await rejectsDisposed(() => doomed.generate([HELLO]), /the rollout engine is disposed/);
    await assertAlive();
  });

  it('unreferenced models, engines and policies are collected: liveObjects() drops to 0 after gc', { timeout: 120_000 }, async () => {
    const files = await tinyFiles();
    const run = await runScript(`
import { Model } from '${src('model.ts')}';
import { loadBinding } from '${src('native.ts')}';
const binding = loadBinding();
const gc = async () => { for (let i = 0; i < 6; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); } };
async function use() {
  const model = await Model.load({ model: ${JSON.stringify(files.modelPath)}, mmproj: ${JSON.stringify(files.mmprojPath)}, threads: 2 });
  const engine = await model.createRollout({ contextSize: 512, parallel: 2 });
  const policy = await model.createPolicy({ rank: 2 });
  await policy.attach(engine);
  await engine.generate([{ messages: [{ role: 'user', content: 'hi' }], maxTokens: 2 }]);
  await policy.step([{ messages: [{ role: 'user', content: 'hi' }], samples: [{ tokens: [1, 2], advantage: 1 }, { tokens: [3], advantage: -1 }] }]);
  return binding.liveObjects();
}
const inUse = await use();
await gc();
const collected = binding.liveObjects();
// Disposed while a generate runs, then dropped: freed as well once the call ends.
const model = await Model.load({ model: ${JSON.stringify(files.modelPath)}, mmproj: ${JSON.stringify(files.mmprojPath)}, threads: 2 });
const engine = await model.createRollout({ contextSize: 512, parallel: 2 });
const pending = engine.generate([{ messages: [{ role: 'user', content: 'hi' }], n: 2, maxTokens: 40 }]).catch((e) => e);
model.dispose();
await pending;
await gc();
console.log(JSON.stringify({ inUse, collected, afterDispose: binding.liveObjects() }));
`, { timeoutMs: 120_000, execArgv: ['--expose-gc'] });
    assert.equal(run.signal, null, run.stderr);
    assert.equal(run.status, 0, run.stderr);
    const counts = JSON.parse(run.stdout) as Record<string, { models: number; contexts: number; policies: number }>;
    assert.deepEqual(counts.inUse, { models: 1, contexts: 1, policies: 1 });
    assert.deepEqual(counts.collected, { models: 0, contexts: 0, policies: 0 });
    assert.deepEqual(counts.afterDispose, { models: 0, contexts: 0, policies: 0 });
  });

  it('worker_threads: a Worker loads the model and generates while the main thread generates; each gets the single-threaded answer', { timeout: 180_000 }, async () => {
    const files = await tinyFiles();
    const request: RolloutRequest = { messages: [{ role: 'user', content: 'Describe the picture.' }], n: 3, maxTokens: 12, temperature: 1, seed: 11 };
    const alone = (await engine.generate([request])).samples.map((s) => s.map((x) => x.tokens));
    const before = loadBinding().liveObjects();
    const worker = new Worker(workerScript(), { workerData: { files: { model: files.modelPath, mmproj: files.mmprojPath }, request, dispose: true } });
    const messages: Array<{ type: string; tokens?: number[][][]; live?: { models: number } }> = [];
    const exited = new Promise<number>((resolve, reject) => {
      worker.on('message', (m) => messages.push(m));
      worker.on('error', reject);
      worker.on('exit', resolve);
    });
    // The main thread generates meanwhile, on its own model and engine.
    let mainRuns = 0;
    while (!messages.some((m) => m.type === 'done')) {
      assert.deepEqual((await engine.generate([request])).samples.map((s) => s.map((x) => x.tokens)), alone, 'the main thread\'s answer is undisturbed');
      mainRuns++;
      if (mainRuns > 200) assert.fail('the worker did not finish');
    }
    assert.equal(await exited, 0);
    assert.ok(mainRuns >= 1);
    assert.equal(messages[0]!.live!.models, before.models + 1, 'the worker\'s model is a native object of its own');
    assert.deepEqual(messages.find((m) => m.type === 'done')!.tokens, alone, 'the worker\'s answer equals the single-threaded one');
    const end = loadBinding().liveObjects();
    assert.deepEqual([end.models, end.contexts], [before.models, before.contexts], 'the worker\'s objects are freed when it ends');
    await assertAlive();
  });

  it('a Worker terminated while it generates: terminate() resolves and the process lives on', { timeout: 180_000 }, async () => {
    // Node lets a terminated Worker's native call in flight run to its end before it tears the
    // thread down (nothing tells the addon earlier), so the call is kept short; what matters is
    // that its completion, arriving with no JS left to run, does not abort the process.
    const files = await tinyFiles();
    const before = loadBinding().liveObjects();
    const worker = new Worker(workerScript(), {
      workerData: { files: { model: files.modelPath, mmproj: files.mmprojPath }, request: { ...LONG, maxTokens: 200 } },
    });
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: { type: string }) => { messages.push(m.type); if (m.type === 'loaded') resolve(); });
      worker.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 100));  // the generate is under way
    assert.equal(typeof await worker.terminate(), 'number', 'terminate() reports the exit code of a Worker it stopped');
    assert.deepEqual(messages, ['loaded'], 'the Worker was stopped before its generate finished');
    const end = loadBinding().liveObjects();
    assert.deepEqual([end.models, end.contexts], [before.models, before.contexts], 'the terminated Worker\'s objects are freed');
    await assertAlive();
  });

  it('process.exit(0) while a generate runs on the main thread: exit status 0 within seconds, no signal', { timeout: 120_000 }, async () => {
    const files = await tinyFiles();
    const run = await runScript(`
import { Model } from '${src('model.ts')}';
const model = await Model.load({ model: ${JSON.stringify(files.modelPath)}, mmproj: ${JSON.stringify(files.mmprojPath)}, threads: 2 });
const engine = await model.createRollout({ contextSize: 4096, parallel: 4 });
const policy = await model.createPolicy({ rank: 2 });
let progress = 0;
void engine.generate([${JSON.stringify(LONG)}], { onProgress: () => { progress++; if (progress === 2) { console.log('exiting'); process.exit(0); } } });
void policy.step(${JSON.stringify(GROUPS)}).catch(() => {});
`, { timeoutMs: 60_000 });
    assert.equal(run.signal, null, `the process hung or crashed (${run.signal}); stderr:\n${run.stderr}`);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'exiting\n');
    assert.doesNotMatch(run.stderr, /terminate|abort|Segmentation/i);
  });

  it('process.exit(0) while a Worker generates (and the main thread has the addon loaded): exit status 0 within seconds, no signal', { timeout: 120_000 }, async () => {
    const files = await tinyFiles();
    const run = await runScript(`
import { Worker } from 'node:worker_threads';
import { loadBinding } from '${src('native.ts')}';
loadBinding();
const worker = new Worker(${JSON.stringify(workerScript())}, {
  workerData: { files: { model: ${JSON.stringify(files.modelPath)}, mmproj: ${JSON.stringify(files.mmprojPath)} }, request: ${JSON.stringify(LONG)} },
});
worker.on('message', (m) => { if (m.type === 'loaded') setTimeout(() => { console.log('exiting'); process.exit(0); }, 300); });
worker.on('error', (e) => { console.error(e); process.exit(2); });
`, { timeoutMs: 60_000 });
    assert.equal(run.signal, null, `the process hung or crashed (${run.signal}); stderr:\n${run.stderr}`);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, 'exiting\n');
    assert.doesNotMatch(run.stderr, /terminate|abort|Segmentation/i);
  });
});
