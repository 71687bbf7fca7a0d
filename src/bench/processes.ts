// The peer processes of the benchmark: finding (or building) the vendored llama.cpp tools, running
// a tool to completion while watching its peak RSS, and making sure no child outlives us, also on
// Ctrl-C, on SIGTERM and on an error thrown anywhere in the run.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../native.js';
import { PeakRssWatcher } from './memory.js';

export const BUILD_DIR = join(PACKAGE_ROOT, 'build');

// ---- children that must not outlive us ------------------------------------------------------------

const live = new Set<ChildProcess>();
let installed = false;

function killAll(signal: NodeJS.Signals): void {
  for (const child of live) {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  killAll('SIGKILL');
  live.clear();
  // Default behaviour from here on: the re-raised signal ends the process with the usual status.
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  process.kill(process.pid, signal);
}

function onExit(): void {
  killAll('SIGKILL');
}

/** Registers `child` to be killed if we exit or are interrupted before it ends. */
export function track(child: ChildProcess): void {
  if (!installed) {
    installed = true;
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('exit', onExit);
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Children still alive (for tests: must be 0 after a run). */
export function liveChildren(): number {
  return live.size;
}

// ---- running a tool ---------------------------------------------------------------------------------

export interface ToolRun {
  stdout: string;
  stderr: string;
  /** Largest VmHWM seen while it ran, MiB (null where /proc is not readable). */
  peakRssMiB: number | null;
}

/** Runs `bin` to completion; rejects with the last lines of its stderr on a non-zero exit. */
export function runTool(bin: string, args: readonly string[], options: { timeoutMs?: number; cwd?: string } = {}): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd ?? PACKAGE_ROOT });
    track(child);
    const watcher = child.pid === undefined ? undefined : new PeakRssWatcher(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-64 * 1024); });
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      watcher?.stop();
      reject(e);
    });
    // 'exit' fires before the pipes close; the last VmHWM read is the one before that.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const peakRssMiB = watcher?.stop() ?? null;
      if (code === 0) {
        resolve({ stdout, stderr, peakRssMiB });
      } else {
        const tail = stderr.trim().split('\n').slice(-3).join(' | ');
        reject(Object.assign(new Error(`${bin.split('/').at(-1)} exited with ${signal ?? `status ${code}`}: ${tail}`), { stderr }));
      }
    });
  });
}

// ---- the vendored tools ----------------------------------------------------------------------------

/** Where scripts/build-native.mjs --tools puts them. VISPLAY_TOOLS_DIR names another folder. */
export function toolPath(name: string): string {
  return join(process.env.VISPLAY_TOOLS_DIR ?? join(BUILD_DIR, 'bin'), name);
}

/**
 * The path of a vendored tool, building it in the addon's build folder when it is missing and
 * `build` allows (`cmake --build build --target NAME`: the tool only, the addon is not relinked).
 * Returns a reason instead when there is none.
 */
export async function findTool(name: string, build: boolean, onBuild?: (message: string) => void): Promise<string | { missing: string }> {
  const path = toolPath(name);
  if (existsSync(path)) return path;
  const fix = `build it with \`node scripts/build-native.mjs --tools\``;
  if (!build) return { missing: `${name} is not built (${path}); ${fix}` };
  if (!existsSync(join(BUILD_DIR, 'CMakeCache.txt'))) {
    return { missing: `${name} is not built and there is no CMake build folder to build it in (${BUILD_DIR}); ${fix}` };
  }
  onBuild?.(`building ${name} (once; a few minutes)`);
  try {
    await runTool('cmake', ['--build', BUILD_DIR, '--config', 'Release', '--target', name]);
  } catch (e) {
    return { missing: `${name} is not built and building it failed (${(e as Error).message.split('\n')[0]}); ${fix}` };
  }
  return existsSync(path) ? path : { missing: `${name} was built but is not at ${path}` };
}
