// The numbers of the report, computed once from a run's records: one row per iteration, the
// per-step curves, examples, and whether the run can show learning at all. Tables, plots, HTML and
// report.json all read this one structure, so they never disagree.
//
// Sources: an iteration's summary.json is the loop's own account and wins where it exists; an
// iteration without one (still running, or stopped) is computed from its JSONL records and from
// metrics.jsonl. Every mean over nothing is null (shown as "-"), never NaN or 0.
import { basename } from 'node:path';
import type { EvalSummary, QuestionRecord, RunManifest, StepMetrics } from '../records.js';
import type { IterationRecords, RunRecords } from './load.js';

/** VISPLAY.md §2.4: keep candidates with 0.3 ≤ confidence ≤ 0.8 (unless the run's config says otherwise). */
export const DEFAULT_BAND: readonly [number, number] = [0.3, 0.8];
/** Bins of the confidence histogram over [0, 1]. */
export const HISTOGRAM_BINS = 10;
/** A valid-question rate at or below this means the model writes no parseable questions. */
export const GIBBERISH_VALID_RATE = 0.02;

export interface IterationRow {
  iteration: number;
  /** 'summary': from iter-<i>/summary.json; 'records': computed from the JSONL records (no summary yet). */
  source: 'summary' | 'records';
  questioner: {
    steps: number;
    questions: number;
    /** Share of the Questioner's training questions that parse. */
    validRate: number | null;
    meanConfidence: number | null;
    meanReward: number | null;
    meanPenalty: number | null;
  };
  candidates: {
    total: number;
    valid: number;
    inBand: number;
    kept: number;
    /** Mean confidence of the valid candidates. */
    meanConfidence: number | null;
    /** inBand / valid. */
    shareInBand: number | null;
    /** Mean confidence of the kept candidates (the Reasoner's training set): question difficulty. */
    keptMeanConfidence: number | null;
    /** Valid candidates per confidence bin: bin b holds [b/10, (b+1)/10), the last one includes 1. */
    histogram: number[];
  };
  reasoner: { steps: number; samples: number | null; meanReward: number | null; accuracy: number | null };
  /** eval.jsonl entries of this iteration (0 = the base model). */
  eval: EvalSummary[];
}

export interface QuestionExample {
  step: number;
  image: string;
  type: string;
  question: string;
  /** The raw output, shortened, for questions that did not parse. */
  raw: string;
  valid: boolean;
  silver: string;
  confidence: number;
  kept: boolean;
  dropReason: string;
}

export interface RunReport {
  version: 1;
  dir: string;
  manifest: RunManifest;
  band: [number, number];
  iterations: IterationRow[];
  /** Every optimizer step of both roles, as metrics.jsonl has them. */
  steps: StepMetrics[];
  evals: EvalSummary[];
  /** Per iteration: a few kept and a few dropped candidates. */
  examples: Array<{ iteration: number; kept: QuestionExample[]; dropped: QuestionExample[] }>;
  /** Set when this run cannot show learning (the tiny model, or no valid questions at all). */
  gibberish: { reason: string } | null;
  warnings: string[];
}

export function aggregateRun(run: RunRecords, examplesPerKind = 4): RunReport {
  const band = runBand(run.manifest.config);
  const evalIterations = new Set(run.evals.map((e) => e.iteration));
  const rows: IterationRow[] = [];
  for (const it of run.iterations) rows.push(iterationRow(it, run.metrics, run.evals, band));
  // Evaluations of iterations with no records (the base model, iteration 0) get a row of their own.
  for (const i of evalIterations) {
    if (!rows.some((r) => r.iteration === i)) rows.push(emptyRow(i, run.evals));
  }
  rows.sort((a, b) => a.iteration - b.iteration);
  return {
    version: 1,
    dir: run.dir,
    manifest: run.manifest,
    band,
    iterations: rows,
    steps: run.metrics,
    evals: run.evals,
    examples: run.iterations.map((it) => examples(it, examplesPerKind)),
    gibberish: gibberish(run.manifest, rows),
    warnings: run.warnings,
  };
}

