// The command line end to end, with the real addon and the embedded tiny model: each command's
// output, and bad input reported as one line on stderr with exit status 1.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import type { TinyModelFiles } from '../../src/tiny-model.js';
import { failedWith, runCli, succeeded, type CliRun } from './evolve-helpers.js';
import { patternPng, scratchDir, tinyFiles } from './helpers.js';

/** Runs the CLI from source through tsx, as a user runs the built one; killed after 120 s. */
const cli = (...args: string[]) => runCli(args);

interface JsonSample {
  text: string;
  tokens: number[];
  logprobs: number[];
  finish: string;
}

/** stdout holds exactly one JSON document of `n` samples of at most `maxTokens` tokens each. */
function samplesOf(run: CliRun, n: number, maxTokens: number): JsonSample[] {
  succeeded(run);
  assert.equal(run.stderr, '', 'with --json nothing else is printed (no progress bar off a terminal, no stats)');
  assert.ok(run.stdout.endsWith('}\n') && run.stdout.indexOf('\n') === run.stdout.length - 1, 'one JSON document on one line');
  const doc = JSON.parse(run.stdout) as { samples: JsonSample[] };
  assert.deepEqual(Object.keys(doc), ['samples']);
  assert.equal(doc.samples.length, n);
  for (const s of doc.samples) {
    assert.deepEqual(Object.keys(s).sort(), ['finish', 'logprobs', 'text', 'tokens']);
    assert.equal(typeof s.text, 'string');
    assert.ok(s.tokens.length >= 1 && s.tokens.length <= maxTokens, `${s.tokens.length} tokens`);
    assert.equal(s.logprobs.length, s.tokens.length);
    assert.ok(s.tokens.every((t) => Number.isInteger(t) && t >= 0));
    assert.ok(s.logprobs.every((lp) => Number.isFinite(lp) && lp <= 0));
    assert.ok(s.finish === 'stop' || s.finish === 'length');
    if (s.finish === 'length') assert.equal(s.tokens.length, maxTokens);
  }
  return doc.samples;
}

describe('visplay-native CLI (tiny model)', () => {
  let files: TinyModelFiles;
  let dir: string;
  let image: string;
  before(async () => {
    files = await tinyFiles();
    dir = scratchDir();
    image = join(dir, 'picture.png');
    writeFileSync(image, await patternPng(48, 40, 5));
  });

  it('make-tiny-model --json prints the two paths', async () => {
    const run = await cli('make-tiny-model', '--json');
    succeeded(run);
    const out = JSON.parse(run.stdout) as TinyModelFiles;
    assert.equal(out.modelPath, files.modelPath);
    assert.equal(out.mmprojPath, files.mmprojPath);
    assert.equal(out.seed, 1);
    assert.equal(out.created, false, 'found in the cache');
    assert.ok(existsSync(out.modelPath) && existsSync(out.mmprojPath));
  });

  it('info --json describes the pair as qwen2vl with a matching projector', async () => {
    const run = await cli('info', '--model', files.modelPath, '--mmproj', files.mmprojPath, '--json');
    succeeded(run);
    const report = JSON.parse(run.stdout);
    assert.equal(report.model.architecture, 'qwen2vl');
    assert.equal(report.model.embeddingSize, 128);
    assert.equal(report.model.chatFamily, 'qwen2.5-vl');
    assert.equal(report.mmproj.projectionDim, 128);
    assert.equal(report.mmproj.patchSize, 14);
  });

  it('generate --json prints one document of n samples; the same seed gives the same samples; no --model means the tiny model', async () => {
    const args = ['generate', '--image', image, '--prompt', 'What is in the picture?', '-n', '3', '--max-tokens', '8', '--json', '--seed', '5', '--threads', '2'];
    const explicit = ['--model', files.modelPath, '--mmproj', files.mmprojPath];
    const [first, second, embedded] = [await cli(...args, ...explicit), await cli(...args, ...explicit), await cli(...args)];
    const a = samplesOf(first, 3, 8);
    assert.deepEqual(samplesOf(second, 3, 8), a, 'same seed, same samples');
    assert.deepEqual(samplesOf(embedded, 3, 8), a, 'without --model the embedded tiny model (seed 1) answers');
    assert.equal(new Set(a.map((s) => s.tokens.join(','))).size, 3, 'three different samples at temperature 1');
  });

  describe('bad input: exit status 1 and one line on stderr', () => {
    it('a missing --model file', async () => {
      const missing = join(dir, 'no-such-model.gguf');
      failedWith(await cli('generate', '--model', missing, '--mmproj', files.mmprojPath, '--prompt', 'hi'),
        `model file ${missing} (--model) does not exist`);
    });

    it('an image that does not decode', async () => {
      const junk = join(dir, 'junk.png');
      const bytes = Buffer.alloc(512);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + 7) & 255;
      writeFileSync(junk, bytes);
      failedWith(await cli('generate', '--image', junk, '--prompt', 'hi'), `image ${junk} does not decode`);
    });

    it('-n 0 and -n 1.5', async () => {
      failedWith(await cli('generate', '--image', image, '--prompt', 'hi', '-n', '0'),
        'Expected integer between 1 and 4096 for n but received 0 of type number');
      failedWith(await cli('generate', '--image', image, '--prompt', 'hi', '-n', '1.5'),
        'Expected integer between 1 and 4096 for n but received 1.5 of type number');
    });

    it('a prompt too long for --context-size 64', async () => {
      failedWith(await cli('generate', '--prompt', 'word '.repeat(300), '--context-size', '64', '--max-tokens', '4', '--threads', '2'),
        /^visplay-native: request 0: the prompt takes \d+ tokens \(images included\) and up to 4 more are generated, but the context holds \d+/);
    });
  });
});
