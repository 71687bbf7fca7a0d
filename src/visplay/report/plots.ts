// The report's charts as hand-written SVG (no chart library): a line chart and a histogram, each with
// a title, labelled axes with round-number ticks, and a legend. sharp (librsvg) rasterises them to
// PNG for places that cannot show SVG; the HTML inlines the SVG itself.
import sharp from 'sharp';
import type { StepMetrics } from '../records.js';
import type { RunReport } from './aggregate.js';
import { benchNames, evalOf } from './tables.js';

export interface Plot {
  /** File stem: "rewards" -> rewards.svg, rewards.png. */
  name: string;
  title: string;
  svg: string;
}

export const PLOT_WIDTH = 720;
export const PLOT_HEIGHT = 400;

const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
const MARGIN = { top: 64, right: 28, bottom: 58, left: 72 };

export interface Series {
  name: string;
  /** [x, y]; a null y breaks the line. */
  points: Array<[number, number | null]>;
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Fixed y range (e.g. [0, 1] for shares); default: fitted to the data. */
  yDomain?: [number, number];
  /** With a fitted range: start the y axis at 0 (for quantities that are never negative). */
  yFromZero?: boolean;
  /** Ticks on whole numbers only (steps, iterations). */
  integerX?: boolean;
  /** y values as percentages in tick labels. */
  percentY?: boolean;
}

export interface HistogramSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Counts of equal bins over [0, 1]. */
  counts: number[];
  /** Shaded x range, with its legend label. */
  band?: { range: [number, number]; label: string };
  /** Legend label of the bars. */
  barLabel: string;
}

/** Every chart of the report. */
export function reportPlots(report: RunReport): Plot[] {
  const plots: Plot[] = [];
  for (const row of report.iterations) {
    if (row.iteration < 1) continue;
    const valid = row.candidates.histogram.reduce((a, b) => a + b, 0);
    plots.push({
      name: `confidence-iter-${row.iteration}`,
      title: `Confidence of the candidates, iteration ${row.iteration}`,
      svg: histogramChart({
        title: `Reasoner confidence on the candidates, iteration ${row.iteration} (${valid} valid)`,
        xLabel: 'confidence (majority share of the Reasoner\'s answers)',
        yLabel: 'candidates',
        counts: row.candidates.histogram,
        band: { range: report.band, label: `kept band ${report.band[0]}–${report.band[1]}` },
        barLabel: 'valid candidates',
      }),
    });
  }
  const byRole = (role: StepMetrics['role'], pick: (m: StepMetrics) => number | undefined): Series => ({
    name: role === 'questioner' ? 'Questioner' : 'Reasoner',
    points: stepPoints(report.steps.filter((m) => m.role === role), pick),
  });
  const stepChart = (name: string, title: string, yLabel: string, pick: (m: StepMetrics) => number | undefined, yFromZero = false) =>
    plots.push({
      name, title,
      svg: lineChart({
        title, xLabel: 'optimizer step (of each role\'s policy)', yLabel, integerX: true, yFromZero,
        series: [byRole('questioner', pick), byRole('reasoner', pick)],
      }),
    });
  stepChart('rewards', 'Mean reward per step', 'mean reward', (m) => m.meanReward);
  stepChart('kl', 'KL to the reference policy per step', 'KL (k3)', (m) => m.kl, true);
  stepChart('clip-fraction', 'Clipped-ratio fraction per step', 'clip fraction', (m) => m.clipFraction, true);

  const learned = report.iterations.filter((r) => r.iteration >= 1);
  plots.push({
    name: 'difficulty',
    title: 'Question difficulty over iterations',
    svg: lineChart({
      title: 'Question difficulty over iterations',
      xLabel: 'iteration', yLabel: 'share', integerX: true, yDomain: [0, 1], percentY: true,
      series: [
        { name: 'mean confidence of kept questions', points: learned.map((r) => [r.iteration, r.candidates.keptMeanConfidence]) },
        { name: 'share of valid candidates in band', points: learned.map((r) => [r.iteration, r.candidates.shareInBand]) },
      ],
    }),
  });

  if (report.evals.length > 0) {
    plots.push({
      name: 'eval',
      title: 'Evaluation accuracy per iteration',
      svg: lineChart({
        title: 'Evaluation accuracy per iteration (0 = base model)',
        xLabel: 'iteration', yLabel: 'accuracy', integerX: true, yDomain: [0, 1], percentY: true,
        series: benchNames(report.evals).map((bench) => ({
          name: bench,
          points: report.iterations.flatMap((r): Array<[number, number]> => {
            const e = evalOf(r, bench);
            return e ? [[r.iteration, e.overall.accuracy]] : [];
          }),
        })),
      }),
    });
  }
  return plots;
}

