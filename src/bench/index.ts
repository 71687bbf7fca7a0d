// `visplay-native bench`: one run that measures us against our peers on the same machine and model.
//
//   rollouts, text prompt    ours vs llama-batched-bench         (rollouts.ts)
//   rollouts, image prompts  ours vs llama-server over HTTP      (rollouts.ts, server.ts)
//   image encodes per round  must equal the distinct images      (our engine's stats)
//   GRPO train step          ours vs the PyTorch reference       (train-step.ts)
//   peak memory              RSS of every process; GPU memory on a CUDA build (memory.ts)
//
// Every figure is the median of `repeats` runs after a warm-up run, with min and max. A peer that
// cannot run (not built and not buildable, torch missing, server not starting) is skipped with its
// reason, in the rows as in the JSON; the run itself goes on.
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { isVisplayError } from '../errors.js';
import { Model } from '../model.js';
import { PACKAGE_ROOT } from '../native.js';
import { makeTinyModel } from '../tiny-model.js';
import * as is from '../validate.js';
import { gpuGrowth, gpuMemoryInUse, ownPeakRss, resetOwnPeakRss, type GpuMemory } from './memory.js';
import { findTool } from './processes.js';
import {
  batchedBench, imageShape, IMAGE_PROMPT, makeImageRound, oursImages, oursText, textContextSize,
  type ImageWorkload, type OursImageResult, type PeerThroughput, type TextWorkload, type Throughput,
} from './rollouts.js';
import { LlamaServer, serverImages, type ServerImageResult } from './server.js';
import { firstLine, isSkipped, machineInfo, ProgressLine, ratio, type Machine, type Skipped, type Stat } from './stats.js';
import { defaultPython, runTrainStep, type TrainStepResult } from './train-step.js';

export { formatBench } from './table.js';
export { benchPlotSvg, writeBenchPlot } from './plot.js';
export type { Stat, Skipped, Machine } from './stats.js';

export interface BenchOptions {
  /** Language-model GGUF and its mmproj (default: the embedded tiny model). */
  model?: string;
  mmproj?: string;
  /** Timed runs per figure, after one warm-up run (default 5; 1 with quick). */
  repeats?: number;
  /** Everything smaller: 1 repeat, fewer tokens, smaller images (for tests and a first look). */
  quick?: boolean;
  /** CPU threads, ours and every peer's (default: the machine's available parallelism). */
  threads?: number;
  /** Parallel sequences per level (default 1, 8, 32). */
  parallel?: number[];
  /** Python with torch for the PyTorch reference (default $VISPLAY_PYTHON, else /usr/bin/python3). */
  python?: string;
  /** Build a missing vendored tool (llama-batched-bench, llama-server) in build/ (default true). */
  buildTools?: boolean;
  /** The progress line on stderr (default true). */
  progress?: boolean;
}

export interface BenchSettings {
  quick: boolean;
  repeats: number;
  parallel: number[];
  threads: number;
  text: { promptTokens: number; generatedTokens: number };
  image: {
    size: number; generatedTokens: number; samplesPerImage: number; prompt: string;
    /** KV cells per sequence: ours parallel * this, llama-server's -c the same. */
    cellsPerSequence: number;
  };
  train: { group: number; responseLength: number; rank: number };
  /** Layers offloaded by the peers (-ngl) on a CUDA build with a device; null on CPU. */
  peerGpuLayers: number | null;
}

export interface RolloutLevel {
  parallel: number;
  text: { ours: Throughput; batchedBench: PeerThroughput | Skipped };
  image: {
    images: number;
    samplesPerImage: number;
    ours: OursImageResult;
    server: ServerImageResult | Skipped;
  };
}

export interface ImageEncodeCheck {
  parallel: number;
  /** Distinct images per round. */
  distinctImages: number;
  /** Our engine's image encodes in each timed round. */
  imageEncodes: number[];
  match: boolean;
}

