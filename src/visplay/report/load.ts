// Reading a run folder (records.ts) for the report. A run may have stopped anywhere: files that do
// not exist yet are empty, and a JSONL line cut off by a crash (the last line, no newline) is
// skipped, so a report can be made of any run, finished or not, even while it runs.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { VisplayError } from '../../errors.js';
import type { EvalSummary, IterationSummary, QuestionRecord, RunManifest, StepMetrics } from '../records.js';

export interface IterationRecords {
  iteration: number;
  /** iter-<i>/summary.json, absent until the iteration finished. */
  summary?: IterationSummary;
  /** iter-<i>/questioner.jsonl */
  questioner: QuestionRecord[];
  /** iter-<i>/candidates.jsonl */
  candidates: QuestionRecord[];
}

export interface RunRecords {
  /** The run folder, absolute. */
  dir: string;
  manifest: RunManifest;
  /** metrics.jsonl, in file order. */
  metrics: StepMetrics[];
  /** Every iteration any file mentions, in order (a folder, a summary, a metrics line). */
  iterations: IterationRecords[];
  /** eval.jsonl, in file order. */
  evals: EvalSummary[];
  /** Lines that were skipped and why ("metrics.jsonl line 7: ..."). */
  warnings: string[];
}

/** Reads a run folder. Throws ERR_FILE_NOT_FOUND (no such folder) or ERR_INVALID_ARG (not a run). */
export function loadRun(runDir: string): RunRecords {
  const dir = resolve(runDir);
  if (!existsSync(dir)) throw new VisplayError('ERR_FILE_NOT_FOUND', `run folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new VisplayError('ERR_INVALID_ARG', `${dir} is a file, not a run folder`);
  const manifestPath = join(dir, 'run.json');
  if (!existsSync(manifestPath)) {
    throw new VisplayError('ERR_INVALID_ARG', `${dir} is not a VisPlay run folder: it has no run.json (made by \`visplay-native evolve --out DIR\`)`);
  }
  const manifest = readJson(manifestPath) as RunManifest | undefined;
  if (manifest === undefined || typeof manifest !== 'object' || manifest === null || Array.isArray(manifest)) {
    throw new VisplayError('ERR_INVALID_ARG', `${manifestPath} is not a run manifest (expected one JSON object)`);
  }

  const warnings: string[] = [];
  const metrics = readJsonl<StepMetrics>(join(dir, 'metrics.jsonl'), 'metrics.jsonl', warnings, isStepMetrics);
  const evals = readJsonl<EvalSummary>(join(dir, 'eval.jsonl'), 'eval.jsonl', warnings, isEvalSummary);

  const byIteration = new Map<number, IterationRecords>();
  const iterationOf = (i: number): IterationRecords => {
    let it = byIteration.get(i);
    if (!it) {
      it = { iteration: i, questioner: [], candidates: [] };
      byIteration.set(i, it);
    }
    return it;
  };
  for (const name of readdirSync(dir)) {
    const match = /^iter-(\d+)$/.exec(name);
    if (!match || !statSync(join(dir, name)).isDirectory()) continue;
    const it = iterationOf(Number(match[1]));
    const summaryPath = join(dir, name, 'summary.json');
    if (existsSync(summaryPath)) {
      const summary = readJson(summaryPath);
      if (isIterationSummary(summary)) it.summary = summary;
      else warnings.push(`${name}/summary.json: not an iteration summary; ignored`);
    }
    it.questioner = readJsonl(join(dir, name, 'questioner.jsonl'), `${name}/questioner.jsonl`, warnings, isQuestionRecord);
    it.candidates = readJsonl(join(dir, name, 'candidates.jsonl'), `${name}/candidates.jsonl`, warnings, isQuestionRecord);
  }
  // An iteration whose folder is not there yet may already have optimizer steps.
  for (const m of metrics) if (m.iteration >= 1) iterationOf(m.iteration);

  const iterations = [...byIteration.values()].sort((a, b) => a.iteration - b.iteration);
  return { dir, manifest, metrics, iterations, evals, warnings };
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new VisplayError('ERR_INVALID_ARG', `${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * The records of a JSONL file ([] when it does not exist). A last line without its newline that
 * does not parse was cut off mid-write and is skipped silently; any other line that does not parse
 * or is not the expected record is skipped with a warning naming its line number.
 */
export function readJsonl<T>(path: string, label: string, warnings: string[], accept: (v: unknown) => v is T): T[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  const lines = text.split('\n');
  const out: T[] = [];
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    const last = i === lines.length - 1;  // no newline after it
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      if (!last) warnings.push(`${label} line ${i + 1}: not JSON; skipped`);
      continue;
    }
    if (accept(value)) out.push(value);
    else warnings.push(`${label} line ${i + 1}: not the expected record; skipped`);
  }
  return out;
}

// Shape checks: just enough that the report's arithmetic never meets a missing field.

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStepMetrics(v: unknown): v is StepMetrics {
  return isObject(v) && typeof v.iteration === 'number' && (v.role === 'questioner' || v.role === 'reasoner') && typeof v.step === 'number';
}

function isQuestionRecord(v: unknown): v is QuestionRecord {
  return isObject(v) && typeof v.iteration === 'number' && typeof v.confidence === 'number' && typeof v.valid === 'boolean';
}

function isEvalSummary(v: unknown): v is EvalSummary {
  return isObject(v) && typeof v.iteration === 'number' && isObject(v.overall) && typeof v.overall.accuracy === 'number';
}

function isIterationSummary(v: unknown): v is IterationSummary {
  return isObject(v) && typeof v.iteration === 'number' && isObject(v.questioner) && isObject(v.candidates) && isObject(v.reasoner);
}
