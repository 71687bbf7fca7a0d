// The world experiment's report (issue 7 part 6): is there a label-free gain, and can a reader see
// where it comes from? OUT/experiment.json (runWorldExperiment) and the evolve run folders ->
//
// OUT/report/
//   accuracy.png       held-out accuracy per iteration per arm, greedy | mean@N, mean with ±sd whiskers
//   families.png       per-family accuracy: the pre-trained baseline vs each arm's last iteration
//   confidence.png     the VisPlay arm's candidate confidence per iteration (first seed, run records)
//   pretrain-loss.png  the pre-training loss per step (the pretrain folder's log.jsonl)
//   summary.json       the tables' numbers, unrounded (null where there is no score)
//   index.html         one self-contained page: tables, settings, the plots and the example
//                      questions with their images, all as data URIs (nothing is fetched)
//
// Statistics: the pre-trained model is scored once (seed null), so iteration 0 is one number shared
// by every arm; an arm's later iterations are mean ± sample sd over seeds (meanSd). A gain is
// computed per seed (arm at the iteration − baseline, in points) and then summarised, so its sd is
// the spread of the seeds' gains. Scores of seeds or arms that experiment.json does not list (an
// earlier run's lines in results.jsonl) are left out with a warning, never mixed in.
//
// The run-folder parts (histograms, examples) come from the evolve report code (loadRun,
// aggregateRun); the line charts are plots.ts's. plots.ts has no bar chart and no error bars, so the
// family bars are drawn here and the whiskers ride on the line chart's series (see accuracyPanel).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import sharp from 'sharp';
import { VisplayError } from '../errors.js';
import { aggregateRun, type IterationRow, type QuestionExample, type RunReport } from '../visplay/report/aggregate.js';
import { formatTable, loadRun, writeAtomic, type Table } from '../visplay/report/index.js';
import { readJsonl } from '../visplay/report/load.js';
import { escapeXml, histogramChart, lineChart, PLOT_HEIGHT, PLOT_WIDTH, percentTickFormat, rasterise, ticks, type Series } from '../visplay/report/plots.js';
import { fixed, percent } from '../visplay/report/tables.js';
import { ARMS, meanSd, type Arm, type ExperimentScore, type ExperimentSummary } from './experiment.js';
import { FAMILIES } from './questions.js';

const esc = escapeXml;

// ---- reading experiment.json --------------------------------------------------------------------

/**
 * OUT/experiment.json, checked field by field so that a table is never built from a half-valid
 * file. Throws ERR_FILE_NOT_FOUND (no file: the experiment has not finished) or ERR_INVALID_ARG
 * naming the first bad field.
 */
export function readExperiment(outDir: string): ExperimentSummary {
  const out = resolve(outDir);
  const path = join(out, 'experiment.json');
  if (!existsSync(path)) {
    // experiment.json is written once, at the end; results.jsonl grows while it runs.
    const partial = existsSync(join(out, 'results.jsonl')) ? ' (results.jsonl is there: the experiment has not finished or was stopped; rerun it to resume)' : '';
    throw new VisplayError('ERR_FILE_NOT_FOUND', `${path} not found: is ${out} the --out folder of a world experiment?${partial}`);
  }
  if (!statSync(path).isFile()) throw new VisplayError('ERR_INVALID_ARG', `${path} is not a file`);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new VisplayError('ERR_INVALID_ARG', `${path} is not valid JSON: ${(e as Error).message}`);
  }
  return checkExperiment(value, path);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A bad value as an error message shows it. */
function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