function iterationRow(it: IterationRecords, metrics: StepMetrics[], evals: EvalSummary[], band: [number, number]): IterationRow {
  const qSteps = metrics.filter((m) => m.iteration === it.iteration && m.role === 'questioner');
  const rSteps = metrics.filter((m) => m.iteration === it.iteration && m.role === 'reasoner');
  const validCandidates = it.candidates.filter((c) => c.valid);
  const kept = it.candidates.filter((c) => c.kept === true);
  const inBand = validCandidates.filter((c) => c.confidence >= band[0] && c.confidence <= band[1]).length;
  const recordHistogram = histogram(validCandidates.map((c) => c.confidence));
  const keptMeanConfidence = mean(kept.map((c) => c.confidence));
  const evalRows = evals.filter((e) => e.iteration === it.iteration);

  const s = it.summary;
  if (s) {
    const h = s.candidates.confidenceHistogram;
    return {
      iteration: it.iteration,
      source: 'summary',
      questioner: {
        steps: s.questioner.steps,
        questions: s.questioner.questions,
        validRate: s.questioner.validRate,
        meanConfidence: s.questioner.meanConfidence,
        meanReward: s.questioner.meanReward,
        meanPenalty: s.questioner.meanPenalty,
      },
      candidates: {
        total: s.candidates.total,
        valid: s.candidates.valid,
        inBand: s.candidates.inBand,
        kept: s.candidates.kept,
        meanConfidence: s.candidates.valid > 0 ? s.candidates.meanConfidence : null,
        shareInBand: ratio(s.candidates.inBand, s.candidates.valid),
        keptMeanConfidence,
        histogram: Array.isArray(h) && h.length === HISTOGRAM_BINS ? [...h] : recordHistogram,
      },
      reasoner: {
        steps: s.reasoner.steps,
        samples: s.reasoner.samples,
        meanReward: s.reasoner.steps > 0 ? s.reasoner.meanReward : null,
        accuracy: s.reasoner.steps > 0 ? s.reasoner.accuracy : null,
      },
      eval: evalRows,
    };
  }

  const q = it.questioner;
  const rewards = q.filter((r) => r.rewards !== undefined).map((r) => r.rewards!);
  return {
    iteration: it.iteration,
    source: 'records',
    questioner: {
      steps: new Set(qSteps.map((m) => m.step)).size,
      questions: q.length,
      validRate: q.length > 0 ? ratio(q.filter((r) => r.valid).length, q.length) : mean(defined(qSteps.map((m) => m.validRate))),
      meanConfidence: q.length > 0 ? mean(q.map((r) => r.confidence)) : mean(defined(qSteps.map((m) => m.meanConfidence))),
      meanReward: rewards.length > 0 ? mean(rewards.map((r) => r.total)) : mean(qSteps.map((m) => m.meanReward)),
      meanPenalty: mean(rewards.map((r) => r.diversityPenalty)),
    },
    candidates: {
      total: it.candidates.length,
      valid: validCandidates.length,
      inBand,
      kept: kept.length,
      meanConfidence: mean(validCandidates.map((c) => c.confidence)),
      shareInBand: ratio(inBand, validCandidates.length),
      keptMeanConfidence,
      histogram: recordHistogram,
    },
    reasoner: {
      steps: new Set(rSteps.map((m) => m.step)).size,
      samples: null,
      meanReward: mean(rSteps.map((m) => m.meanReward)),
      accuracy: mean(defined(rSteps.map((m) => m.accuracy))),
    },
    eval: evalRows,
  };
}

function emptyRow(iteration: number, evals: EvalSummary[]): IterationRow {
  return {
    iteration,
    source: 'records',
    questioner: { steps: 0, questions: 0, validRate: null, meanConfidence: null, meanReward: null, meanPenalty: null },
    candidates: { total: 0, valid: 0, inBand: 0, kept: 0, meanConfidence: null, shareInBand: null, keptMeanConfidence: null, histogram: new Array<number>(HISTOGRAM_BINS).fill(0) },
    reasoner: { steps: 0, samples: null, meanReward: null, accuracy: null },
    eval: evals.filter((e) => e.iteration === iteration),
  };
}

/** Counts per bin over [0, 1]; bin b = [b/n, (b+1)/n), with 1 in the last bin. */
export function histogram(values: readonly number[], bins = HISTOGRAM_BINS): number[] {
  const out = new Array<number>(bins).fill(0);
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    const b = Math.min(bins - 1, Math.max(0, Math.floor(v * bins)));
    out[b]!++;
  }
  return out;
}