/** x = the role's policy step (a count when a record lacks it), y = pick(m). */
function stepPoints(metrics: StepMetrics[], pick: (m: StepMetrics) => number | undefined): Array<[number, number | null]> {
  return metrics.map((m, i) => {
    const y = pick(m);
    return [typeof m.policyStep === 'number' ? m.policyStep : i + 1, typeof y === 'number' && Number.isFinite(y) ? y : null];
  });
}

/** PNG bytes of an SVG document (at its own pixel size). */
export function rasterise(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png().toBuffer();
}

// ---- charts -------------------------------------------------------------------------------------

export function lineChart(spec: LineChartSpec): string {
  const frame = new Frame(spec.title);
  const points = spec.series.flatMap((s) => s.points.filter((p): p is [number, number] => p[1] !== null));
  if (points.length === 0) return frame.empty(spec.xLabel, spec.yLabel);

  const xs = points.map((p) => p[0]);
  const xDomain = fitDomain(Math.min(...xs), Math.max(...xs), spec.integerX ? 1 : 0);
  const xTicks = ticks(xDomain[0], xDomain[1], 6, spec.integerX === true);
  const yDomain = spec.yDomain ?? (() => {
    const ys = points.map((p) => p[1]);
    const t = ticks(...fitDomain(spec.yFromZero ? Math.min(0, ...ys) : Math.min(...ys), Math.max(...ys), 0), 5, false);
    return [t[0]!, t.at(-1)!] as [number, number];
  })();
  const yTicks = ticks(yDomain[0], yDomain[1], 5, false);
  const x = frame.scaleX(xTicks.length > 1 ? [xTicks[0]!, xTicks.at(-1)!] : xDomain);
  const y = frame.scaleY([Math.min(yDomain[0], yTicks[0]!), Math.max(yDomain[1], yTicks.at(-1)!)]);

  frame.axes(xTicks, yTicks, x, y, spec.xLabel, spec.yLabel, spec.percentY ? percentTickFormat(yTicks) : formatTick);
  const dense = Math.max(...spec.series.map((s) => s.points.length)) > 60;
  spec.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    let d = '';
    let pen = false;
    for (const [px, py] of s.points) {
      if (py === null) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${num(x(px))} ${num(y(py))}`;
      pen = true;
    }
    if (d) frame.body.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`);
    if (!dense) {
      for (const [px, py] of s.points) {
        if (py !== null) frame.body.push(`<circle cx="${num(x(px))}" cy="${num(y(py))}" r="3.5" fill="${color}"/>`);
      }
    }
  });
  frame.legend(spec.series.map((s, i) => ({
    label: s.points.some((p) => p[1] !== null) ? s.name : `${s.name} (no data)`,
    swatch: 'line',
    color: COLORS[i % COLORS.length]!,
  })));
  return frame.svg();
}

