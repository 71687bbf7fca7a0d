import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { formatJson, formatText, parseGenerateArgs, type GenerateArgs } from '../../src/cli/generate.js';
import { formatError } from '../../src/cli/report.js';
import { VisplayError } from '../../src/errors.js';
import type { RolloutResult } from '../../src/rollout.js';
import { languageModel, projector, tempDir } from './helpers/gguf-writer.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const tmp = tempDir();
after(() => tmp.cleanup());

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source (through tsx), as a user would run the built one. */
function cli(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], { cwd: ROOT, env: { ...process.env, VISPLAY_DEBUG: '' } },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }));
  });
}

/** Asserts a failed run that printed exactly `line` (and nothing else) on stderr. */
function failedWith(run: Run, line: string | RegExp): void {
  assert.equal(run.code, 1, run.stderr);
  assert.equal(run.stdout, '');
  const lines = run.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${run.stderr}`);
  if (typeof line === 'string') assert.equal(lines[0], line);
  else assert.match(lines[0]!, line);
}

describe('visplay-native (process)', () => {
  const model = tmp.file('model.gguf', languageModel({ embedding: 64 }));
  const mmproj = tmp.file('mmproj.gguf', projector({ projectionDim: 64 }));

  it('asks for a command when given none', async () => {
    failedWith(await cli(), 'visplay-native: name a command: demo, evolve, eval, report, bench, world, pretrain, generate, info or make-tiny-model (see --help)');
  });

  it('rejects unknown options in one line', async () => {
    failedWith(await cli('info', '--model', model, '--colour'), 'visplay-native: Unknown argument: colour (see --help)');
  });

  it('validates option values before anything loads', async () => {
    failedWith(await cli('generate', '--prompt', 'hi', '-n', '0'),
      'visplay-native: Expected integer between 1 and 4096 for n but received 0 of type number');
    failedWith(await cli('generate', '--prompt', 'hi', '--temperature', '-1'),
      'visplay-native: Expected number between 0 and 100 for temperature but received -1 of type number');
  });

  it('needs the mmproj with a model, and reports missing images before loading', async () => {
    failedWith(await cli('generate', '--prompt', 'hi', '--model', model),
      `visplay-native: model file ${model} (--model) has no vision encoder; visplay-native needs a vision-language model: pass its mmproj file with --mmproj`);
    failedWith(await cli('generate', '--prompt', 'hi', '--image', `${tmp.dir}/none.png`),
      `visplay-native: image ${tmp.dir}/none.png does not exist`);
  });

  it('info reports a missing file and a mismatched pair in one line', async () => {
    failedWith(await cli('info', '--model', `${tmp.dir}/none.gguf`), `visplay-native: model file ${tmp.dir}/none.gguf (--model) does not exist`);
    const wide = tmp.file('wide-mmproj.gguf', projector({ projectionDim: 128 }));
    failedWith(await cli('info', '--model', model, '--mmproj', wide), /^visplay-native: mmproj file .* produces 128-dimensional image embeddings/);
  });

  it('info --json prints one document describing both files', async () => {
    const run = await cli('info', '--model', model, '--mmproj', mmproj, '--json');
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.model.architecture, 'qwen2vl');
    assert.equal(report.model.embeddingSize, 64);
    assert.equal(report.model.vocabSize, 3);
    assert.equal(report.model.chatFamily, 'qwen2.5-vl');
    assert.equal(report.model.tensorCount, 3);
    assert.equal(report.model.parameterCount, 64 * 3 + 64 * 64 + 64);
    assert.equal(report.mmproj.projectorType, 'qwen2.5vl');
    assert.equal(report.mmproj.projectionDim, 64);
  });

  it('info prints a readable summary', async () => {
    const run = await cli('info', '--model', model, '--mmproj', mmproj);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^model {3}.*model\.gguf$/m);
    assert.match(run.stdout, /^ {2}embedding size {2}64$/m);
    assert.match(run.stdout, /the two files form a vision-language model/);
  });
});

describe('generate option parsing', () => {
  const base: GenerateArgs = { prompt: 'p', n: 2, 'max-tokens': 16, temperature: 0, json: false };

  it('maps flags to library options, with the tiny model by default', () => {
    const s = parseGenerateArgs({ ...base, image: ['a.png', 'b.png'], 'top-k': 40, seed: 7 });
    assert.deepEqual(s, {
      files: null, images: ['a.png', 'b.png'], prompt: 'p', system: undefined, n: 2, maxTokens: 16, temperature: 0,
      topP: undefined, topK: 40, seed: 7, parallel: undefined, contextSize: undefined, threads: undefined, gpuLayers: undefined,
    });
    assert.deepEqual(parseGenerateArgs({ ...base, model: 'm.gguf', mmproj: 'p.gguf' }).files, { model: 'm.gguf', mmproj: 'p.gguf' });
  });

  it('rejects an mmproj without a model and bad values by flag name', () => {
    assert.throws(() => parseGenerateArgs({ ...base, mmproj: 'p.gguf' }), { code: 'ERR_INVALID_ARG', message: '--mmproj needs the --model it belongs to' });
    assert.throws(() => parseGenerateArgs({ ...base, 'max-tokens': 0 }), { message: 'Expected integer between 1 and 1048576 for max-tokens but received 0 of type number' });
    assert.throws(() => parseGenerateArgs({ ...base, 'top-p': 2 }), { message: 'Expected number between 0 and 1 for top-p but received 2 of type number' });
    assert.throws(() => parseGenerateArgs({ ...base, image: [''] }), { message: 'Expected non-empty string for image[0] but received  of type string' });
  });
});

describe('generate output', () => {
  const result: RolloutResult = {
    samples: [[
      { text: 'A cat.', tokens: [32, 8251, 13], logprobs: [-0.5, -1.25, -0.125], finish: 'stop' },
      { text: 'A dog', tokens: [32, 5679], logprobs: [-0.5, -2], finish: 'length' },
    ]],
    stats: {
      imageEncodes: 1, promptTokens: 40, generatedTokens: 5, decodeCalls: 4, encodeMs: 1, prefillMs: 1, generateMs: 1, decodeMs: 0.5, sampleMs: 0.4,
      maxLiveSequences: 2, wallMs: 10, distinctImages: 1,
    },
  };

  it('--json is exactly one document with the samples in order', () => {
    assert.deepEqual(JSON.parse(formatJson(result)), {
      samples: [
        { text: 'A cat.', tokens: [32, 8251, 13], logprobs: [-0.5, -1.25, -0.125], finish: 'stop' },
        { text: 'A dog', tokens: [32, 5679], logprobs: [-0.5, -2], finish: 'length' },
      ],
    });
    assert.equal(formatJson(result).trimEnd().split('\n').length, 1);
  });

  it('text output labels each sample', () => {
    assert.equal(formatText(result),
      '--- sample 1 of 2 (3 tokens, stopped) ---\nA cat.\n\n--- sample 2 of 2 (2 tokens, hit --max-tokens) ---\nA dog\n');
  });
});

describe('formatError', () => {
  it('prints a VisplayError as its message alone', () => {
    assert.equal(formatError(new VisplayError('ERR_NOT_GGUF', 'x is not a GGUF file'), true), 'visplay-native: x is not a GGUF file');
  });

  it('marks other errors as unexpected and shows the stack only when debugging', () => {
    const bug = new TypeError('undefined is not a function');
    assert.equal(formatError(bug, false), 'visplay-native: unexpected error: undefined is not a function (set VISPLAY_DEBUG=1 to see where)');
    const debug = formatError(bug, true).split('\n');
    assert.equal(debug[0], 'visplay-native: unexpected error: undefined is not a function');
    assert.match(debug[1]!, /^TypeError: undefined is not a function/);
    assert.equal(formatError('thrown string', false), 'visplay-native: unexpected error: thrown string');
  });
});