export function mean(values: readonly number[]): number | null {
  const finite = values.filter((v) => Number.isFinite(v));
  return finite.length === 0 ? null : finite.reduce((a, b) => a + b, 0) / finite.length;
}

function ratio(a: number, b: number): number | null {
  return b > 0 ? a / b : null;
}

function defined(values: ReadonlyArray<number | undefined>): number[] {
  return values.filter((v): v is number => typeof v === 'number');
}

/**
 * The confidence band of the run: its config's, under any of the names a loop might give it
 * (band: [lo, hi] or {low, high}; bandLow/bandHigh; minConfidence/maxConfidence), else 0.3–0.8.
 */
export function runBand(config: Record<string, unknown> | undefined): [number, number] {
  const c = config ?? {};
  const pair = (lo: unknown, hi: unknown): [number, number] | null =>
    typeof lo === 'number' && typeof hi === 'number' && lo >= 0 && hi <= 1 && lo <= hi ? [lo, hi] : null;
  const band = c.band;
  const found = (Array.isArray(band) ? pair(band[0], band[1]) : null)
    ?? (typeof band === 'object' && band !== null && !Array.isArray(band)
      ? pair((band as Record<string, unknown>).low ?? (band as Record<string, unknown>).min, (band as Record<string, unknown>).high ?? (band as Record<string, unknown>).max)
      : null)
    ?? pair(c.bandLow, c.bandHigh)
    ?? pair(c.minConfidence, c.maxConfidence);
  return found ?? [DEFAULT_BAND[0], DEFAULT_BAND[1]];
}

/** Whether the run's model is the embedded tiny model (random weights: it cannot write questions). */
export function isTinyModel(manifest: RunManifest): boolean {
  const config = manifest.config ?? {};
  if (config.tiny === true || config.model === 'tiny' || manifest.model === 'tiny') return true;
  return typeof manifest.model === 'string' && /^tiny-qwen2\.5-vl\.gguf$/i.test(basename(manifest.model));
}

function gibberish(manifest: RunManifest, rows: IterationRow[]): { reason: string } | null {
  if (isTinyModel(manifest)) return { reason: 'this run used the embedded tiny model, whose weights are random' };
  const asked = rows.filter((r) => r.questioner.questions > 0 || r.candidates.total > 0);
  if (asked.length === 0) return null;
  let valid = 0;
  let total = 0;
  for (const r of asked) {
    if (r.questioner.questions > 0 && r.questioner.validRate !== null) {
      valid += r.questioner.validRate * r.questioner.questions;
      total += r.questioner.questions;
    }
    valid += r.candidates.valid;
    total += r.candidates.total;
  }
  if (total > 0 && valid / total <= GIBBERISH_VALID_RATE) {
    return { reason: `only ${(100 * valid / total).toFixed(1)}% of its questions parse` };
  }
  return null;
}

function examples(it: IterationRecords, count: number): { iteration: number; kept: QuestionExample[]; dropped: QuestionExample[] } {
  const kept = it.candidates.filter((c) => c.kept === true);
  const droppedValid = it.candidates.filter((c) => c.kept !== true && c.valid);
  const droppedInvalid = it.candidates.filter((c) => c.kept !== true && !c.valid);
  // Prefer dropped questions that parsed (their confidence says something); fill with invalid ones.
  const dropped = [...spread(droppedValid, count), ...spread(droppedInvalid, Math.max(0, count - droppedValid.length))];
  return { iteration: it.iteration, kept: spread(kept, count).map(example), dropped: dropped.map(example) };
}

/** Up to `count` items spread evenly over the list (not just its first few). */
function spread<T>(list: readonly T[], count: number): T[] {
  if (list.length <= count) return [...list];
  return Array.from({ length: count }, (_, i) => list[Math.floor((i * list.length) / count)]!);
}

const RAW_CHARS = 160;

function example(c: QuestionRecord): QuestionExample {
  const raw = typeof c.raw === 'string' ? c.raw : '';
  return {
    step: c.step,
    image: c.image?.path ?? '',
    type: c.type ?? '',
    question: c.question ?? '',
    raw: raw.length > RAW_CHARS ? `${raw.slice(0, RAW_CHARS)}…` : raw,
    valid: c.valid,
    silver: c.silver ?? '',
    confidence: c.confidence,
    kept: c.kept === true,
    dropReason: c.dropReason ?? (c.valid ? '' : 'the output does not parse'),
  };
}