export function histogramChart(spec: HistogramSpec): string {
  const frame = new Frame(spec.title);
  const bins = spec.counts.length;
  const max = Math.max(0, ...spec.counts);
  const yTicks = ticks(0, Math.max(1, max), 5, true);
  const x = frame.scaleX([0, 1]);
  const y = frame.scaleY([0, yTicks.at(-1)!]);
  const legend: LegendEntry[] = [];
  if (spec.band) {
    const [lo, hi] = spec.band.range;
    frame.body.push(`<rect x="${num(x(lo))}" y="${MARGIN.top}" width="${num(x(hi) - x(lo))}" height="${frame.plotHeight}" fill="#2ca02c" fill-opacity="0.13"/>`);
    legend.push({ label: spec.band.label, swatch: 'area', color: '#2ca02c' });
  }
  frame.axes(ticks(0, 1, 10, false), yTicks, x, y, spec.xLabel, spec.yLabel, formatTick);
  spec.counts.forEach((count, b) => {
    if (count <= 0) return;
    const x0 = x(b / bins) + 1;
    const x1 = x((b + 1) / bins) - 1;
    frame.body.push(`<rect x="${num(x0)}" y="${num(y(count))}" width="${num(x1 - x0)}" height="${num(y(0) - y(count))}" fill="${COLORS[0]}"/>`);
    frame.body.push(text(num((x0 + x1) / 2), num(y(count) - 4), String(count), { anchor: 'middle', size: 11, color: '#333' }));
  });
  legend.unshift({ label: spec.barLabel, swatch: 'area', color: COLORS[0]! });
  if (max === 0) frame.note('no valid candidates');
  frame.legend(legend);
  return frame.svg();
}

interface LegendEntry {
  label: string;
  swatch: 'line' | 'area';
  color: string;
}

/** The common parts of a chart: background, title, plot area, axes, legend. */
class Frame {
  readonly body: string[] = [];
  readonly plotWidth = PLOT_WIDTH - MARGIN.left - MARGIN.right;
  readonly plotHeight = PLOT_HEIGHT - MARGIN.top - MARGIN.bottom;
  readonly #title: string;

  constructor(title: string) {
    this.#title = title;
  }

  scaleX([lo, hi]: [number, number]): (v: number) => number {
    const span = hi - lo || 1;
    return (v) => MARGIN.left + ((v - lo) / span) * this.plotWidth;
  }

  scaleY([lo, hi]: [number, number]): (v: number) => number {
    const span = hi - lo || 1;
    return (v) => MARGIN.top + this.plotHeight - ((v - lo) / span) * this.plotHeight;
  }

  axes(xTicks: number[], yTicks: number[], x: (v: number) => number, y: (v: number) => number, xLabel: string, yLabel: string,
    yFormat: (v: number) => string): void {
    const left = MARGIN.left;
    const right = MARGIN.left + this.plotWidth;
    const top = MARGIN.top;
    const bottom = MARGIN.top + this.plotHeight;
    const out: string[] = [];
    for (const t of yTicks) {
      const py = num(y(t));
      out.push(`<line x1="${left}" y1="${py}" x2="${right}" y2="${py}" stroke="#e3e3e3" stroke-width="1"/>`);
      out.push(text(left - 8, num(y(t) + 4), yFormat(t), { anchor: 'end', size: 11 }));
    }
    for (const t of xTicks) {
      const px = num(x(t));
      out.push(`<line x1="${px}" y1="${bottom}" x2="${px}" y2="${bottom + 5}" stroke="#444" stroke-width="1"/>`);
      out.push(text(px, bottom + 19, formatTick(t), { anchor: 'middle', size: 11 }));
    }
    out.push(`<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#444" stroke-width="1"/>`);
    out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#444" stroke-width="1"/>`);
    out.push(text(num((left + right) / 2), PLOT_HEIGHT - 14, xLabel, { anchor: 'middle', size: 12 }));
    out.push(`<text transform="translate(18 ${num((top + bottom) / 2)}) rotate(-90)" text-anchor="middle" font-family="${FONT}" font-size="12" fill="#222">${escapeXml(yLabel)}</text>`);
    // Grid lines go under the data drawn afterwards.
    this.body.unshift(...out.filter((s) => s.includes('#e3e3e3')));
    this.body.push(...out.filter((s) => !s.includes('#e3e3e3')));
  }