/** The shape of an ExperimentSummary, as far as the report reads it; `path` names the file in errors. */
export function checkExperiment(value: unknown, path = 'experiment.json'): ExperimentSummary {
  const bad = (field: string, expected: string, got: unknown): never => {
    throw new VisplayError('ERR_INVALID_ARG', `${path}: ${field} must be ${expected} (got ${shown(got)})`);
  };
  if (!isObject(value)) bad('the file', 'one JSON object (an ExperimentSummary)', value);
  const v = value as Record<string, unknown>;
  if (typeof v.world !== 'string') bad('world', 'a folder path', v.world);
  if (!isObject(v.pretrained) || typeof v.pretrained.modelPath !== 'string') bad('pretrained.modelPath', 'a model path', (v.pretrained as Record<string, unknown> | undefined)?.modelPath);
  const pre = (v.pretrained as Record<string, unknown>).summary;
  if (pre !== undefined) {
    if (!isObject(pre)) bad('pretrained.summary', 'a pre-training summary', pre);
    for (const k of ['firstLoss', 'lastLoss', 'trainedTokens', 'seconds']) {
      if (typeof (pre as Record<string, unknown>)[k] !== 'number') bad(`pretrained.summary.${k}`, 'a number', (pre as Record<string, unknown>)[k]);
    }
  }
  if (!Array.isArray(v.seeds) || v.seeds.some((s) => !Number.isInteger(s))) bad('seeds', 'a list of integers', v.seeds);
  if (!Array.isArray(v.arms) || v.arms.some((a) => !(ARMS as readonly unknown[]).includes(a))) bad('arms', `a list of ${ARMS.join(', ')}`, v.arms);
  if (!isObject(v.evolve)) bad('evolve', 'an object (the evolve settings)', v.evolve);
  const iterations = (v.evolve as Record<string, unknown>).iterations;
  if (iterations !== undefined && !(Number.isInteger(iterations) && (iterations as number) >= 0)) bad('evolve.iterations', 'a whole number', iterations);
  if (!Array.isArray(v.scores)) bad('scores', 'a list of scores', v.scores);
  (v.scores as unknown[]).forEach((s, i) => {
    const at = `scores[${i}]`;
    if (!isObject(s)) return bad(at, 'an object', s);
    if (typeof s.mode !== 'string' || s.mode === '') bad(`${at}.mode`, 'a mode name ("greedy", "mean@8")', s.mode);
    if (s.arm !== 'pretrained' && !(ARMS as readonly unknown[]).includes(s.arm)) bad(`${at}.arm`, `"pretrained" or an arm (${ARMS.join(', ')})`, s.arm);
    if (!(s.seed === null || Number.isInteger(s.seed))) bad(`${at}.seed`, 'an integer or null', s.seed);
    if (!(Number.isInteger(s.iteration) && (s.iteration as number) >= 0)) bad(`${at}.iteration`, 'a whole number', s.iteration);
    if (s.arm === 'pretrained' ? s.seed !== null || s.iteration !== 0 : s.seed === null || s.iteration === 0) {
      bad(at, 'the pre-trained baseline (seed null, iteration 0) or an arm\'s iteration ≥ 1 with a seed', { arm: s.arm, seed: s.seed, iteration: s.iteration });
    }
    checkAccuracy(s.overall, `${at}.overall`, bad);
    if (!isObject(s.byFamily)) bad(`${at}.byFamily`, 'an object of accuracies', s.byFamily);
    for (const [family, a] of Object.entries(s.byFamily as Record<string, unknown>)) checkAccuracy(a, `${at}.byFamily.${family}`, bad);
  });
  return value as unknown as ExperimentSummary;
}

function checkAccuracy(a: unknown, at: string, bad: (field: string, expected: string, got: unknown) => never): void {
  if (!isObject(a)) bad(at, 'an accuracy { accuracy, correct, total }', a);
  const { accuracy, correct, total } = a as Record<string, unknown>;
  if (typeof accuracy !== 'number' || !(accuracy >= 0 && accuracy <= 1)) bad(`${at}.accuracy`, 'a number in [0, 1]', accuracy);
  if (!Number.isInteger(correct) || !Number.isInteger(total)) bad(`${at}.correct/total`, 'whole numbers', { correct, total });
}

// ---- the tables (pure) --------------------------------------------------------------------------

export interface Stat {
  mean: number;
  sd: number;
  n: number;
}

export interface AccuracyRow {
  mode: string;
  arm: Arm;
  /** Index = iteration 0..N. [0] is the pre-trained baseline (shared by every arm, n = 1); null: no score. */
  accuracy: Array<Stat | null>;
  /** Index = iteration: per-seed (accuracy − baseline) in points, over seeds; [0] and unscored iterations null. */
  gain: Array<Stat | null>;
}

export interface FamilyRow {
  mode: string;
  family: string;
  /** Test items of this family. */
  items: number;
  /** The pre-trained model's accuracy on the family (null: no baseline score). */
  baseline: number | null;
  /** Per arm, at the last iteration: accuracy over seeds and the gain in points. */
  arms: Record<string, { accuracy: Stat | null; gain: Stat | null }>;
}

export interface WorldTables {
  seeds: number[];
  arms: Arm[];
  /** 'greedy' first, then the sampled modes ('mean@8'). */
  modes: string[];
  /** N: the experiment's iterations (evolve.iterations, else the highest scored). */
  lastIteration: number;
  families: string[];
  /** Overall baseline accuracy per mode (null: not scored). */
  baseline: Record<string, number | null>;
  accuracy: AccuracyRow[];
  byFamily: FamilyRow[];
  /** Cells: accuracy per (mode, arm) and iteration, with the gain at N. */
  accuracyTable: Table;
  /** Cells: per (mode, family), the baseline and each arm at N with its gain. */
  familyTable: Table;
  /** What was left out or missing, one line each. */
  warnings: string[];
}

type Key = string;
const keyOf = (arm: string, seed: number | null, iteration: number, mode: string): Key => `${arm}\u0000${seed}\u0000${iteration}\u0000${mode}`;

