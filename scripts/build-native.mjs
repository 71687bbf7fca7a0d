#!/usr/bin/env node
// Builds the addon with cmake-js over native/CMakeLists.txt into build/.
//   --tools     also build the vendored reference tools (llama-mtmd-cli, llama-batched-bench, llama-server)
//   --cuda      VISPLAY_CUDA=ON (ggml-cuda + our kernels; needs the CUDA toolkit and cuBLAS)
//   --debug     debug build
// Environment: VISPLAY_CUDA=1 is the same as --cuda; VISPLAY_BUILD_JOBS sets the parallel jobs.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const cuda = args.has('--cuda') || process.env.VISPLAY_CUDA === '1' || process.env.VISPLAY_CUDA === 'ON';
const jobs = process.env.VISPLAY_BUILD_JOBS || String(Math.max(1, cpus().length));
export const BUILD_DIR = join(ROOT, 'build');
export const TOOL_TARGETS = ['llama-mtmd-cli', 'llama-batched-bench', 'llama-server'];

if (!existsSync(join(ROOT, 'native', 'vendor', 'llama.cpp', '.visplay-stamp'))) {
  process.stderr.write('visplay-native build: native/vendor/llama.cpp is missing; run `npm run setup` first\n');
  process.exit(1);
}

// VISPLAY_BUILD_DIR builds elsewhere (e.g. a CUDA build beside the CPU one in build/); the addon is
// loaded from build/ (src/native.ts), so a build elsewhere is for its executables or for copying.
const OUT_DIR = process.env.VISPLAY_BUILD_DIR ? resolve(ROOT, process.env.VISPLAY_BUILD_DIR) : BUILD_DIR;
// With --cuda, CMake reads the architectures from $VISPLAY_CUDA_ARCHITECTURES (default: native with a
// GPU, else 90) and cuBLAS from the toolkit or a Python wheel (native/cmake/visplay_cuda.cmake).
const cudaArchs = process.env.VISPLAY_CUDA_ARCHITECTURES;
const cmakeJs = join(ROOT, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const common = ['--directory', join(ROOT, 'native'), '--out', OUT_DIR, '--parallel', jobs,
  ...(cuda && cudaArchs ? [`--CDCMAKE_CUDA_ARCHITECTURES=${cudaArchs}`] : []),
  args.has('--debug') ? '--debug' : '--config=Release',
  `--CDVISPLAY_CUDA=${cuda ? 'ON' : 'OFF'}`, '--CDCMAKE_BUILD_TYPE=' + (args.has('--debug') ? 'Debug' : 'Release')];
// CCACHE_BASEDIR makes ccache's keys relative to the checkout, so a fresh clone in another folder
// (CI) reuses the objects compiled for this one.
const env = { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs, CCACHE_BASEDIR: process.env.CCACHE_BASEDIR ?? ROOT };

function sh(cmd, argv) {
  execFileSync(cmd, argv, { stdio: 'inherit', cwd: ROOT, env });
}

try {
  sh(process.execPath, [cmakeJs, 'build', ...common, '--target', 'visplay']);
  if (args.has('--tools')) {
    sh('cmake', ['--build', OUT_DIR, '--config', 'Release', '--parallel', jobs, '--target', ...TOOL_TARGETS]);
  }
} catch (e) {
  process.stderr.write(`visplay-native build: the native build failed (${e.message.split('\n')[0]}).\n` +
    'What to do:\n  - check that cmake (>= 3.18) and a C++17 compiler are installed\n' +
    '  - with --cuda: the CUDA toolkit (nvcc) and cuBLAS (toolkit or `pip install nvidia-cublas`, or\n' +
    '    VISPLAY_CUBLAS_DIR) must be there; the "visplay:" line in the log names what is missing\n  - the full log is above\n');
  process.exit(1);
}
