// The per-iteration table, as cells (for the terminal and the HTML alike), and report.json.
import { basename, extname } from 'node:path';
import type { EvalSummary } from '../records.js';
import type { IterationRow, RunReport } from './aggregate.js';

export interface Table {
  headers: string[];
  /** Right-align numeric columns. */
  align: Array<'left' | 'right'>;
  rows: string[][];
}

const DASH = '-';

/** 0.4567 -> "45.7%"; null -> "-". */
export function percent(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined || !Number.isFinite(value) ? DASH : `${(100 * value).toFixed(digits)}%`;
}

/** 0.45678 -> "0.457"; null -> "-". */
export function fixed(value: number | null | undefined, digits = 3): string {
  return value === null || value === undefined || !Number.isFinite(value) ? DASH : value.toFixed(digits);
}

/** The column name of a benchmark: its file name without .jsonl. */
export function benchName(bench: string): string {
  const base = basename(bench);
  return extname(base) === '.jsonl' ? base.slice(0, -'.jsonl'.length) : base;
}

/** Benchmarks evaluated in this run, in order of first appearance. */
export function benchNames(evals: readonly EvalSummary[]): string[] {
  return [...new Set(evals.map((e) => benchName(e.bench)))];
}

/** The last evaluation of `bench` in `row` (a re-run replaces an earlier one). */
export function evalOf(row: IterationRow, bench: string): EvalSummary | undefined {
  return row.eval.filter((e) => benchName(e.bench) === bench).at(-1);
}

/** One row per iteration: the Questioner, the candidates, the Reasoner, then one column per benchmark. */
export function iterationTable(report: RunReport): Table {
  const benches = benchNames(report.evals);
  const headers = [
    'iteration', 'Q steps', 'valid questions', 'mean confidence', 'in band', 'Q reward', 'diversity penalty',
    'kept', 'R reward', 'R accuracy (silver)', ...benches.map((b) => `eval ${b}`),
  ];
  const rows = report.iterations.map((r) => {
    const noQuestions = r.questioner.questions === 0 && r.questioner.steps === 0;
    return [
      r.iteration === 0 ? '0 (base)' : String(r.iteration),
      noQuestions ? DASH : String(r.questioner.steps),
      percent(r.questioner.validRate),
      fixed(r.candidates.meanConfidence),
      percent(r.candidates.shareInBand),
      fixed(r.questioner.meanReward),
      fixed(r.questioner.meanPenalty),
      r.candidates.total === 0 ? DASH : `${r.candidates.kept}/${r.candidates.total}`,
      fixed(r.reasoner.meanReward),
      percent(r.reasoner.accuracy),
      ...benches.map((b) => {
        const e = evalOf(r, b);
        return e ? `${percent(e.overall.accuracy)} (${e.overall.correct}/${e.overall.total})` : DASH;
      }),
    ];
  });
  return { headers, align: headers.map((_, i) => (i === 0 ? 'left' : 'right')), rows };
}

/** Column-aligned plain text, two spaces between columns, a rule under the header. */
export function formatTable(table: Table): string {
  const widths = table.headers.map((h, c) => Math.max(h.length, ...table.rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) => cells
    .map((cell, c) => (table.align[c] === 'right' ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
    .join('  ')
    .trimEnd();
  return [line(table.headers), widths.map((w) => '-'.repeat(w)).join('  '), ...table.rows.map(line)].join('\n');
}

/** report.json: the whole report in machine form (numbers unrounded, null for "no data"). */
export function reportJson(report: RunReport, plots: string[]): object {
  return {
    version: report.version,
    dir: report.dir,
    manifest: report.manifest,
    band: report.band,
    gibberish: report.gibberish,
    iterations: report.iterations,
    steps: report.steps,
    evals: report.evals,
    examples: report.examples,
    plots,
    warnings: report.warnings,
  };
}