/** One line of the comparison table: ours and one peer on one measurement. */
export interface BenchRow {
  section: 'rollouts, text prompt' | 'rollouts, image prompts' | 'GRPO train step' | 'peak memory';
  metric: string;
  /** Parallel sequences (rollout rows), else null. */
  parallel: number | null;
  unit: 'tokens/s' | 'MiB';
  /** true for throughput, false for memory. */
  higherIsBetter: boolean;
  /** Our median (null only when our side has no figure either, e.g. GPU memory on a CPU build). */
  ours: number | null;
  oursRange: [number, number] | null;
  peer: string;
  peerValue: number | null;
  peerRange: [number, number] | null;
  /** Why there is no peer figure; null when there is one. */
  skipped: string | null;
  /** ours / peer (null when skipped). */
  ratio: number | null;
}

export interface BenchResult {
  benchmark: 'visplay-native bench';
  version: string;
  date: string;
  machine: Machine;
  model: { modelPath: string; mmprojPath: string; tiny: boolean };
  settings: BenchSettings;
  rows: BenchRow[];
  rollouts: RolloutLevel[];
  imageEncodes: ImageEncodeCheck[];
  imageEncodesMatch: boolean;
  trainStep: TrainStepResult | Skipped;
  memory: {
    /** Our process during the rollout phase (model + engines), MiB. */
    oursRolloutsPeakRssMiB: number;
    /** Our process while loading the model and training, MiB (null when the train step was skipped). */
    oursTrainPeakRssMiB: number | null;
    batchedBenchPeakRssMiB: number | null;
    serverPeakRssMiB: number | null;
    pytorchPeakRssMiB: number | null;
    /** Device memory our rollouts added, and llama-server's, MiB; or why it was not measured. */
    gpu: { oursMiB: number; serverMiB: number | null } | Skipped;
  };
  /** 1-minute load average before and after the run: other work on the machine skews every figure. */
  load: { start: number; end: number; busy: boolean };
  wallSeconds: number;
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

export function benchSettings(options: BenchOptions, threads: number, peerGpuLayers: number | null): BenchSettings {
  const quick = options.quick ?? false;
  return {
    quick,
    repeats: options.repeats ?? (quick ? 1 : 5),
    parallel: options.parallel ?? [1, 8, 32],
    threads,
    text: quick ? { promptTokens: 32, generatedTokens: 16 } : { promptTokens: 128, generatedTokens: 64 },
    image: { size: quick ? 112 : 336, generatedTokens: quick ? 16 : 64, samplesPerImage: 8, prompt: IMAGE_PROMPT, cellsPerSequence: 0 },
    train: quick ? { group: 4, responseLength: 16, rank: 8 } : { group: 8, responseLength: 64, rank: 8 },
    peerGpuLayers,
  };
}

export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const started = performance.now();
  const loadStart = loadavg()[0]!;
  const threads = options.threads === undefined ? availableParallelism() : is.integer('threads', options.threads, 1, 1024);
  if (options.repeats !== undefined) is.integer('repeats', options.repeats, 1, 1000);
  if (options.parallel !== undefined) is.arrayOf('parallel', options.parallel, (n, v) => is.integer(n, v, 1, 128));
  if ((options.model === undefined) !== (options.mmproj === undefined)) {
    throw is.invalidArg(options.model === undefined ? 'model' : 'mmproj', 'a file path (model and mmproj go together)', undefined);
  }
  const progress = new ProgressLine({ enabled: options.progress ?? true });
  try {
    progress.update('preparing the model');
    const tiny = options.model === undefined;
    const files = tiny
      ? await makeTinyModel({ seed: 1 })
      : { modelPath: resolve(options.model!), mmprojPath: resolve(options.mmproj!) };
    const machine = machineInfo(threads);
    const peerGpuLayers = machine.cudaBuild && machine.gpus.length > 0 ? 999 : null;
    const settings = benchSettings(options, threads, peerGpuLayers);
    const buildTools = options.buildTools ?? true;
    const batchedBin = await findTool('llama-batched-bench', buildTools, (m) => progress.update(m));
    const serverBin = await findTool('llama-server', buildTools, (m) => progress.update(m));

    // ---- rollouts, level by level: ours, then its peer, so drifting background load hits both ----
    const gpuBase = gpuMemoryInUse();
    let gpuOurs = 0;
    let gpuServer: number | null = null;
    const sampleGpu = () => {
      if (isSkipped(gpuBase)) return;
      const now = gpuMemoryInUse();
      if (!isSkipped(now)) gpuOurs = Math.max(gpuOurs, gpuGrowth(gpuBase, now));
    };
    resetOwnPeakRss();
    const model = await Model.load({ model: files.modelPath, mmproj: files.mmprojPath, threads });
    const levels: RolloutLevel[] = [];
    let oursRolloutsPeak = 0;
    let batchedPeak: number | null = null;
    let serverPeak: number | null = null;
    try {
      settings.image.cellsPerSequence = await cellsPerSequence(model, settings);
      const n = settings.parallel.length;
      for (const [li, P] of settings.parallel.entries()) {
        const at = `P=${P} (${li + 1}/${n})`;
        const runLabel = (r: number, of: number) => (r === 0 ? 'warm-up' : `run ${r}/${of}`);
        const tw: TextWorkload = {
          parallel: P, pp: settings.text.promptTokens, tg: settings.text.generatedTokens,
          contextSize: textContextSize(P, settings.text.promptTokens, settings.text.generatedTokens),
          threads, repeats: settings.repeats, gpuLayers: peerGpuLayers ?? undefined,
        };
        const textOurs = await oursText(model, tw, (r, of) => {
          if (r > 0) sampleGpu();
          progress.update(`${at} text prompt: visplay-native ${runLabel(r, of)}`);
        });
        let textPeer: PeerThroughput | Skipped;
        if (typeof batchedBin !== 'string') {
          textPeer = { skipped: batchedBin.missing };
        } else {
          try {
            textPeer = await batchedBench(batchedBin, files.modelPath, tw, (r, of) => progress.update(`${at} text prompt: llama-batched-bench ${runLabel(r, of)}`));
            if (textPeer.peakRssMiB !== null) batchedPeak = Math.max(batchedPeak ?? 0, textPeer.peakRssMiB);
          } catch (e) {
            textPeer = { skipped: `llama-batched-bench failed: ${firstLine(e)}` };
          }
        }

        const iw: ImageWorkload = {
          parallel: P, tg: settings.image.generatedTokens, imageSize: settings.image.size,
          cellsPerSequence: settings.image.cellsPerSequence, threads, repeats: settings.repeats,
        };
        const imageOurs = await oursImages(model, iw, (r, of) => {
          if (r > 0) sampleGpu();
          progress.update(`${at} image prompts: visplay-native ${runLabel(r, of)}`);
        });
        oursRolloutsPeak = Math.max(oursRolloutsPeak, ownPeakRss());
        let imagePeer: ServerImageResult | Skipped;
        if (typeof serverBin !== 'string') {
          imagePeer = { skipped: serverBin.missing };
        } else {
          progress.update(`${at} image prompts: starting llama-server with ${P} slots`);
          const base = gpuMemoryInUse();
          let server: LlamaServer | undefined;
          try {
            server = await LlamaServer.start({
              bin: serverBin, modelPath: files.modelPath, mmprojPath: files.mmprojPath, parallel: P,
              contextSize: P * settings.image.cellsPerSequence, threads, gpuLayers: peerGpuLayers ?? undefined,
            });
            imagePeer = await serverImages(server, iw, (r, of) => progress.update(`${at} image prompts: llama-server ${runLabel(r, of)}`));
            if (imagePeer.peakRssMiB !== null) serverPeak = Math.max(serverPeak ?? 0, imagePeer.peakRssMiB);
            const now = gpuMemoryInUse();
            if (!isSkipped(base) && !isSkipped(now)) gpuServer = Math.max(gpuServer ?? 0, gpuGrowth(base, now));
          } catch (e) {
            const why = firstLine(e);
            imagePeer = { skipped: why.startsWith('llama-server') ? why : `llama-server: ${why}` };
          } finally {
            await server?.stop();
          }
        }
        const shape = imageShape(P);
        levels.push({
          parallel: P,
          text: { ours: textOurs, batchedBench: textPeer },
          image: { images: shape.images, samplesPerImage: shape.samples, ours: imageOurs, server: imagePeer },
        });
      }
    } finally {
      model.dispose();
    }

    // ---- GRPO train step ----
    let trainStep: TrainStepResult | Skipped;
    try {
      trainStep = await runTrainStep({
        modelPath: files.modelPath, mmprojPath: files.mmprojPath, threads, repeats: settings.repeats,
        group: settings.train.group, responseLength: settings.train.responseLength, rank: settings.train.rank,
        python: options.python ?? defaultPython(),
        onProgress: (what, r, of) => progress.update(what === 'ours'
          ? `GRPO train step: visplay-native ${r === 0 ? 'warm-up' : `step ${r}/${of}`}`
          : `GRPO train step: PyTorch reference (${of} steps after a warm-up, in one process)`),
      });
    } catch (e) {
      // A model the trainer does not support is a skip, not the end of the run.
      if (!isVisplayError(e, 'ERR_UNSUPPORTED_MODEL')) throw e;
      trainStep = { skipped: e.message };
    }

    const imageEncodes: ImageEncodeCheck[] = levels.map((l) => ({
      parallel: l.parallel,
      distinctImages: l.image.images,
      imageEncodes: l.image.ours.encodes.map((e) => e.imageEncodes),
      match: l.image.ours.encodes.every((e) => e.imageEncodes === e.distinctImages && e.distinctImages === l.image.images),
    }));
    const gpu = isSkipped(gpuBase) ? gpuBase : { oursMiB: gpuOurs, serverMiB: gpuServer };
    const memory: BenchResult['memory'] = {
      oursRolloutsPeakRssMiB: oursRolloutsPeak,
      oursTrainPeakRssMiB: isSkipped(trainStep) ? null : trainStep.ours.peakRssMiB,
      batchedBenchPeakRssMiB: batchedPeak,
      serverPeakRssMiB: serverPeak,
      pytorchPeakRssMiB: isSkipped(trainStep) || isSkipped(trainStep.pytorch) ? null : trainStep.pytorch.peakRssMiB,
      gpu,
    };
    const result: BenchResult = {
      benchmark: 'visplay-native bench',
      version: packageVersion(),
      date: new Date().toISOString(),
      machine,
      model: { modelPath: files.modelPath, mmprojPath: files.mmprojPath, tiny },
      settings,
      rows: [],
      rollouts: levels,
      imageEncodes,
      imageEncodesMatch: imageEncodes.every((c) => c.match),
      trainStep,
      memory,
      load: { start: loadStart, end: loadavg()[0]!, busy: false },
      wallSeconds: (performance.now() - started) / 1000,
    };
    // Busy: more runnable work than half the cores when we started or ended (ours included at the end).
    result.load.busy = loadStart > machine.cores / 2 || result.load.end > machine.cores * 1.5;
    result.rows = benchRows(result);
    return result;
  } finally {
    progress.done();
  }
}

