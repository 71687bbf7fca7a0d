// Shared fixtures of the tests that run `evolve` (crash-resume, hardening): the tiny settings, the
// CLI as a child process, and what a run folder holds (its records, its files, its fingerprint).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { writeDemoImages } from '../../src/cli/demo.js';
import { PACKAGE_ROOT } from '../../src/native.js';
import type { EvolveConfig } from '../../src/visplay/config.js';
import type { StepMetrics } from '../../src/visplay/records.js';
import { scratchDir } from './helpers.js';

/** evolve.test.ts's tiny settings: every phase runs, each as briefly as it can. */
export const TINY: Partial<EvolveConfig> = {
  iterations: 1, questionerSteps: 2, reasonerSteps: 2, groupSize: 4, votes: 3, labelVotes: 3, imagesPerStep: 2,
  candidateImages: 4, candidatesPerImage: 2, questionerMaxTokens: 24, reasonerMaxTokens: 16, parallel: 8, contextSize: 2048,
  loraRank: 4, loraAlpha: 8, lr: 1e-3, seed: 7, threads: 2,
};

/** The CLI flags that give `config` (questionerSteps -> --questioner-steps 2). */
export function cliFlags(config: Partial<EvolveConfig>): string[] {
  return Object.entries(config).flatMap(([k, v]) => [`--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, String(v)]);
}

export function jsonl<T>(path: string): T[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : [];
}

/** A fresh folder holding the demo's six generated images. */
export async function imagesDir(): Promise<string> {
  const dir = join(scratchDir(), 'images');
  await writeDemoImages(dir);
  return dir;
}

/** Every file under `dir`, as paths relative to it, sorted. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

/**
 * Everything a run wrote that must not depend on interruptions: the records without timings, and the
 * bytes of every adapter and optimizer state of the finished iterations (questioner-N/, reasoner-N/).
 */
export function fingerprint(out: string): string {
  const parts: string[] = [];
  const strip = (m: StepMetrics) => ({ ...m, seconds: 0, tokensPerSecond: 0 });
  parts.push(JSON.stringify(jsonl<StepMetrics>(join(out, 'metrics.jsonl')).map(strip)));
  for (const d of readdirSync(out).filter((n) => /^iter-\d+$/.test(n)).sort()) {
    for (const f of readdirSync(join(out, d)).filter((n) => n.endsWith('.jsonl')).sort()) parts.push(`${d}/${f}:${readFileSync(join(out, d, f), 'utf8')}`);
  }
  for (const d of readdirSync(out).filter((n) => /^(questioner|reasoner)-\d+$/.test(n)).sort()) {
    for (const f of ['adapter.gguf', 'optimizer.gguf']) parts.push(`${d}/${f}:${readFileSync(join(out, d, f)).toString('base64')}`);
  }
  return parts.join('\n');
}

export const CLI = join(PACKAGE_ROOT, 'src', 'cli', 'index.ts');

export interface CliRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Killed with SIGKILL after this long (default 120 s). */
  timeoutMs?: number;
  /** Called with each complete stdout line and the child, e.g. to kill it at some event. */
  onLine?: (line: string, child: ReturnType<typeof spawn>) => void;
  /** Called once the child is started. */
  onSpawn?: (child: ReturnType<typeof spawn>) => void;
  env?: NodeJS.ProcessEnv;
}

/** Runs the CLI from source through tsx, as a user runs the built one. */
export function runCli(args: string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: PACKAGE_ROOT,
      env: { ...process.env, VISPLAY_DEBUG: '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 120_000,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) if (line.trim()) options.onLine?.(line, child);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    options.onSpawn?.(child);
  });
}

/** Exit status 1 (not a signal), nothing on stdout, one `visplay-native:` line on stderr matching every pattern. */
export function failedWith(run: CliRun, ...patterns: Array<string | RegExp>): string {
  assert.equal(run.signal, null, `killed by ${run.signal}; stderr:\n${run.stderr}`);
  assert.equal(run.status, 1, `status ${run.status}; stderr:\n${run.stderr}`);
  assert.equal(run.stdout, '');
  assert.ok(run.stderr.endsWith('\n'), JSON.stringify(run.stderr));
  const lines = run.stderr.slice(0, -1).split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${run.stderr}`);
  const line = lines[0]!;
  assert.ok(line.startsWith('visplay-native: '), line);
  assert.doesNotMatch(line, /unexpected error/, 'a VisplayError, not a bug report');
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(line.includes(p), `${JSON.stringify(line)} lacks ${JSON.stringify(p)}`);
    else assert.match(line, p);
  }
  return line;
}

/**
 * For commands that got going first (progress lines on stderr, --json-log events on stdout): exit
 * status 1, no signal, and stderr ends with the one `visplay-native:` line, matching every pattern.
 */
export function failedAfterStarting(run: CliRun, ...patterns: Array<string | RegExp>): string {
  assert.equal(run.signal, null, `killed by ${run.signal}; stderr:\n${run.stderr}`);
  assert.equal(run.status, 1, `status ${run.status}; stderr:\n${run.stderr}`);
  assert.ok(run.stderr.endsWith('\n'), JSON.stringify(run.stderr));
  const lines = run.stderr.slice(0, -1).split('\n');
  const ours = lines.filter((l) => l.startsWith('visplay-native: '));
  assert.equal(ours.length, 1, `expected one visplay-native: line on stderr, got:\n${run.stderr}`);
  const line = lines.at(-1)!;
  assert.equal(line, ours[0], `the visplay-native: line comes last:\n${run.stderr}`);
  assert.doesNotMatch(line, /unexpected error/, 'a VisplayError, not a bug report');
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(line.includes(p), `${JSON.stringify(line)} lacks ${JSON.stringify(p)}`);
    else assert.match(line, p);
  }
  return line;
}

/** Exit status 0, no signal. */
export function succeeded(run: CliRun): void {
  assert.equal(run.signal, null, `killed by ${run.signal}; stderr:\n${run.stderr}`);
  assert.equal(run.status, 0, run.stderr);
}

/** A small seeded generator (mulberry32): the same seed, the same sequence, on every machine. */
export { rng as seededRandom } from '../unit/helpers/rng.js';