/** Every number of the report's tables, and their cells; a pure function of the summary. */
export function worldTables(summary: ExperimentSummary): WorldTables {
  const warnings: string[] = [];
  const seeds = [...summary.seeds];
  const arms = ARMS.filter((a) => summary.arms.includes(a));
  // results.jsonl is append-only: a rerun may add a score again; the last one counts.
  const scores = new Map<Key, ExperimentScore>();
  let outside = 0;
  let repeated = 0;
  for (const s of summary.scores) {
    if (s.arm !== 'pretrained' && (!arms.includes(s.arm) || !seeds.includes(s.seed as number))) {
      outside++;
      continue;
    }
    const k = keyOf(s.arm, s.seed, s.iteration, s.mode);
    if (scores.has(k)) repeated++;
    scores.set(k, s);
  }
  if (outside > 0) warnings.push(`${outside} scores of arms or seeds that experiment.json does not list were left out`);
  if (repeated > 0) warnings.push(`${repeated} scores were repeated in the results; the last of each was used`);

  const all = [...scores.values()];
  const modes = [...new Set(all.map((s) => s.mode))].sort((a, b) => (a === 'greedy' ? -1 : b === 'greedy' ? 1 : a.localeCompare(b)));
  const configured = summary.evolve.iterations;
  const lastIteration = typeof configured === 'number' ? configured : Math.max(0, ...all.map((s) => s.iteration));
  const seen = new Set(all.flatMap((s) => Object.keys(s.byFamily)));
  const families = [...FAMILIES.filter((f) => seen.has(f)), ...[...seen].filter((f) => !(FAMILIES as readonly string[]).includes(f)).sort()];

  const baseline: Record<string, number | null> = {};
  const accuracy: AccuracyRow[] = [];
  const byFamily: FamilyRow[] = [];
  for (const mode of modes) {
    const base = scores.get(keyOf('pretrained', null, 0, mode));
    baseline[mode] = base?.overall.accuracy ?? null;
    if (!base) warnings.push(`no ${mode} score of the pre-trained model: no baseline and no gains for ${mode}`);
    const pick = (arm: Arm, iteration: number, value: (s: ExperimentScore) => number | undefined) =>
      seeds.flatMap((seed) => {
        const v = scores.get(keyOf(arm, seed, iteration, mode));
        const x = v ? value(v) : undefined;
        return x === undefined ? [] : [x];
      });
    const stat = (values: number[]): Stat | null => (values.length === 0 ? null : meanSd(values));

    for (const arm of arms) {
      const row: AccuracyRow = { mode, arm, accuracy: [base ? meanSd([base.overall.accuracy]) : null], gain: [null] };
      for (let it = 1; it <= lastIteration; it++) {
        const values = pick(arm, it, (s) => s.overall.accuracy);
        row.accuracy.push(stat(values));
        row.gain.push(base ? stat(values.map((v) => 100 * (v - base.overall.accuracy))) : null);
        if (values.length < seeds.length) warnings.push(`${arm}, ${mode}, iteration ${it}: ${values.length} of ${seeds.length} seeds scored`);
      }
      accuracy.push(row);
    }
    for (const family of families) {
      const b = base?.byFamily[family];
      const anyScore = all.find((s) => s.mode === mode && s.byFamily[family] !== undefined);
      const row: FamilyRow = { mode, family, items: (b ?? anyScore?.byFamily[family])?.total ?? 0, baseline: b?.accuracy ?? null, arms: {} };
      for (const arm of arms) {
        const values = pick(arm, lastIteration, (s) => s.byFamily[family]?.accuracy);
        row.arms[arm] = {
          accuracy: stat(values),
          gain: b ? stat(values.map((v) => 100 * (v - b.accuracy))) : null,
        };
      }
      byFamily.push(row);
    }
  }
  return {
    seeds, arms, modes, lastIteration, families, baseline, accuracy, byFamily,
    accuracyTable: accuracyTable(accuracy, lastIteration, seeds.length),
    familyTable: familyTable(byFamily, arms, lastIteration, seeds.length),
    warnings,
  };
}

/** 0.55 ± 0.0707 -> "55.0 ± 7.1"; one value -> "45.0"; fewer seeds than run -> "… (n=1)". */
export function formatAccuracy(s: Stat | null, seeds: number): string {
  if (s === null) return '-';
  const text = s.n > 1 ? `${(100 * s.mean).toFixed(1)} ± ${(100 * s.sd).toFixed(1)}` : (100 * s.mean).toFixed(1);
  return s.n < seeds && seeds > 1 ? `${text} (n=${s.n})` : text;
}

/** A gain in points: "+10.0 ± 7.1", "-2.5". */
export function formatGain(s: Stat | null, seeds: number): string {
  if (s === null) return '-';
  // toFixed rounds -0.04 to "-0.0"; a gain that rounds to zero is shown as 0.0.
  const mean = Math.abs(s.mean) < 0.05 ? '0.0' : `${s.mean > 0 ? '+' : ''}${s.mean.toFixed(1)}`;
  const text = s.n > 1 ? `${mean} ± ${s.sd.toFixed(1)}` : mean;
  return s.n < seeds && seeds > 1 ? `${text} (n=${s.n})` : text;
}