/** KV cells one sequence of the image workload needs: its prompt (measured) + tg, rounded up to 256. */
async function cellsPerSequence(model: Model, s: BenchSettings): Promise<number> {
  const engine = await model.createRollout({ contextSize: 8192, parallel: 1, threads: s.threads, flashAttention: 'off' });
  try {
    const round = await makeImageRound(1, s.image.size, 9999);
    const { stats } = await engine.generate([{ messages: [{ role: 'user', content: IMAGE_PROMPT }], images: round.images, n: 1, maxTokens: 1, seed: 0 }]);
    return Math.ceil((stats.promptTokens + s.image.generatedTokens + 32) / 256) * 256;
  } finally {
    engine.dispose();
  }
}

// ---- the comparison rows ----------------------------------------------------------------------------

function row(section: BenchRow['section'], metric: string, parallel: number | null, unit: BenchRow['unit'],
  ours: Stat | number | null, peer: string, value: Stat | number | null | Skipped, missing = 'not measured'): BenchRow {
  const asStat = (v: Stat | number): Stat => (typeof v === 'number' ? { median: v, min: v, max: v, runs: 1 } : v);
  const o = ours === null ? null : asStat(ours);
  const p = value === null || isSkipped(value) ? null : asStat(value);
  return {
    section, metric, parallel, unit, higherIsBetter: unit === 'tokens/s',
    ours: o?.median ?? null, oursRange: o && typeof ours !== 'number' ? [o.min, o.max] : null,
    peer, peerValue: p?.median ?? null, peerRange: p && typeof value !== 'number' ? [p.min, p.max] : null,
    skipped: p ? null : isSkipped(value) ? value.skipped : missing,
    ratio: ratio(o ?? undefined, p ?? undefined),
  };
}

