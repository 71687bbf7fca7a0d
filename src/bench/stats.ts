// What every measurement of `visplay-native bench` shares: medians with their spread, a peer that
// was skipped (with the reason, never a crash), ratios, the machine's name, and the progress line.
import { availableParallelism, cpus, totalmem } from 'node:os';
import { loadBinding } from '../native.js';

/** Median of the timed runs (the warm-up run excluded), with the smallest and largest. */
export interface Stat {
  median: number;
  min: number;
  max: number;
  /** Timed runs behind the figure. */
  runs: number;
}

/** A peer that could not be measured, and why (tool not built, torch not installed, ...). */
export interface Skipped {
  skipped: string;
}

export function isSkipped(v: unknown): v is Skipped {
  return typeof v === 'object' && v !== null && typeof (v as Skipped).skipped === 'string';
}

/** The median of an even count is the mean of the two middle values. */
export function stat(xs: readonly number[]): Stat {
  if (xs.length === 0) throw new Error('stat() of no values');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s.at(-1)!, runs: s.length };
}

/** A rate from durations: tokens / seconds, so the slowest run gives the min. */
export function rateOf(amount: number, seconds: Stat): Stat {
  return { median: amount / seconds.median, min: amount / seconds.max, max: amount / seconds.min, runs: seconds.runs };
}

export function ratio(ours: Stat | undefined, peer: Stat | Skipped | undefined | null): number | null {
  if (!ours || !peer || isSkipped(peer) || !(peer.median > 0)) return null;
  return ours.median / peer.median;
}

/** The first line of an error, for a skip reason. */
export function firstLine(e: unknown): string {
  const text = (e as { stderr?: unknown })?.stderr;
  const msg = typeof text === 'string' && text.trim() ? text : e instanceof Error ? e.message : String(e);
  return msg.trim().split('\n').filter((l) => l.trim()).at(-1)?.trim() ?? 'unknown error';
}

export interface GpuDevice {
  name: string;
  memoryTotalMiB: number;
}

export interface Machine {
  cpu: string;
  cores: number;
  threads: number;
  memoryGiB: number;
  /** Whether the addon was built with CUDA; devices it sees (empty on CPU builds). */
  cudaBuild: boolean;
  gpus: GpuDevice[];
  node: string;
  platform: string;
}

export function machineInfo(threads: number): Machine {
  let cudaBuild = false;
  let gpus: GpuDevice[] = [];
  try {
    const info = loadBinding().gpuInfo();
    cudaBuild = info.cudaBuild;
    gpus = info.devices.map((d) => ({ name: d.name, memoryTotalMiB: Math.round(d.memoryTotal / 2 ** 20) }));
  } catch {
    // No addon: runBench fails later with the loader's own message.
  }
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown CPU',
    cores: availableParallelism(),
    threads,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cudaBuild,
    gpus,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
}

/** "AMD EPYC 7B13, 2 cores, 2 threads, no GPU (CPU build)" */
export function describeMachine(m: Machine): string {
  const gpu = m.gpus.length > 0
    ? m.gpus.map((g) => `${g.name} (${(g.memoryTotalMiB / 1024).toFixed(0)} GiB)`).join(', ')
    : m.cudaBuild ? 'no CUDA device found (CUDA build)' : 'no GPU (CPU build)';
  return `${m.cpu}, ${m.cores} cores, ${m.threads} threads, ${m.memoryGiB} GiB RAM, ${gpu}`;
}

/**
 * One progress line on stderr: redrawn in place on a terminal, one line per step otherwise (so a
 * CI log shows where a slow run is). Never on stdout, so `--json` output stays one document.
 */
export class ProgressLine {
  readonly #stream: NodeJS.WritableStream & { isTTY?: boolean };
  readonly #started = performance.now();
  #drawn = false;
  #enabled: boolean;

  constructor(options: { stream?: NodeJS.WritableStream & { isTTY?: boolean }; enabled?: boolean } = {}) {
    this.#stream = options.stream ?? process.stderr;
    this.#enabled = options.enabled ?? true;
  }

  update(message: string): void {
    if (!this.#enabled) return;
    const seconds = ((performance.now() - this.#started) / 1000).toFixed(0).padStart(4);
    const line = `bench ${seconds}s  ${message}`;
    if (this.#stream.isTTY) {
      const width = (this.#stream as { columns?: number }).columns ?? 120;
      this.#stream.write(`\r\x1b[K${line.slice(0, Math.max(20, width - 1))}`);
      this.#drawn = true;
    } else {
      this.#stream.write(`${line}\n`);
    }
  }

  /** Clears the line on a terminal. Idempotent. */
  done(): void {
    if (this.#drawn) this.#stream.write('\r\x1b[K');
    this.#drawn = false;
    this.#enabled = false;
  }
}
