#!/usr/bin/env node
// `npm ci` / `npm install` runs this: fetch the pinned llama.cpp, build the addon, compile the TS.
// Each step is skipped when its output is already there and current (the native build is
// incremental, and ccache, when installed, makes a rebuild from scratch take seconds).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const node = process.execPath;

function step(label, argv) {
  console.log(`visplay-native install: ${label}`);
  execFileSync(node, argv, { stdio: 'inherit', cwd: ROOT });
}

try {
  if (process.env.VISPLAY_SKIP_NATIVE === '1') {
    console.log('visplay-native install: VISPLAY_SKIP_NATIVE=1, skipping llama.cpp and the addon');
  } else {
    step('llama.cpp', [join(ROOT, 'scripts', 'setup-llama.mjs')]);
    step('native addon', [join(ROOT, 'scripts', 'build-native.mjs')]);
  }
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (existsSync(join(ROOT, 'src')) && existsSync(tsc)) {
    step('TypeScript', [tsc, '-p', join(ROOT, 'tsconfig.json')]);
  }
} catch {
  // The failing step already printed what went wrong and what to do.
  process.exit(1);
}
