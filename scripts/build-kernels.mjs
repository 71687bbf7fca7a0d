#!/usr/bin/env node
// Builds the standalone GRPO kernels project (native/kernels: the library, visplay_kernels_test and
// visplay_kernels_bench) into build-kernels/, with plain CMake (ninja when installed, else make).
// It needs neither Node headers nor llama.cpp, and with --cuda no GPU: CI runs
// `node scripts/build-kernels.mjs --cuda --test` on a machine without one to prove that the .cu
// files compile warning-free (the test then prints "SKIP cuda: ..." and passes).
//
//   --cuda          VISPLAY_CUDA=ON: compile native/cuda/grpo_kernels.cu with nvcc (no cuBLAS)
//   --arch LIST     CMAKE_CUDA_ARCHITECTURES with --cuda (default "80;90"; "native" on a GPU machine)
//   --test          run visplay_kernels_test afterwards; the exit code is the test's
//   --bench         run visplay_kernels_bench afterwards (arguments after `--` go to it)
//   --debug         Debug instead of Release
//   --no-werror     do not treat warnings as errors (they are errors by default here)
// Environment: VISPLAY_KERNELS_BUILD_DIR (default build-kernels), VISPLAY_BUILD_JOBS, CUDACXX.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const KERNELS_BUILD_DIR = resolve(ROOT, process.env.VISPLAY_KERNELS_BUILD_DIR ?? 'build-kernels');

const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const own = dashdash === -1 ? argv : argv.slice(0, dashdash);
const passthrough = dashdash === -1 ? [] : argv.slice(dashdash + 1);
const known = new Set(['--cuda', '--test', '--bench', '--debug', '--no-werror', '--arch']);
const flags = new Set();
let arch;
for (let i = 0; i < own.length; i++) {
  if (!known.has(own[i])) fail(`unknown option ${own[i]}; expected ${[...known].join(', ')}`);
  if (own[i] === '--arch') {
    arch = own[++i];
    if (!arch) fail('--arch needs a value, e.g. --arch "80;90" or --arch native');
  } else {
    flags.add(own[i]);
  }
}
const cuda = flags.has('--cuda');
const jobs = process.env.VISPLAY_BUILD_JOBS || String(Math.max(1, cpus().length));

function fail(message) {
  process.stderr.write(`visplay-native build-kernels: ${message}\n`);
  process.exit(1);
}

function found(cmd, args = ['--version']) {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

function sh(cmd, args) {
  execFileSync(cmd, args, { stdio: 'inherit', cwd: ROOT });
}

if (!found('cmake')) fail('cmake (>= 3.18) is not installed; install it (e.g. apt-get install cmake) and run again');

const configure = ['-S', join(ROOT, 'native', 'kernels'), '-B', KERNELS_BUILD_DIR,
  `-DCMAKE_BUILD_TYPE=${flags.has('--debug') ? 'Debug' : 'Release'}`,
  `-DVISPLAY_CUDA=${cuda ? 'ON' : 'OFF'}`,
  `-DVISPLAY_KERNELS_WERROR=${flags.has('--no-werror') ? 'OFF' : 'ON'}`];
// A build folder keeps the generator it was made with; only a new one gets to choose.
const cache = join(KERNELS_BUILD_DIR, 'CMakeCache.txt');
if (!existsSync(cache)) configure.push('-G', found('ninja') ? 'Ninja' : 'Unix Makefiles');
if (found('ccache')) {
  configure.push('-DCMAKE_CXX_COMPILER_LAUNCHER=ccache');
  if (cuda) configure.push('-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache');
}
if (cuda) {
  // nvcc is often installed off the PATH, at /usr/local/cuda/bin.
  const cached = existsSync(cache) && /CMAKE_CUDA_COMPILER:\w+=\S/.test(readFileSync(cache, 'utf8'));
  if (!process.env.CUDACXX && !cached && !found('nvcc')) {
    const usual = '/usr/local/cuda/bin/nvcc';
    if (!existsSync(usual)) {
      fail('--cuda needs the CUDA toolkit: nvcc is neither on PATH nor at /usr/local/cuda/bin/nvcc ' +
        '(install the toolkit, or set CUDACXX=/path/to/nvcc)');
    }
    configure.push(`-DCMAKE_CUDA_COMPILER=${usual}`);
  }
  if (arch) configure.push(`-DCMAKE_CUDA_ARCHITECTURES=${arch}`);
}

try {
  sh('cmake', configure);
  sh('cmake', ['--build', KERNELS_BUILD_DIR, '--parallel', jobs]);
} catch (e) {
  fail(`the kernels build failed (${e.message.split('\n')[0]}); the log is above.\n` +
    'What to do:\n  - check that cmake (>= 3.18) and a C++17 compiler are installed\n' +
    '  - with --cuda: the CUDA toolkit (nvcc) must be installed; no GPU and no cuBLAS are needed');
}

const exe = (name) => join(KERNELS_BUILD_DIR, process.platform === 'win32' ? `${name}.exe` : name);
let status = 0;
if (flags.has('--test')) {
  status = spawnSync(exe('visplay_kernels_test'), [], { stdio: 'inherit' }).status ?? 1;
}
if (flags.has('--bench') && status === 0) {
  status = spawnSync(exe('visplay_kernels_bench'), passthrough, { stdio: 'inherit' }).status ?? 1;
}
process.exit(status);
