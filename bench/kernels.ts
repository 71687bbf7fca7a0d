// GRPO kernel throughput: runs the visplay_kernels_bench executable (native/kernels/kernels_bench.cpp)
// and prints its table: the CPU references and, on a CUDA build with a device, the CUDA kernels next
// to the device's measured device-to-device copy bandwidth. Medians of repeated runs after a
// warm-up, caches flushed between runs; GB/s count the fewest bytes each kernel must move.
//
// Build the executable first (plain CMake, no Node headers, no GPU needed to compile):
//   node scripts/build-kernels.mjs            CPU only, into build-kernels/
//   node scripts/build-kernels.mjs --cuda     with the CUDA kernels (nvcc; no cuBLAS)
// or, inside the addon's build: cmake --build build --target visplay_kernels_bench
// (the executable is then build/kernels/visplay_kernels_bench).
//
//   node --import tsx bench/kernels.ts [--json] [--quick] [--repeats N] [--threads N] [--no-cpu] [--no-cuda]
//
// Arguments go to the executable unchanged. VISPLAY_KERNELS_BENCH names another executable.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../src/native.js';

const candidates = [
  process.env.VISPLAY_KERNELS_BENCH,
  join(PACKAGE_ROOT, process.env.VISPLAY_KERNELS_BUILD_DIR ?? 'build-kernels', 'visplay_kernels_bench'),
  join(PACKAGE_ROOT, 'build', 'kernels', 'visplay_kernels_bench'),
].filter((p): p is string => p !== undefined && p !== '');

const exe = candidates.find((p) => existsSync(p));
if (exe === undefined) {
  console.error(`visplay_kernels_bench is not built (looked for ${candidates.join(', ')}). Build it with\n` +
    '  node scripts/build-kernels.mjs            (CPU)\n' +
    '  node scripts/build-kernels.mjs --cuda     (with the CUDA kernels)');
  process.exit(1);
}

const args = process.argv.slice(2);
console.error(`# ${exe} ${args.join(' ')}`.trimEnd());
const run = spawnSync(exe, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
if (run.error) {
  console.error(`could not run ${exe}: ${run.error.message}`);
  process.exit(1);
}
process.stderr.write(run.stderr);
if (args.includes('--json') && run.status === 0) {
  // Check that what we pass on is one JSON document, so scripts can rely on it.
  JSON.parse(run.stdout);
}
process.stdout.write(run.stdout);
process.exit(run.status ?? 1);