function accuracyTable(rows: AccuracyRow[], last: number, seeds: number): Table {
  const headers = ['mode', 'arm', 'iter 0 (pre-trained)', ...Array.from({ length: last }, (_, i) => `iter ${i + 1}`), `gain @${last} (points)`];
  return {
    headers,
    align: headers.map((_, i) => (i < 2 ? 'left' : 'right')),
    // Iteration 0 is the one baseline score, not a mean over seeds: no "(n=1)" mark.
    rows: rows.map((r) => [r.mode, r.arm, ...r.accuracy.map((s, i) => formatAccuracy(s, i === 0 ? 1 : seeds)), formatGain(r.gain[last] ?? null, seeds)]),
  };
}

function familyTable(rows: FamilyRow[], arms: Arm[], last: number, seeds: number): Table {
  const headers = ['mode', 'family', 'items', 'pre-trained', ...arms.flatMap((a) => [`${a} @${last}`, 'gain'])];
  return {
    headers,
    align: headers.map((_, i) => (i < 2 ? 'left' : 'right')),
    rows: rows.map((r) => [
      r.mode, r.family, String(r.items), r.baseline === null ? '-' : (100 * r.baseline).toFixed(1),
      ...arms.flatMap((a) => [formatAccuracy(r.arms[a]?.accuracy ?? null, seeds), formatGain(r.arms[a]?.gain ?? null, seeds)]),
    ]),
  };
}

/** A GitHub-flavoured markdown table (numeric columns right-aligned). */
export function markdownTable(table: Table): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${table.headers.map(cell).join(' | ')} |`,
    `|${table.align.map((a) => (a === 'right' ? '---:' : '---')).join('|')}|`,
    ...table.rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** What the CLI prints (fixed-width text) and the same tables as markdown for a closing note; each ends with a newline. */
export function formatWorldTable(summary: ExperimentSummary): { text: string; markdown: string } {
  const t = worldTables(summary);
  const caption = `Held-out accuracy, % (mean ± sd over ${t.seeds.length} seed${t.seeds.length === 1 ? '' : 's'}: ${t.seeds.join(', ')}); ` +
    'iteration 0 is the pre-trained model, scored once; gains are in points over it, per seed.';
  const familyCaption = `Per question family at iteration ${t.lastIteration} against the pre-trained model.`;
  const notes = t.warnings.map((w) => `note: ${w}`);
  return {
    text: [caption, '', formatTable(t.accuracyTable), '', familyCaption, '', formatTable(t.familyTable), ...(notes.length ? ['', ...notes] : []), ''].join('\n'),
    markdown: [caption, '', markdownTable(t.accuracyTable), '', familyCaption, '', markdownTable(t.familyTable), ...(notes.length ? ['', ...notes.map((n) => `- ${n}`)] : []), ''].join('\n'),
  };
}

// ---- plots --------------------------------------------------------------------------------------

/**
 * plots.ts's first four colours. lineChart colours a series by its position (pre-trained first,
 * then the arms in order), so the bars take theirs by the same position: an arm has one colour on
 * every chart, whichever arms ran.
 */
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];

/**
 * One mode's accuracy per iteration, a line per arm from the shared baseline. lineChart has no
 * error bars, so each arm's ±sd whiskers are extra segments of its own series after a break (a
 * null y lifts the pen): they share its colour and legend entry, and the dots at their ends serve
 * as caps.
 */
function accuracyPanel(t: WorldTables, mode: string): string {
  const base = t.baseline[mode] ?? null;
  const series: Series[] = [{ name: 'pre-trained', points: Array.from({ length: t.lastIteration + 1 }, (_, i): [number, number | null] => [i, base]) }];
  for (const row of t.accuracy.filter((r) => r.mode === mode)) {
    const points: Array<[number, number | null]> = row.accuracy.map((s, i) => [i, s?.mean ?? null]);
    row.accuracy.forEach((s, i) => {
      if (s && s.n > 1 && s.sd > 0) points.push([i, null], [i, Math.max(0, s.mean - s.sd)], [i, Math.min(1, s.mean + s.sd)]);
    });
    series.push({ name: row.arm, points });
  }
  return lineChart({
    title: `Held-out accuracy, ${mode} (mean ± sd over ${t.seeds.length} seed${t.seeds.length === 1 ? '' : 's'})`,
    xLabel: 'VisPlay iteration (0 = pre-trained)', yLabel: 'accuracy', series, integerX: true, percentY: true,
  });
}

const MARGIN = { top: 64, right: 28, bottom: 58, left: 72 };

/**
 * Grouped bars with ±sd whiskers on a 0–100% axis: one group per category, one bar per entry.
 * Drawn here because plots.ts has no categorical chart; sizes and fonts follow its charts.
 */
export function groupedBarChart(spec: {
  title: string;
  categories: string[];
  entries: Array<{ name: string; colour: string; values: Array<Stat | null> }>;
}): string {
  const width = PLOT_WIDTH - MARGIN.left - MARGIN.right;
  const height = PLOT_HEIGHT - MARGIN.top - MARGIN.bottom;
  const bottom = MARGIN.top + height;
  const yOf = (v: number) => bottom - Math.max(0, Math.min(1, v)) * height;
  const r = (v: number) => Math.round(v * 10) / 10;
  const font = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"';
  const label = (x: number, y: number, s: string, anchor: string, size = 11) =>
    `<text x="${r(x)}" y="${r(y)}" text-anchor="${anchor}" ${font} font-size="${size}" fill="#222">${esc(s)}</text>`;
  const parts: string[] = [`<rect width="${PLOT_WIDTH}" height="${PLOT_HEIGHT}" fill="#ffffff"/>`];
  parts.push(`<text x="${MARGIN.left}" y="22" ${font} font-size="15" font-weight="bold" fill="#222">${esc(spec.title)}</text>`);
  const yTicks = ticks(0, 1, 5, false);
  const percent = percentTickFormat(yTicks);
  for (const tick of yTicks) {
    parts.push(`<line x1="${MARGIN.left}" y1="${r(yOf(tick))}" x2="${MARGIN.left + width}" y2="${r(yOf(tick))}" stroke="#e3e3e3"/>`);
    parts.push(label(MARGIN.left - 8, yOf(tick) + 4, percent(tick), 'end'));
  }
  const group = width / Math.max(1, spec.categories.length);
  const bar = (group * 0.8) / Math.max(1, spec.entries.length);
  spec.categories.forEach((category, c) => {
    const x0 = MARGIN.left + c * group + group * 0.1;
    spec.entries.forEach((e, k) => {
      const s = e.values[c];
      if (!s) return;
      const x = x0 + k * bar;
      parts.push(`<rect x="${r(x + 1)}" y="${r(yOf(s.mean))}" width="${r(bar - 2)}" height="${r(bottom - yOf(s.mean))}" fill="${e.colour}"/>`);
      if (s.n > 1 && s.sd > 0) {
        const mid = r(x + bar / 2);
        parts.push(`<path d="M${mid} ${r(yOf(s.mean - s.sd))}V${r(yOf(s.mean + s.sd))}M${r(mid - 3)} ${r(yOf(s.mean - s.sd))}H${r(mid + 3)}` +
          `M${r(mid - 3)} ${r(yOf(s.mean + s.sd))}H${r(mid + 3)}" stroke="#222" stroke-width="1.2" fill="none"/>`);
      }
    });
    parts.push(label(MARGIN.left + (c + 0.5) * group, bottom + 19, category, 'middle', 12));
  });
  parts.push(`<path d="M${MARGIN.left} ${MARGIN.top}V${bottom}H${MARGIN.left + width}" stroke="#444" fill="none"/>`);
  parts.push(`<text transform="translate(18 ${r(MARGIN.top + height / 2)}) rotate(-90)" text-anchor="middle" ${font} font-size="12" fill="#222">accuracy</text>`);
  let lx = MARGIN.left;
  for (const e of spec.entries) {
    parts.push(`<rect x="${r(lx)}" y="34" width="22" height="11" fill="${e.colour}"/>`, label(lx + 28, 44, e.name, 'start', 12));
    lx += 28 + e.name.length * 7 + 22;  // DejaVu Sans at 12 px: about 7 px a character
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${PLOT_WIDTH}" height="${PLOT_HEIGHT}" viewBox="0 0 ${PLOT_WIDTH} ${PLOT_HEIGHT}" role="img">\n` +
    `<title>${esc(spec.title)}</title>\n${parts.join('\n')}\n</svg>`;
}