export function benchRows(r: BenchResult): BenchRow[] {
  const rows: BenchRow[] = [];
  const pick = <T>(v: T | Skipped, f: (x: T) => Stat): Stat | Skipped => (isSkipped(v) ? v : f(v));
  for (const l of r.rollouts) {
    rows.push(row('rollouts, text prompt', 'generated tokens/s (decode steps)', l.parallel, 'tokens/s', l.text.ours.generated,
      'llama-batched-bench', pick(l.text.batchedBench, (x) => x.generated)));
    rows.push(row('rollouts, text prompt', 'prompt tokens/s (shared prompt)', l.parallel, 'tokens/s', l.text.ours.prompt,
      'llama-batched-bench', pick(l.text.batchedBench, (x) => x.prompt)));
  }
  for (const l of r.rollouts) {
    rows.push(row('rollouts, image prompts', 'generated tokens/s (end to end)', l.parallel, 'tokens/s', l.image.ours.generated,
      'llama-server (HTTP)', pick(l.image.server, (x) => x.generated)));
    rows.push(row('rollouts, image prompts', 'prompt tokens/s (as requested)', l.parallel, 'tokens/s', l.image.ours.prompt,
      'llama-server (HTTP)', pick(l.image.server, (x) => x.prompt)));
  }
  const t = r.trainStep;
  if (isSkipped(t)) {
    rows.push(row('GRPO train step', 'trained tokens/s', null, 'tokens/s', null, 'PyTorch reference', t));
  } else {
    const torch = isSkipped(t.pytorch) ? 'PyTorch reference' : `PyTorch ${t.pytorch.torch} (reference)`;
    rows.push(row('GRPO train step', 'trained tokens/s', null, 'tokens/s', t.ours.tokensPerSecond, torch,
      pick(t.pytorch, (x) => x.tokensPerSecond)));
  }
  const m = r.memory;
  const skipOf = (v: unknown, fallback: string): Skipped | null => (isSkipped(v) ? v : { skipped: fallback });
  const levelSkip = (f: (l: RolloutLevel) => unknown) => r.rollouts.map(f).find(isSkipped) as Skipped | undefined;
  rows.push(row('peak memory', 'peak RSS, rollouts', null, 'MiB', m.oursRolloutsPeakRssMiB, 'llama-batched-bench',
    m.batchedBenchPeakRssMiB ?? levelSkip((l) => l.text.batchedBench) ?? skipOf(null, 'not readable (/proc)')));
  rows.push(row('peak memory', 'peak RSS, rollouts', null, 'MiB', m.oursRolloutsPeakRssMiB, 'llama-server',
    m.serverPeakRssMiB ?? levelSkip((l) => l.image.server) ?? skipOf(null, 'not readable (/proc)')));
  const torchSkip = isSkipped(t) ? t : isSkipped(t.pytorch) ? t.pytorch : { skipped: 'not reported' };
  rows.push(row('peak memory', 'peak RSS, train step', null, 'MiB', m.oursTrainPeakRssMiB, 'PyTorch reference',
    m.pytorchPeakRssMiB ?? torchSkip));
  if (isSkipped(m.gpu)) {
    rows.push(row('peak memory', 'GPU memory, rollouts', null, 'MiB', null, 'llama-server', m.gpu));
  } else {
    rows.push(row('peak memory', 'GPU memory, rollouts', null, 'MiB', m.gpu.oursMiB, 'llama-server',
      m.gpu.serverMiB ?? levelSkip((l) => l.image.server) ?? { skipped: 'not measured' }));
  }
  return rows;
}

