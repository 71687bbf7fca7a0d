// Peak memory: resident set of our own process and of each peer process, and GPU memory on a CUDA
// build.
//
// Linux keeps a process's peak resident set in /proc/PID/status (VmHWM). For a peer we read it
// while the process is alive (it is gone once the process exits), polling a short-lived tool and
// reading a server right before stopping it. For ourselves, writing "5" to /proc/self/clear_refs
// resets the peak, so each phase of the benchmark (rollouts, train step) gets its own figure;
// elsewhere we fall back to getrusage's maxRSS, the peak of the whole process so far.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadBinding } from '../native.js';
import type { Skipped } from './stats.js';

const MIB = 2 ** 20;

/** VmHWM of a process in MiB, or null when it cannot be read (process gone, not Linux). */
export function peakRssOf(pid: number | 'self'): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Resets our process's peak RSS to its current RSS; false where the kernel does not offer it. */
export function resetOwnPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** Our peak RSS in MiB since the last reset (or since the start, without /proc). */
export function ownPeakRss(): number {
  return peakRssOf('self') ?? process.resourceUsage().maxRSS / 1024;
}

/** Polls a child's VmHWM until stopped; keeps the largest value read. */
export class PeakRssWatcher {
  readonly #pid: number;
  readonly #timer: NodeJS.Timeout;
  #peak: number | null = null;

  constructor(pid: number, intervalMs = 25) {
    this.#pid = pid;
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.#timer.unref();
  }

  sample(): void {
    const v = peakRssOf(this.#pid);
    if (v !== null && (this.#peak === null || v > this.#peak)) this.#peak = v;
  }

  /** The largest VmHWM seen (null: never readable). */
  stop(): number | null {
    clearInterval(this.#timer);
    return this.#peak;
  }
}

export interface GpuMemory {
  /** Bytes in use on each device (total - free), as the CUDA driver reports them, in MiB. */
  usedMiB: number[];
}

/** Device memory in use now, or a reason on CPU builds and machines without a CUDA device. */
export function gpuMemoryInUse(): GpuMemory | Skipped {
  let info: ReturnType<ReturnType<typeof loadBinding>['gpuInfo']>;
  try {
    info = loadBinding().gpuInfo();
  } catch (e) {
    return { skipped: `the addon did not load (${(e as Error).message.split('\n')[0]})` };
  }
  if (!info.cudaBuild) return { skipped: 'CPU build (GPU memory is measured on a CUDA build: npm run build:native -- --cuda)' };
  if (info.devices.length === 0) return { skipped: 'CUDA build, but no CUDA device is visible' };
  return { usedMiB: info.devices.map((d) => (d.memoryTotal - d.memoryFree) / MIB) };
}

/** The largest growth of any device's use from `base` to `now`, in MiB (what one process added). */
export function gpuGrowth(base: GpuMemory, now: GpuMemory): number {
  return Math.max(0, ...now.usedMiB.map((u, i) => u - (base.usedMiB[i] ?? 0)));
}