function familiesPanel(t: WorldTables, mode: string): string {
  const rows = t.byFamily.filter((r) => r.mode === mode);
  return groupedBarChart({
    title: `Per family, ${mode}: pre-trained vs iteration ${t.lastIteration}`,
    categories: rows.map((r) => r.family),
    entries: [
      { name: 'pre-trained', colour: PALETTE[0]!, values: rows.map((r) => (r.baseline === null ? null : meanSd([r.baseline]))) },
      ...t.arms.map((arm, i) => ({ name: arm, colour: PALETTE[(i + 1) % PALETTE.length]!, values: rows.map((r) => r.arms[arm]?.accuracy ?? null) })),
    ],
  });
}

/**
 * The candidates' confidence per iteration: the share of valid candidates in each tenth of [0, 1]
 * (one line per iteration, so a shift between iterations shows), then each iteration's histogram
 * of counts with the kept band shaded.
 */
function confidencePanels(report: RunReport | null): string[] {
  const rows = report?.iterations.filter((r) => r.iteration >= 1) ?? [];
  const series = rows.map((r): Series => {
    const valid = r.candidates.histogram.reduce((a, b) => a + b, 0);
    const bins = r.candidates.histogram.length;
    return {
      name: `iteration ${r.iteration} (${valid} valid)`,
      points: r.candidates.histogram.map((count, b): [number, number | null] => [(b + 0.5) / bins, valid > 0 ? count / valid : null]),
    };
  });
  const shares = lineChart({
    title: 'Share of the VisPlay candidates at each confidence',
    xLabel: 'confidence (majority share of the Reasoner\'s answers), tenths', yLabel: 'share of valid candidates',
    series, yFromZero: true, percentY: true,
  });
  return [shares, ...rows.map((r) => histogramChart({
    title: `Candidates' confidence, iteration ${r.iteration}`,
    xLabel: 'confidence', yLabel: 'candidates', counts: r.candidates.histogram,
    band: { range: report!.band, label: `kept band ${report!.band[0]}–${report!.band[1]}` }, barLabel: 'valid candidates',
  }))];
}

