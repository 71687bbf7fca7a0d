// index.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) with the
// table, the charts and example questions. Every piece of run data is escaped: questions are model
// output and may contain anything, markup included.
import { basename } from 'node:path';
import type { QuestionExample, RunReport } from './aggregate.js';
import { escapeXml, type Plot } from './plots.js';
import { benchName, fixed, iterationTable, percent } from './tables.js';

const esc = escapeXml;

const STYLE = `
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; font-size: 0.92em; }
.meta code { font-size: 0.95em; }
.banner { background: #fff4d6; border: 1px solid #e0b040; padding: 0.8em 1em; margin: 1em 0; border-radius: 4px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.plots figure { margin: 0; }
.plots svg { max-width: 100%; height: auto; border: 1px solid #eee; }
.question { white-space: pre-wrap; word-break: break-word; max-width: 640px; }
.raw { white-space: pre-wrap; word-break: break-all; color: #777; font-family: "DejaVu Sans Mono", monospace; font-size: 0.85em; max-width: 640px; }
.warn { color: #8a5a00; }
`;

export function reportHtml(report: RunReport, plots: Plot[]): string {
  const m = report.manifest;
  const table = iterationTable(report);
  const parts: string[] = [];
  parts.push(`<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>VisPlay run ${esc(basename(report.dir))}</title>`);
  parts.push(`<style>${STYLE}</style>\n</head>\n<body>`);
  parts.push(`<h1>VisPlay run <code>${esc(basename(report.dir))}</code></h1>`);
  parts.push('<p class="meta">');
  parts.push(`model <code>${esc(String(m.model ?? ''))}</code>, mmproj <code>${esc(String(m.mmproj ?? ''))}</code><br>`);
  parts.push(`created ${esc(String(m.createdAt ?? ''))}; ${esc(String(m.images?.usable ?? '?'))} usable images`);
  if ((m.images?.skipped?.length ?? 0) > 0) parts.push(` (${m.images.skipped.length} skipped)`);
  parts.push(`; confidence band ${report.band[0]}–${report.band[1]}`);
  if (m.software) parts.push(`<br>${esc(String(m.software.package ?? ''))}, llama.cpp ${esc(String(m.software.llamaCpp ?? ''))}`);
  parts.push('</p>');

  if (report.gibberish) {
    parts.push(`<div class="banner"><strong>This run shows the machinery, not learning.</strong> The model writes gibberish ` +
      `(${esc(report.gibberish.reason)}), so its questions do not parse, the Reasoner has nothing to learn from and the ` +
      'numbers below exercise the loop rather than measure it. Run a real vision-language model (Qwen2.5-VL, MiMo-VL) to see VisPlay learn.</div>');
  }

  parts.push('<h2>Iterations</h2>');
  parts.push('<table>\n<thead><tr>' + table.headers.map((h) => `<th>${esc(h)}</th>`).join('') + '</tr></thead>\n<tbody>');
  for (const row of table.rows) {
    parts.push('<tr>' + row.map((cell, c) => `<td${table.align[c] === 'right' ? ' class="num"' : ''}>${esc(cell)}</td>`).join('') + '</tr>');
  }
  parts.push('</tbody>\n</table>');
  parts.push('<p class="meta">Q: the Questioner (training phase: valid questions, reward, diversity penalty). Confidence, in band and kept: ' +
    'the generated candidates as the Reasoner labelled them (in band: share of the valid candidates). R: the Reasoner\'s training ' +
    '(accuracy against the silver labels).</p>');

  if (report.evals.length > 0) parts.push(...evalSection(report));

  parts.push('<h2>Charts</h2>\n<div class="plots">');
  for (const plot of plots) parts.push(`<figure id="plot-${esc(plot.name)}">${plot.svg}</figure>`);
  parts.push('</div>');

  parts.push('<h2>Example questions</h2>');
  for (const ex of report.examples) {
    parts.push(`<h3>Iteration ${ex.iteration}</h3>`);
    parts.push(exampleTable('Kept (the Reasoner trains on these)', ex.kept));
    parts.push(exampleTable('Dropped', ex.dropped));
  }

  if (report.warnings.length > 0) {
    parts.push('<h2>Skipped records</h2>\n<ul class="warn">');
    for (const w of report.warnings) parts.push(`<li>${esc(w)}</li>`);
    parts.push('</ul>');
  }
  parts.push('</body>\n</html>\n');
  return parts.join('\n');
}

function evalSection(report: RunReport): string[] {
  const out = ['<h2>Evaluation</h2>', '<table>', '<thead><tr><th>iteration</th><th>benchmark</th><th>adapter</th><th>type</th><th>accuracy</th><th>correct / total</th></tr></thead>', '<tbody>'];
  for (const e of report.evals) {
    const rows: Array<[string, { accuracy: number; correct: number; total: number }]> = [['overall', e.overall], ...Object.entries(e.byType ?? {})];
    for (const [type, score] of rows) {
      out.push(`<tr><td class="num">${e.iteration}</td><td>${esc(benchName(e.bench))}</td><td>${esc(e.adapter ? basename(e.adapter) : 'base')}</td>` +
        `<td>${esc(type)}</td><td class="num">${esc(percent(score.accuracy))}</td><td class="num">${score.correct} / ${score.total}</td></tr>`);
    }
  }
  out.push('</tbody>', '</table>');
  return out;
}

function exampleTable(caption: string, examples: QuestionExample[]): string {
  if (examples.length === 0) return `<p class="meta">${esc(caption)}: none.</p>`;
  const rows = examples.map((e) => {
    const question = e.valid
      ? `<div class="question">${esc(e.question)}</div>`
      : `<div class="raw">${esc(e.raw)}</div>`;
    return `<tr><td>${esc(e.type || '-')}</td><td>${question}</td><td>${esc(e.silver || '-')}</td>` +
      `<td class="num">${e.valid ? esc(fixed(e.confidence, 2)) : '-'}</td><td>${esc(e.kept ? '' : e.dropReason)}</td><td>${esc(e.image)}</td></tr>`;
  });
  return `<table>\n<caption style="text-align:left;font-weight:bold">${esc(caption)}</caption>\n` +
    '<thead><tr><th>type</th><th>question (raw output when it does not parse)</th><th>silver answer</th><th>confidence</th><th>why dropped</th><th>image</th></tr></thead>\n' +
    `<tbody>\n${rows.join('\n')}\n</tbody>\n</table>`;
}
