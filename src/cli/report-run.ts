// `visplay-native report DIR`: the table of a VisPlay run on stdout (or report.json with --json),
// and the report folder (index.html, report.json, charts as SVG and PNG) written beside the run.
// Works on a run that is still going or stopped early: it reports what is there.
import type { CommandModule } from 'yargs';
import { formatTable, iterationTable, writeReport } from '../visplay/report/index.js';
import { reportJson } from '../visplay/report/tables.js';
import * as is from '../validate.js';

export interface ReportRunArgs {
  dir?: string;
  out?: string;
  json: boolean;
}

export const reportRunCommand: CommandModule<object, ReportRunArgs> = {
  command: 'report <dir>',
  describe: 'Summarise a VisPlay run folder: table, charts and an HTML page',
  builder: (yargs) => yargs
    .positional('dir', { type: 'string', describe: 'the run folder (evolve --out DIR)' })
    .option('out', { type: 'string', describe: 'report folder (default: DIR/report)' })
    .option('json', { type: 'boolean', default: false, describe: 'print report.json instead of the table' })
    .example('$0 report runs/a', 'writes runs/a/report/index.html'),
  handler: async (argv) => {
    const dir = is.nonEmptyString('dir', argv.dir);
    const out = is.optional(argv.out, (v) => is.nonEmptyString('out', v));
    const written = await writeReport(dir, { outDir: out });
    const { report } = written;
    if (argv.json) {
      const plots = written.plots.map((p) => p.slice(written.dir.length + 1));
      process.stdout.write(`${JSON.stringify(reportJson(report, plots), null, 2)}\n`);
    } else {
      if (report.gibberish) process.stdout.write(`note: the model writes gibberish (${report.gibberish.reason}): this run shows the machinery, not learning\n\n`);
      process.stdout.write(`${formatTable(iterationTable(report))}\n`);
      for (const w of report.warnings) process.stderr.write(`skipped: ${w}\n`);
    }
    // With --json, stdout holds the one JSON document and nothing else.
    (argv.json ? process.stderr : process.stdout).write(`report: ${written.html}\n`);
  },
};
