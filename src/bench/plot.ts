// `bench --plot FILE.png`: tokens/s of ours and of each peer as grouped bars, hand-written SVG
// (as the run report's charts, whose tick and escaping helpers it uses) rasterised by sharp.
// Left panel: rollouts, one group per parallel level (text prompt: ours vs llama-batched-bench;
// image prompts: ours vs llama-server). Right panel: the GRPO train step (ours vs PyTorch). Each
// panel has its own linear y axis from 0; a skipped peer is a labelled gap, not a zero bar.
import { writeFile } from 'node:fs/promises';
import { escapeXml, rasterise, ticks } from '../visplay/report/plots.js';
import type { BenchResult } from './index.js';
import { isSkipped } from './stats.js';

const WIDTH = 960;
const HEIGHT = 440;
const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';
const TOP = 84;
const BOTTOM = 70;
const LEFT = 70;
const GAP = 80;
const RIGHT = 24;

interface Bar {
  series: number;
  /** null: skipped (drawn as a note). */
  value: number | null;
}

interface Group {
  label: string;
  bars: Bar[];
}

const SERIES = [
  { name: 'visplay-native, text prompt', color: '#1f77b4' },
  { name: 'llama-batched-bench', color: '#aec7e8' },
  { name: 'visplay-native, image prompts', color: '#d62728' },
  { name: 'llama-server (HTTP)', color: '#ff9896' },
  { name: 'visplay-native, train step', color: '#2ca02c' },
  { name: 'PyTorch reference', color: '#98df8a' },
];

function text(x: number, y: number, s: string, o: { anchor?: string; size?: number; weight?: string; color?: string } = {}): string {
  return `<text x="${r1(x)}" y="${r1(y)}" text-anchor="${o.anchor ?? 'start'}" font-family="${FONT}" font-size="${o.size ?? 12}"`
    + `${o.weight ? ` font-weight="${o.weight}"` : ''} fill="${o.color ?? '#222'}">${escapeXml(s)}</text>`;
}

function r1(v: number): string {
  return (Math.round(v * 10) / 10).toString();
}

function short(v: number): string {
  if (v >= 10_000) return `${(v / 1000).toFixed(0)}k`;
  if (v >= 1000) return `${(v / 1000).toFixed(1)}k`;
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

/** One panel of grouped bars in [x0, x1]; returns its SVG elements. */
function panel(x0: number, x1: number, title: string, groups: Group[], yLabel: string): string[] {
  const out: string[] = [];
  const bottom = HEIGHT - BOTTOM;
  const values = groups.flatMap((g) => g.bars.map((b) => b.value ?? 0));
  const t = ticks(0, Math.max(1, ...values), 5, false);
  const yMax = t.at(-1)!;
  const y = (v: number) => bottom - (v / yMax) * (bottom - TOP);
  out.push(text((x0 + x1) / 2, TOP - 12, title, { anchor: 'middle', size: 13, weight: 'bold' }));
  for (const v of t) {
    out.push(`<line x1="${x0}" y1="${r1(y(v))}" x2="${x1}" y2="${r1(y(v))}" stroke="#e3e3e3"/>`);
    out.push(text(x0 - 6, y(v) + 4, short(v), { anchor: 'end', size: 11 }));
  }
  out.push(`<line x1="${x0}" y1="${bottom}" x2="${x1}" y2="${bottom}" stroke="#444"/>`);
  out.push(`<line x1="${x0}" y1="${TOP}" x2="${x0}" y2="${bottom}" stroke="#444"/>`);
  out.push(`<text transform="translate(${r1(x0 - 50)} ${r1((TOP + bottom) / 2)}) rotate(-90)" text-anchor="middle" font-family="${FONT}" font-size="12" fill="#222">${escapeXml(yLabel)}</text>`);
  const groupWidth = (x1 - x0) / Math.max(1, groups.length);
  for (const [gi, g] of groups.entries()) {
    const gx = x0 + gi * groupWidth;
    const barWidth = Math.min(46, (groupWidth * 0.8) / Math.max(1, g.bars.length));
    const start = gx + (groupWidth - barWidth * g.bars.length) / 2;
    for (const [bi, b] of g.bars.entries()) {
      const bx = start + bi * barWidth;
      const color = SERIES[b.series]!.color;
      if (b.value === null) {
        out.push(`<text transform="translate(${r1(bx + barWidth / 2 + 4)} ${bottom - 6}) rotate(-90)" font-family="${FONT}" font-size="10" fill="#888">skipped</text>`);
        continue;
      }
      out.push(`<rect x="${r1(bx + 1)}" y="${r1(y(b.value))}" width="${r1(barWidth - 2)}" height="${r1(bottom - y(b.value))}" fill="${color}"/>`);
      out.push(text(bx + barWidth / 2, y(b.value) - 4, short(b.value), { anchor: 'middle', size: 10, color: '#333' }));
    }
    out.push(text(gx + groupWidth / 2, bottom + 18, g.label, { anchor: 'middle', size: 12 }));
  }
  return out;
}

export function benchPlotSvg(r: BenchResult): string {
  const med = (v: { median: number } | { skipped: string }): number | null => (isSkipped(v) ? null : v.median);
  const rollouts: Group[] = r.rollouts.map((l) => ({
    label: `P = ${l.parallel}`,
    bars: [
      { series: 0, value: l.text.ours.generated.median },
      { series: 1, value: isSkipped(l.text.batchedBench) ? null : l.text.batchedBench.generated.median },
      { series: 2, value: l.image.ours.generated.median },
      { series: 3, value: isSkipped(l.image.server) ? null : l.image.server.generated.median },
    ],
  }));
  const t = r.trainStep;
  const train: Group[] = [{
    label: isSkipped(t) ? 'skipped' : `G = ${t.group} x ${t.responseLength}`,
    bars: isSkipped(t) ? [] : [
      { series: 4, value: t.ours.tokensPerSecond.median },
      { series: 5, value: isSkipped(t.pytorch) ? null : med(t.pytorch.tokensPerSecond) },
    ],
  }];
  const split = LEFT + (WIDTH - LEFT - RIGHT - GAP) * 0.76;
  const body = [
    ...panel(LEFT, split, 'Rollouts: generated tokens/s', rollouts, 'generated tokens/s'),
    ...panel(split + GAP, WIDTH - RIGHT, 'GRPO train step', train, 'trained tokens/s'),
  ];
  // Legend: two rows of three.
  SERIES.forEach((s, i) => {
    const lx = LEFT + (i % 3) * 290;
    const ly = 40 + Math.floor(i / 3) * 18;
    body.push(`<rect x="${lx}" y="${ly - 10}" width="18" height="11" fill="${s.color}"/>`);
    body.push(text(lx + 24, ly, s.name, { size: 12 }));
  });
  const m = r.machine;
  const title = `visplay-native bench: ours vs peers, medians of ${r.settings.repeats} (${m.cores} cores${m.gpus[0] ? `, ${m.gpus[0].name}` : ''})`;
  const foot = 'text prompt: decode steps only (as llama-batched-bench S_TG); image prompts: end to end, llama-server over HTTP';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    text(LEFT, 20, title, { size: 15, weight: 'bold' }),
    ...body,
    text(LEFT, HEIGHT - 14, foot, { size: 11, color: '#555' }),
    '</svg>',
  ].join('\n');
}

/** Writes the chart as PNG (or as SVG when the file name ends in .svg). */
export async function writeBenchPlot(r: BenchResult, file: string): Promise<void> {
  const svg = benchPlotSvg(r);
  await writeFile(file, file.toLowerCase().endsWith('.svg') ? svg : await rasterise(svg));
}
