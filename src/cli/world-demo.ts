// `visplay-native demo --world`: the world experiment of src/world/experiment.ts end to end — world,
// pre-training (cached), VisPlay with zero labels and the two controls, held-out scores, the report.
// The folder is resumable: run the same command again after a kill and it continues where it was.
import { resolve } from 'node:path';
import { createProgress, type ProgressReporter } from '../progress.js';
import type { EvolveConfig } from '../visplay/config.js';
import type { ExperimentEvent, ExperimentOptions } from '../world/experiment.js';
import type { WorldOptions } from '../world/splits.js';

export interface WorldDemoOptions {
  out?: string;
  full: boolean;
  jsonLog: boolean;
  threads?: number;
}

export interface WorldSettings {
  world: WorldOptions;
  seeds: number[];
  evolve: Partial<EvolveConfig>;
  pretrain: ExperimentOptions['pretrain'];
  evalLimit?: number;
  evalSamples?: number;
}

/**
 * The shortened demo (sized for about 10 minutes on 2 cores, pre-training included: a small
 * pre-training split, one step per role per iteration, the first 60 test items with 4 samples) and
 * the full experiment of issue 7. Both keep all three arms and three iterations. The demo's
 * pre-training takes 150 steps of 8 items: by its loss curve the output formats (`\boxed{}`,
 * `<type><question><answer>`) are learned after about 60-80 steps, and with fewer (38 steps of 16
 * items) no answer or question parses, which leaves every score at 0.
 */
export const WORLD_DEMO: WorldSettings = {
  world: { pretrain: 600, pool: 200, test: 500, seed: 0 },
  seeds: [0],
  evolve: { iterations: 3, questionerSteps: 1, reasonerSteps: 1, candidateImages: 16 },
  pretrain: { epochs: 2, itemsPerStep: 8 },
  evalLimit: 60,
  evalSamples: 4,
};

export const WORLD_FULL: WorldSettings = {
  world: { pretrain: 2000, pool: 2000, test: 600, seed: 0 },
  seeds: [0, 1, 2],
  evolve: {},
  pretrain: { epochs: 3 },
};

export async function runWorldDemo(options: WorldDemoOptions): Promise<void> {
  const { runWorldExperiment } = await import('../world/experiment.js');
  const { formatWorldTable, writeWorldReport } = await import('../world/report.js');
  const settings = options.full ? WORLD_FULL : WORLD_DEMO;
  const out = resolve(options.out ?? (options.full ? 'visplay-world' : 'visplay-world-demo'));
  const log = (line: string) => {
    if (!options.jsonLog) process.stderr.write(`${line}\n`);
  };
  log(`visplay-native demo --world${options.full ? ' --full' : ''}: into ${out} (run the same command again to resume)`);
  let bar: { label: string; reporter: ProgressReporter } | undefined;
  const progress = (label: string, done: number, total: number, unit: string) => {
    if (bar?.label !== label) {
      bar?.reporter.stop();
      bar = { label, reporter: createProgress(label, total, { unit }) };
    }
    bar.reporter.update(done, { tokens: 0 });
  };
  const onEvent = (e: ExperimentEvent) => {
    if (options.jsonLog) {
      process.stdout.write(`${JSON.stringify(e)}\n`);
      return;
    }
    switch (e.type) {
      case 'stage':
        bar?.reporter.stop();
        bar = undefined;
        log(e.message);
        break;
      case 'pretrain':
        progress('pretrain', e.step, e.steps, 'steps');
        if (!process.stderr.isTTY && (e.step % 25 === 0 || e.step === e.steps)) log(`  pretrain step ${e.step}/${e.steps}, loss ${e.loss.toFixed(3)}`);
        break;
      case 'eval':
        progress(`eval ${e.label}`, e.done, e.total, 'answers');
        break;
      case 'evolve':
        if (e.event.type === 'progress') progress(`${e.arm} s${e.seed} it${e.event.iteration} ${e.event.phase}`, e.event.done, e.event.total, 'samples');
        else if (e.event.type === 'iteration') {
          const s = e.event.summary;
          bar?.reporter.stop();
          bar = undefined;
          log(`  ${e.arm} seed ${e.seed} iteration ${s.iteration}: ${s.candidates.kept} questions kept of ${s.candidates.total}, ` +
            `questioner reward ${s.questioner.meanReward.toFixed(3)}, reasoner reward ${s.reasoner.meanReward.toFixed(3)}, ${s.seconds.total.toFixed(0)} s`);
        }
        break;
      case 'score':
        bar?.reporter.stop();
        bar = undefined;
        log(`  ${e.score.arm}${e.score.seed === null ? '' : ` seed ${e.score.seed}`} iteration ${e.score.iteration}: ${e.score.mode} ${(100 * e.score.overall.accuracy).toFixed(1)}%`);
        break;
    }
  };
  const controller = new AbortController();
  const stop = () => {
    log('stopping after the next checkpoint (Ctrl-C again to quit at once)');
    controller.abort();
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', stop);
  try {
    const summary = await runWorldExperiment({
      out, worldOptions: settings.world, seeds: settings.seeds, evolve: settings.evolve, evalLimit: settings.evalLimit, evalSamples: settings.evalSamples,
      pretrain: settings.pretrain,
      threads: options.threads, onEvent, signal: controller.signal,
    });
    bar?.reporter.stop();
    if (summary === null || controller.signal.aborted) {
      log(`stopped; resume with the same command (folder ${out})`);
      return;
    }
    const report = await writeWorldReport(out);
    if (options.jsonLog) process.stdout.write(`${JSON.stringify({ type: 'done', out, report: report.html })}\n`);
    else {
      process.stdout.write(formatWorldTable(summary).text);
      process.stdout.write(`report: ${report.html}\n`);
    }
  } finally {
    bar?.reporter.stop();
    process.removeListener('SIGINT', stop);
  }
}
