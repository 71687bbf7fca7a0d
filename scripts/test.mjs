#!/usr/bin/env node
// `npm test`: the three tiers with Node's built-in runner.
//   unit    pure TypeScript, no addon
//   native  the addon on CPU with the embedded tiny model (and the vendored reference tools,
//           built here on first use: llama-mtmd-cli for the parity test)
//   gpu     CUDA checks; each test skips with a message when there is no CUDA device
// `node scripts/test.mjs [unit|native|gpu ...]` runs some tiers only.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const all = ['unit', 'native', 'gpu'];
const tiers = process.argv.slice(2).length ? process.argv.slice(2) : all;
for (const t of tiers) {
  if (!all.includes(t)) {
    console.error(`unknown test tier ${t}; expected one of ${all.join(', ')}`);
    process.exit(2);
  }
}

if (tiers.includes('native')) {
  // Reference tools for parity tests; incremental, so this is quick when they are current.
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-native.mjs'), '--tools'], { stdio: ['ignore', 'ignore', 'inherit'], cwd: ROOT });
}

const files = tiers.flatMap((t) => {
  const dir = join(ROOT, 'test', t);
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.test.ts')).sort().map((f) => join('test', t, f)) : [];
});
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], { stdio: 'inherit', cwd: ROOT });
process.exit(result.status ?? 1);
