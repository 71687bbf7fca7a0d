#!/usr/bin/env node
// Fetches the pinned llama.cpp into native/vendor/llama.cpp (git-ignored, never committed).
//
// Source of truth: the npm tarball of node-llama-cpp@3.22.1 carries llama.cpp as a git bundle
// (package/llama/gitRelease.bundle). We `npm pack` that exact version, check the tarball's sha256,
// clone the bundle, check out the pinned commit and apply our titled patches (native/patches/*.patch).
// When the folder is already there at the pinned commit with the same patches, nothing is fetched.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const PIN = {
  npmPackage: 'node-llama-cpp@3.22.1',
  tarballSha256: 'a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f',
  bundlePath: 'package/llama/gitRelease.bundle',
  commit: 'de3ff815ea7d559ee917f063901b8986f038abc6',
};
const VENDOR = join(ROOT, 'native', 'vendor', 'llama.cpp');
const PATCH_DIR = join(ROOT, 'native', 'patches');
const STAMP = join(VENDOR, '.visplay-stamp');

function fail(message, fixes) {
  process.stderr.write(`visplay-native setup: ${message}\n`);
  if (fixes?.length) process.stderr.write(`What to do:\n${fixes.map((f) => `  - ${f}`).join('\n')}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', ...opts });
}

function patches() {
  if (!existsSync(PATCH_DIR)) return [];
  return readdirSync(PATCH_DIR).filter((f) => f.endsWith('.patch')).sort();
}

/** The stamp names the commit and the content of every patch, so a changed patch re-vendors. */
function expectedStamp() {
  const h = createHash('sha256');
  h.update(PIN.commit);
  for (const p of patches()) h.update(p).update(readFileSync(join(PATCH_DIR, p)));
  return `${PIN.commit} ${h.digest('hex')}\n`;
}

export function vendorIsReady() {
  return existsSync(STAMP) && readFileSync(STAMP, 'utf8') === expectedStamp();
}

function main() {
  if (vendorIsReady()) {
    console.log(`visplay-native setup: llama.cpp ${PIN.commit.slice(0, 7)} already in native/vendor/llama.cpp`);
    return;
  }
  try { run('git', ['--version']); } catch {
    fail('git is not installed; it is needed to clone the llama.cpp bundle.', ['install git (e.g. `apt-get install git`) and run `npm ci` again']);
  }
  const work = mkdtempSync(join(tmpdir(), 'visplay-llama-'));
  try {
    console.log(`visplay-native setup: fetching ${PIN.npmPackage} from the npm registry (llama.cpp bundle)`);
    let tarball;
    try {
      tarball = run('npm', ['pack', PIN.npmPackage, '--silent', '--pack-destination', work]).trim().split('\n').pop();
    } catch (e) {
      fail(`\`npm pack ${PIN.npmPackage}\` failed: ${String(e.stderr || e.message).trim().split('\n').slice(-3).join(' ')}`,
        ['check that the npm registry is reachable (`npm ping`)', 'or place llama.cpp at commit ' + PIN.commit + ' in native/vendor/llama.cpp yourself']);
    }
    const tarPath = join(work, tarball);
    const sha = createHash('sha256').update(readFileSync(tarPath)).digest('hex');
    if (sha !== PIN.tarballSha256) {
      fail(`${tarball} has sha256 ${sha}, expected ${PIN.tarballSha256}; refusing to build from an unverified source.`,
        ['clear the npm cache (`npm cache clean --force`) and run `npm ci` again', 'if it persists, the registry serves a different tarball: report it']);
    }
    run('tar', ['-xzf', tarPath, '-C', work, PIN.bundlePath]);
    rmSync(VENDOR, { recursive: true, force: true });
    mkdirSync(dirname(VENDOR), { recursive: true });
    console.log('visplay-native setup: cloning llama.cpp from the bundle');
    run('git', ['clone', '--quiet', '--no-checkout', join(work, PIN.bundlePath), VENDOR]);
    run('git', ['-c', 'advice.detachedHead=false', 'checkout', '--quiet', PIN.commit], { cwd: VENDOR });
    for (const p of patches()) {
      console.log(`visplay-native setup: applying patch ${p}`);
      try {
        run('git', ['apply', '--whitespace=nowarn', join(PATCH_DIR, p)], { cwd: VENDOR });
      } catch (e) {
        fail(`patch ${p} does not apply to llama.cpp ${PIN.commit.slice(0, 7)}: ${String(e.stderr).trim()}`,
          ['delete native/vendor/llama.cpp and run `npm ci` again', 'if it persists, the patch needs updating']);
      }
    }
    writeFileSync(STAMP, expectedStamp());
    console.log(`visplay-native setup: llama.cpp ${PIN.commit.slice(0, 7)} ready in native/vendor/llama.cpp`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
