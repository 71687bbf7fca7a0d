// A progress bar on stderr for long batches: samples done, samples/s, tokens/s, ETA. Drawn only when
// stderr is a terminal; piped or logged output stays clean (no carriage-return redraws in CI logs).
import cliProgress from 'cli-progress';

export interface ProgressReporter {
  /** `done` of `total` samples finished; `tokens` generated so far in all samples. */
  update(done: number, extra: { tokens: number }): void;
  /** Draws the final state and releases the terminal line. Idempotent. */
  stop(): void;
}

export interface ProgressOptions {
  /** Where to draw (default process.stderr); tests pass their own. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** What is counted (default 'samples'): 'steps', 'questions', ... */
  unit?: string;
}

const NO_PROGRESS: ProgressReporter = { update() {}, stop() {} };

export function createProgress(label: string, total: number, options: ProgressOptions = {}): ProgressReporter {
  const stream = options.stream ?? process.stderr;
  if (!stream.isTTY) return NO_PROGRESS;

  const bar = new cliProgress.SingleBar({
    stream,
    format: `${label} [{bar}] {value}/{total} ${options.unit ?? 'samples'} | {sampleRate} ${options.unit ?? 'samples'}/s | {tokenRate} tok/s | ETA {etaText}`,
    barCompleteChar: '=',
    barIncompleteChar: ' ',
    barsize: 24,
    hideCursor: true,
    clearOnComplete: false,
  });
  const started = performance.now();
  bar.start(total, 0, { sampleRate: formatRate(0), tokenRate: formatRate(0), etaText: formatEta(NaN) });
  let stopped = false;

  return {
    update(done, { tokens }) {
      if (stopped) return;
      const seconds = (performance.now() - started) / 1000;
      // Our own ETA: cli-progress's shows "NFs" until the first sample ends, and samples of a batch
      // tend to end together, late.
      const eta = done > 0 ? ((total - done) * seconds) / done : NaN;
      bar.update(done, { sampleRate: formatRate(done / seconds), tokenRate: formatRate(tokens / seconds), etaText: formatEta(eta) });
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}

/** A rate for a narrow column: "0.0", "3.4", "57", "12.3k". */
export function formatRate(perSecond: number): string {
  if (!Number.isFinite(perSecond) || perSecond <= 0) return '0.0';
  if (perSecond < 10) return perSecond.toFixed(1);
  if (perSecond < 10_000) return Math.round(perSecond).toString();
  return `${(perSecond / 1000).toFixed(1)}k`;
}

/** Seconds left as "--" (unknown), "42s", "3m05s", "1h02m". */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