  legend(entries: LegendEntry[]): void {
    let px = MARGIN.left;
    const py = 44;
    for (const e of entries) {
      if (e.swatch === 'line') {
        this.body.push(`<line x1="${px}" y1="${py - 4}" x2="${px + 22}" y2="${py - 4}" stroke="${e.color}" stroke-width="2.5"/>`);
      } else {
        this.body.push(`<rect x="${px}" y="${py - 10}" width="22" height="11" fill="${e.color}" fill-opacity="${e.color === COLORS[0] ? 1 : 0.35}"/>`);
      }
      this.body.push(text(px + 28, py, e.label, { size: 12 }));
      // An estimate of the label's width (DejaVu Sans at 12 px averages about 7 px a character).
      px += 28 + e.label.length * 7 + 22;
    }
  }

  note(message: string): void {
    this.body.push(text(MARGIN.left + this.plotWidth / 2, MARGIN.top + this.plotHeight / 2, message, { anchor: 'middle', size: 14, color: '#888' }));
  }

  empty(xLabel: string, yLabel: string): string {
    const x = this.scaleX([0, 1]);
    const y = this.scaleY([0, 1]);
    this.axes([], [], x, y, xLabel, yLabel, formatTick);
    this.note('no data yet');
    return this.svg();
  }

  svg(): string {
    return [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${PLOT_WIDTH}" height="${PLOT_HEIGHT}" viewBox="0 0 ${PLOT_WIDTH} ${PLOT_HEIGHT}" role="img">`,
      `<title>${escapeXml(this.#title)}</title>`,
      `<rect width="${PLOT_WIDTH}" height="${PLOT_HEIGHT}" fill="#ffffff"/>`,
      text(MARGIN.left, 22, this.#title, { size: 15, weight: 'bold' }),
      ...this.body,
      '</svg>',
    ].join('\n');
  }
}

function text(x: number | string, y: number | string, content: string,
  o: { anchor?: 'start' | 'middle' | 'end'; size?: number; weight?: string; color?: string } = {}): string {
  return `<text x="${x}" y="${y}" text-anchor="${o.anchor ?? 'start'}" font-family="${FONT}" font-size="${o.size ?? 12}"` +
    `${o.weight ? ` font-weight="${o.weight}"` : ''} fill="${o.color ?? '#222'}">${escapeXml(content)}</text>`;
}

/** Text safe inside SVG/HTML elements and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function num(v: number): string {
  return (Math.round(v * 10) / 10).toString();
}

/** A range with room: a single value gets ±pad (or ±1 / ±10%), so it is drawn mid-axis. */
function fitDomain(lo: number, hi: number, pad: number): [number, number] {
  if (hi > lo) return [lo, hi];
  const d = pad > 0 ? pad : lo === 0 ? 1 : Math.abs(lo) * 0.1;
  return [lo - d, hi + d];
}

/**
 * About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten),
 * whole numbers only when `integer`.
 */
export function ticks(lo: number, hi: number, count: number, integer: boolean): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  if (integer) step = Math.max(1, Math.round(step));
  const start = Math.floor(lo / step + 1e-9) * step;
  const out: number[] = [];
  // Until a tick reaches hi, so the ticks cover every value.
  for (let k = 0; out.length < 100; k++) {
    const v = Number((start + k * step).toPrecision(12));
    out.push(v);
    if (v >= hi - step * 1e-9) break;
  }
  return out;
}

/**
 * Percent labels for ticks of shares (0.335 -> "33.5%"), with as many decimals as the tick step
 * needs: a zoomed-in axis with steps of half a point would otherwise read 33%, 33%, 34%, 34%.
 */
export function percentTickFormat(tickValues: readonly number[]): (v: number) => string {
  const step = tickValues.length > 1 ? Math.abs(tickValues[1]! - tickValues[0]!) * 100 : 1;
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  return (v) => `${(v * 100).toFixed(decimals)}%`;
}

function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}