/** Charts of plots.ts's size side by side, `columns` to a row, as one SVG (an empty chart for none: a PNG needs a size). */
export function gridSvg(panels: string[], columns: number, title = 'no scores yet'): string {
  if (panels.length === 0) return lineChart({ title, xLabel: '', yLabel: '', series: [] });
  const cols = Math.max(1, Math.min(columns, panels.length));
  const width = PLOT_WIDTH * cols;
  const height = PLOT_HEIGHT * Math.ceil(panels.length / cols);
  const cells = panels.map((svg, i) => `<g transform="translate(${(i % cols) * PLOT_WIDTH} ${Math.floor(i / cols) * PLOT_HEIGHT})">\n${svg}\n</g>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">\n` +
    `<rect width="${width}" height="${height}" fill="#ffffff"/>\n${cells.join('\n')}\n</svg>`;
}

/** What the loss plot reads of a pre-training log.jsonl line (pretrain.ts's StepLog has more). */
function isLossLine(v: unknown): v is { step: number; loss: number } {
  return isObject(v) && typeof v.step === 'number' && typeof v.loss === 'number';
}

// ---- the page -----------------------------------------------------------------------------------

const STYLE = `
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1480px; padding: 0 1em; color: #222; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img.plot { max-width: 100%; border: 1px solid #eee; }
img.small { width: 480px; }
img.scene { width: 112px; image-rendering: pixelated; border: 1px solid #ccc; }
.question { white-space: pre-wrap; word-break: break-word; max-width: 560px; }
.raw { white-space: pre-wrap; word-break: break-all; color: #777; font-family: "DejaVu Sans Mono", monospace; font-size: 0.85em; max-width: 560px; }
.warn { color: #8a5a00; }
`;

function htmlTable(table: Table): string {
  const head = `<thead><tr>${table.headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>`;
  const body = table.rows.map((row) => `<tr>${row.map((c, i) => `<td${table.align[i] === 'right' ? ' class="num"' : ''}>${esc(c)}</td>`).join('')}</tr>`);
  return `<table>\n${head}\n<tbody>\n${body.join('\n')}\n</tbody>\n</table>`;
}

function fieldTable(fields: Array<[string, unknown]>): string {
  const value = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v) ?? '-');
  return `<table>\n<tbody>\n${fields.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(value(v))}</td></tr>`).join('\n')}\n</tbody>\n</table>`;
}

const dataUri = (png: Uint8Array) => `data:image/png;base64,${Buffer.from(png).toString('base64')}`;

/** Example rows with their images; `image` gives a data URI for a recorded path (null: not found). */
function exampleRows(caption: string, examples: QuestionExample[], image: (path: string) => string | null): string {
  if (examples.length === 0) return `<p class="meta">${esc(caption)}: none.</p>`;
  const rows = examples.map((e) => {
    const uri = image(e.image);
    const picture = uri ? `<img class="scene" src="${uri}" alt="${esc(e.image)}">` : `<span class="warn">image not found: ${esc(e.image)}</span>`;
    const question = e.valid ? `<div class="question">${esc(e.question)}</div>` : `<div class="raw">${esc(e.raw)}</div>`;
    return `<tr><td>${picture}</td><td>${esc(e.type || '-')}</td><td>${question}</td><td>${esc(e.silver || '-')}</td>` +
      `<td class="num">${e.valid ? esc(fixed(e.confidence, 2)) : '-'}</td><td>${esc(e.kept ? 'kept' : e.dropReason)}</td></tr>`;
  });
  return `<table>\n<caption style="text-align:left;font-weight:bold">${esc(caption)}</caption>\n` +
    '<thead><tr><th>image</th><th>type</th><th>question (raw output when it does not parse)</th><th>silver label</th><th>confidence</th><th>kept or why not</th></tr></thead>\n' +
    `<tbody>\n${rows.join('\n')}\n</tbody>\n</table>`;
}

function difficultyLine(row: IterationRow | undefined): string {
  if (!row) return '';
  const c = row.candidates;
  return `<p class="meta">${c.valid} valid of ${c.total} candidates; mean confidence ${esc(fixed(c.meanConfidence, 2))} ` +
    `(kept: ${esc(fixed(c.keptMeanConfidence, 2))}, ${c.kept} kept); ${esc(percent(c.shareInBand))} in the band. ` +
    'Lower confidence = harder for the current Reasoner.</p>';
}

// ---- writeWorldReport ---------------------------------------------------------------------------

export interface WrittenWorldReport {
  /** OUT/report, absolute. */
  dir: string;
  html: string;
  json: string;
  /** The PNG files, in the order the page shows them. */
  plots: string[];
  tables: WorldTables;
}

/** Reads OUT/experiment.json and OUT/runs/ and writes OUT/report/ (see the file comment). */
export async function writeWorldReport(outDir: string): Promise<WrittenWorldReport> {
  const out = resolve(outDir);
  const summary = readExperiment(out);
  const tables = worldTables(summary);
  const warnings = [...tables.warnings];
  const dir = join(out, 'report');
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new VisplayError('ERR_OUTPUT', `cannot create the report folder ${dir}: ${(e as Error).message}`);
  }

  // The VisPlay arm's first seed (seed 0 by default): its run records give the histograms and examples.
  const exampleSeed = tables.seeds[0];
  let run: RunReport | null = null;
  let fileOf: (path: string) => string | undefined = () => undefined;
  if (exampleSeed !== undefined && tables.arms.includes('visplay')) {
    const runDir = join(out, 'runs', `visplay-seed${exampleSeed}`);
    try {
      const records = loadRun(runDir);
      run = aggregateRun(records, 3);
      fileOf = imageResolver(records.dir, records.manifest.images ?? {});
      warnings.push(...records.warnings.map((w) => `visplay-seed${exampleSeed}: ${w}`));
    } catch (e) {
      // A missing or unreadable run folder costs this section only; anything else is a bug.
      if (!(e instanceof VisplayError)) throw e;
      warnings.push(`no confidence histograms or examples: ${e.message}`);
    }
  }

  const pretrainDir = summary.pretrained.dir ?? dirname(summary.pretrained.summary?.modelPath ?? summary.pretrained.modelPath);
  const lossLines = readJsonl(join(pretrainDir, 'log.jsonl'), 'pre-training log.jsonl', warnings, isLossLine);
  if (lossLines.length === 0) warnings.push(`no pre-training log at ${join(pretrainDir, 'log.jsonl')}`);

  const charts: Array<{ name: string; alt: string; svg: string }> = [
    { name: 'accuracy', alt: 'held-out accuracy per iteration and arm', svg: gridSvg(tables.modes.map((m) => accuracyPanel(tables, m)), 2) },
    { name: 'families', alt: 'per-family accuracy, baseline vs the last iteration', svg: gridSvg(tables.modes.map((m) => familiesPanel(tables, m)), 2) },
    { name: 'confidence', alt: 'candidate confidence per iteration', svg: gridSvg(confidencePanels(run), 2) },
    {
      name: 'pretrain-loss', alt: 'pre-training loss',
      svg: lineChart({
        title: 'Pre-training loss (cross-entropy per token)', xLabel: 'optimizer step', yLabel: 'loss', integerX: true, yFromZero: true,
        series: [{ name: 'loss', points: lossLines.map((l): [number, number] => [l.step, l.loss]) }],
      }),
    },
  ];
  const png = new Map<string, Buffer>();
  const plots: string[] = [];
  for (const chart of charts) {
    const bytes = await rasterise(chart.svg);
    const path = join(dir, `${chart.name}.png`);
    await writeAtomic(path, bytes);
    png.set(chart.name, bytes);
    plots.push(path);
  }

  const embedded = new Map<string, string | null>();
  for (const ex of run?.examples ?? []) {
    for (const e of [...ex.kept, ...ex.dropped]) {
      if (embedded.has(e.image)) continue;
      const file = fileOf(e.image);
      try {
        // Re-encoded, so whatever the pool's format the page holds a PNG.
        embedded.set(e.image, file ? dataUri(await sharp(file).png().toBuffer()) : null);
      } catch {
        embedded.set(e.image, null);
      }
    }
  }

  const json = join(dir, 'summary.json');
  const { accuracyTable: _a, familyTable: _f, ...numbers } = tables;
  await writeAtomic(json, `${JSON.stringify({
    version: 1, experiment: out, world: summary.world, ...numbers, warnings,
    pretrain: summary.pretrained.summary ?? null, seconds: summary.seconds ?? null,
    plots: plots.map((p) => basename(p)),
  }, null, 2)}\n`);

  const html = join(dir, 'index.html');
  await writeAtomic(html, worldHtml({
    out, summary, tables, warnings, png, run, exampleSeed,
    image: (path) => embedded.get(path) ?? null, charts,
  }));
  return { dir, html, json, plots, tables: { ...tables, warnings } };
}

/**
 * Recorded image path -> its file (undefined when it is not there): the run's own images.json
 * (absolute files), else the path resolved as the loop did, against the image folder or the
 * manifest's folder.
 */
function imageResolver(runDir: string, source: { root?: string; manifest?: string }): (path: string) => string | undefined {
  const listed = new Map<string, string>();
  const listPath = join(runDir, 'images.json');
  if (existsSync(listPath)) {
    try {
      const list = JSON.parse(readFileSync(listPath, 'utf8')) as unknown;
      if (Array.isArray(list)) for (const im of list) if (isObject(im) && typeof im.path === 'string' && typeof im.file === 'string') listed.set(im.path, im.file);
    } catch {
      // A broken list: resolve each path as below.
    }
  }
  const base = source.root ?? (source.manifest ? dirname(source.manifest) : runDir);
  return (path) => {
    const file = listed.get(path) ?? (isAbsolute(path) ? path : join(base, path));
    return existsSync(file) ? file : undefined;
  };
}

function worldHtml(p: {
  out: string;
  summary: ExperimentSummary;
  tables: WorldTables;
  warnings: string[];
  png: Map<string, Buffer>;
  charts: Array<{ name: string; alt: string }>;
  run: RunReport | null;
  exampleSeed: number | undefined;
  image: (path: string) => string | null;
}): string {
  const { summary, tables: t } = p;
  const img = (name: string, cls = 'plot') => {
    const bytes = p.png.get(name);
    const alt = p.charts.find((c) => c.name === name)?.alt ?? name;
    return bytes ? `<figure id="plot-${esc(name)}"><img class="${cls}" src="${dataUri(bytes)}" alt="${esc(alt)}"></figure>` : '';
  };
  const parts: string[] = [];
  parts.push('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">');
  parts.push(`<title>World experiment ${esc(basename(p.out))}</title>\n<style>${STYLE}</style>\n</head>\n<body>`);
  parts.push(`<h1>World experiment <code>${esc(basename(p.out))}</code>: VisPlay with zero labels</h1>`);
  parts.push(`<p class="meta">${esc(p.out)}; world <code>${esc(summary.world)}</code>; seeds ${esc(t.seeds.join(', '))}; ` +
    `arms ${esc(t.arms.join(', '))}; ${t.lastIteration} iterations` +
    `${summary.seconds ? `; compute ${esc(summary.seconds.total.toFixed(0))} s (pre-training ${esc(summary.seconds.pretrain.toFixed(0))}, ` +
      `VisPlay ${esc(summary.seconds.evolve.toFixed(0))}, scoring ${esc(summary.seconds.eval.toFixed(0))})` : ''}.</p>`);
  parts.push('<p>The pre-trained model (iteration 0) is evaluated once on the held-out test; each arm then runs VisPlay on the ' +
    'unlabelled pool only. <b>shuffled-rewards</b>: the same GRPO steps with each step\'s rewards shuffled across its samples; ' +
    '<b>frozen-questioner</b>: the Questioner kept at its pre-trained state. Goal (issue 7): at least +5 points over the ' +
    'pre-trained model for VisPlay, with the controls clearly below.</p>');

  parts.push('<h2>Held-out accuracy</h2>');
  parts.push(`<p class="meta">%, mean ± sd over ${t.seeds.length} seeds; gains in points over the pre-trained model, per seed. ` +
    '"(n=k)": only k seeds have a score.</p>');
  parts.push(htmlTable(t.accuracyTable));
  parts.push(img('accuracy'));
  parts.push(`<h2>Per question family (iteration ${t.lastIteration})</h2>`);
  parts.push(htmlTable(t.familyTable));
  parts.push(img('families'));

  parts.push(`<h2>Questions the VisPlay Questioner wrote (seed ${esc(String(p.exampleSeed ?? '-'))})</h2>`);
  if (!p.run) {
    parts.push('<p class="warn">The VisPlay run folder could not be read (see the notes at the end).</p>');
  } else {
    parts.push('<p class="meta">Confidence: the share of the previous Reasoner\'s boxed answers that agree with the silver ' +
      '(majority) label. If the Questioner learns to ask harder questions, confidence moves down towards the band.</p>');
    parts.push(img('confidence'));
    for (const ex of p.run.examples) {
      parts.push(`<h3>Iteration ${ex.iteration}</h3>`);
      parts.push(difficultyLine(p.run.iterations.find((r) => r.iteration === ex.iteration)));
      parts.push(exampleRows('Kept (the Reasoner trains on these)', ex.kept, p.image));
      parts.push(exampleRows('Dropped', ex.dropped, p.image));
    }
  }

  parts.push('<h2>Settings</h2>');
  const pre = summary.pretrained.summary;
  parts.push('<h3>Pre-training</h3>');
  parts.push(fieldTable([
    ['model', summary.pretrained.modelPath],
    ...(pre ? Object.entries(pre.settings ?? {}).map(([k, v]): [string, unknown] => [k, v]) : []),
    ['loss, first 10% of steps', pre ? fixed(pre.firstLoss) : '-'],
    ['loss, last 10% of steps', pre ? fixed(pre.lastLoss) : '-'],
    ['trained tokens', pre?.trainedTokens ?? '-'],
    ['seconds', pre ? pre.seconds.toFixed(0) : '-'],
  ]));
  parts.push(img('pretrain-loss', 'plot small'));
  parts.push('<h3>VisPlay (every arm)</h3>');
  parts.push(fieldTable(Object.entries(summary.evolve)));

  if (p.warnings.length > 0) parts.push(`<h2>Notes</h2>\n<ul class="warn">\n${p.warnings.map((w) => `<li>${esc(w)}</li>`).join('\n')}\n</ul>`);
  parts.push('</body>\n</html>\n');
  return parts.join('\n');
}
