// writeReport: a run folder -> report/ (index.html, report.json, one SVG and one PNG per chart).
// Each file is written to a temporary name and renamed, so a reader (or a browser refreshing the
// page while the run goes on) never sees half a file.
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { VisplayError } from '../../errors.js';
import { aggregateRun, type RunReport } from './aggregate.js';
import { reportHtml } from './html.js';
import { loadRun } from './load.js';
import { rasterise, reportPlots } from './plots.js';
import { reportJson } from './tables.js';

export { aggregateRun, type IterationRow, type QuestionExample, type RunReport } from './aggregate.js';
export { loadRun, type IterationRecords, type RunRecords } from './load.js';
export { reportPlots, type Plot } from './plots.js';
export { formatTable, iterationTable, type Table } from './tables.js';

export interface WriteReportOptions {
  /** Where to write (default: <runDir>/report). */
  outDir?: string;
}

export interface WrittenReport {
  /** The report folder, absolute. */
  dir: string;
  /** Paths of index.html and report.json. */
  html: string;
  json: string;
  /** Paths of the chart files, SVG and PNG, in the order the page shows them. */
  plots: string[];
  /** The numbers behind it all (what report.json holds, less the plot list). */
  report: RunReport;
}

/** Reads the run (see loadRun for what it tolerates) and writes its report. */
export async function buildReport(runDir: string): Promise<RunReport> {
  return aggregateRun(loadRun(runDir));
}

export async function writeReport(runDir: string, options: WriteReportOptions = {}): Promise<WrittenReport> {
  const report = await buildReport(runDir);
  const dir = resolve(options.outDir ?? join(report.dir, 'report'));
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new VisplayError('ERR_OUTPUT', `cannot create the report folder ${dir}: ${(e as Error).message}`);
  }

  const plots = reportPlots(report);
  const plotFiles: string[] = [];
  for (const plot of plots) {
    const svgPath = join(dir, `${plot.name}.svg`);
    const pngPath = join(dir, `${plot.name}.png`);
    await writeAtomic(svgPath, plot.svg);
    await writeAtomic(pngPath, await rasterise(plot.svg));
    plotFiles.push(svgPath, pngPath);
  }
  const json = join(dir, 'report.json');
  const html = join(dir, 'index.html');
  await writeAtomic(json, `${JSON.stringify(reportJson(report, plotFiles.map((p) => p.slice(dir.length + 1))), null, 2)}\n`);
  await writeAtomic(html, reportHtml(report, plots));
  return { dir, html, json, plots: plotFiles, report };
}

/** Writes `data` to a temporary file beside `path`, flushes it to disk and renames it over `path`. */
export async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(data);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new VisplayError('ERR_OUTPUT', `cannot write ${path}: ${(e as Error).message}`);
  }
}
