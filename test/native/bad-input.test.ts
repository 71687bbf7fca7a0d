// Bad input through the library API: every mistake a user can make ends in a VisplayError with a
// stable code and a message that names the problem, and never takes the process (or the loaded
// model) down with it. Each test ends by checking that the shared model still answers as before.
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QWEN25VL_CHAT_TEMPLATE } from '../../src/chat.js';
import { VisplayError } from '../../src/errors.js';
import { Model } from '../../src/model.js';
import { loadBinding, type NativeRequest } from '../../src/native.js';
import type { RolloutEngine, RolloutRequest } from '../../src/rollout.js';
import { TINY_MODEL_CONFIG, vocabularyPath, type TinyModelFiles } from '../../src/tiny-model.js';
import { loadTiny, patternPng, rejectsWith, scratchDir, tinyFiles } from './helpers.js';


const HELLO: RolloutRequest = { messages: [{ role: 'user', content: 'Hello.' }], maxTokens: 3, temperature: 0 };

describe('bad input', () => {
  let files: TinyModelFiles;
  let model: Model;
  let engine: RolloutEngine;
  let dir: string;
  let image: Buffer;
  /** The shared engine's greedy answer to HELLO, taken before any bad input. */
  let baseline: number[];

  /** The shared model still loads nothing new and answers HELLO exactly as before. */
  async function assertAlive(): Promise<void> {
    const { samples } = await engine.generate([HELLO]);
    assert.deepEqual(samples[0]![0]!.tokens, baseline, 'the model answers as it did before the bad input');
  }

  before(async () => {
    files = await tinyFiles();
    model = await loadTiny();
    engine = await model.createRollout({ contextSize: 1024, parallel: 2 });
    dir = scratchDir();
    image = await patternPng(32, 32, 3);
    baseline = (await engine.generate([HELLO])).samples[0]![0]!.tokens;
    assert.ok(baseline.length > 0);
  });
  after(() => model?.dispose());

  describe('model files', () => {
    it('a missing model path: ERR_FILE_NOT_FOUND naming the path and the option', async () => {
      const missing = join(dir, 'no-such-model.gguf');
      await rejectsWith(() => Model.load({ model: missing, mmproj: files.mmprojPath }), 'ERR_FILE_NOT_FOUND',
        `model file ${missing} (--model) does not exist`);
      await assertAlive();
    });

    it('a missing mmproj path: ERR_FILE_NOT_FOUND naming the path and the option', async () => {
      const missing = join(dir, 'no-such-mmproj.gguf');
      await rejectsWith(() => Model.load({ model: files.modelPath, mmproj: missing }), 'ERR_FILE_NOT_FOUND',
        `mmproj file ${missing} (--mmproj) does not exist`);
      await assertAlive();
    });

    it('a file that is not GGUF: ERR_NOT_GGUF naming the file', async () => {
      const text = join(dir, 'notes.txt');
      writeFileSync(text, 'these are my notes, not a model\n');
      await rejectsWith(() => Model.load({ model: text, mmproj: files.mmprojPath }), 'ERR_NOT_GGUF',
        `model file ${text} (--model) is not a GGUF file`);
      await rejectsWith(() => Model.load({ model: files.modelPath, mmproj: text }), 'ERR_NOT_GGUF',
        `mmproj file ${text} (--mmproj) is not a GGUF file`);
      await assertAlive();
    });

    it('a truncated GGUF (the first half of the language model): ERR_GGUF_TRUNCATED', async () => {
      const half = join(dir, 'half.gguf');
      const size = statSync(files.modelPath).size;
      const bytes = Buffer.alloc(Math.floor(size / 2));
      const fd = openSync(files.modelPath, 'r');
      try {
        assert.equal(readSync(fd, bytes, 0, bytes.length, 0), bytes.length);
      } finally {
        closeSync(fd);
      }
      writeFileSync(half, bytes);
      await rejectsWith(() => Model.load({ model: half, mmproj: files.mmprojPath }), 'ERR_GGUF_TRUNCATED',
        `model file ${half} (--model) is truncated`, `the file has only ${bytes.length} bytes`);
      await assertAlive();
    });

    it('a text-only GGUF given as the mmproj: ERR_NOT_VLM', async () => {
      await rejectsWith(() => Model.load({ model: files.modelPath, mmproj: files.modelPath }), 'ERR_NOT_VLM',
        `mmproj file ${files.modelPath} (--mmproj) is a language model (qwen2vl), not a vision projector`);
      await assertAlive();
    });

    it('an mmproj made for a model of another width: ERR_MMPROJ_MISMATCH naming both sizes', async () => {
      const other = join(dir, 'narrow');
      mkdirSync(other);
      const narrow = { modelPath: join(other, 'model.gguf'), mmprojPath: join(other, 'mmproj.gguf') };
      await loadBinding().makeTinyModel({
        ...TINY_MODEL_CONFIG, embeddingSize: 64, seed: 1, vocabPath: vocabularyPath(), chatTemplate: QWEN25VL_CHAT_TEMPLATE, ...narrow,
      });
      await rejectsWith(() => Model.load({ model: files.modelPath, mmproj: narrow.mmprojPath }), 'ERR_MMPROJ_MISMATCH',
        `mmproj file ${narrow.mmprojPath} (--mmproj) produces 64-dimensional image embeddings`,
        `model file ${files.modelPath} (--model) takes 128-dimensional ones`);
      await assertAlive();
    });
  });

  describe('images', () => {
    it('an image that does not decode: ERR_IMAGE_DECODE naming the file', async () => {
      const junk = join(dir, 'junk.png');
      // Deterministic noise with no image signature at the front.
      const bytes = Buffer.alloc(512);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + 7) & 255;
      writeFileSync(junk, bytes);
      await rejectsWith(() => engine.generate([{ ...HELLO, images: [junk] }]), 'ERR_IMAGE_DECODE', `image ${junk} does not decode`);
      await rejectsWith(() => engine.generate([{ ...HELLO, images: [bytes] }]), 'ERR_IMAGE_DECODE', 'image buffer (512 bytes) does not decode');
      await assertAlive();
    });

    it('a zero-byte image file: ERR_IMAGE_EMPTY naming the file', async () => {
      const empty = join(dir, 'empty.jpg');
      writeFileSync(empty, '');
      await rejectsWith(() => engine.generate([{ ...HELLO, images: [empty] }]), 'ERR_IMAGE_EMPTY', `image ${empty} is empty (0 bytes)`);
      await rejectsWith(() => engine.generate([{ ...HELLO, images: [Buffer.alloc(0)] }]), 'ERR_IMAGE_EMPTY', 'image buffer is empty');
      await assertAlive();
    });

    it('a missing image file: ERR_FILE_NOT_FOUND naming the file', async () => {
      const missing = join(dir, 'no-such-image.png');
      await rejectsWith(() => engine.generate([{ ...HELLO, images: [missing] }]), 'ERR_FILE_NOT_FOUND', `image ${missing} does not exist`);
      await assertAlive();
    });
  });

  describe('prompts and options', () => {
    it('a prompt with its image longer than the context: ERR_PROMPT_TOO_LONG; the engine still works after', async () => {
      // llama.cpp pads a context to a multiple of 256 cells, so the 64 asked for hold 256: the image
      // must take more than that (448x448 is 256 image tokens; 224x224, at 64, would fit).
      const small = await model.createRollout({ contextSize: 64, parallel: 1 });
      try {
        assert.equal(small.options.contextSize, 256, 'the engine reports the cells the cache really holds');
        const big = await patternPng(448, 448, 4);
        const sentence = /^request 0: the prompt takes (\d+) tokens \(images included\) and up to 3 more are generated, but the context holds (\d+); raise the context size \(contextSize, --context-size\) or shorten the prompt$/;
        const err = await rejectsWith(() => small.generate([{ ...HELLO, images: [big] }]), 'ERR_PROMPT_TOO_LONG', sentence);
        const [, takes, holds] = sentence.exec(err.message)!.map(Number);
        assert.ok(takes! > 256 && holds === 256 && takes! + 3 > holds!, err.message);
        await rejectsWith(() => small.generate([{ ...HELLO, messages: [{ role: 'user', content: 'word '.repeat(300) }] }]),
          'ERR_PROMPT_TOO_LONG', sentence);
        await rejectsWith(() => small.score({ messages: [{ role: 'user', content: 'word '.repeat(300) }] }, [1]),
          'ERR_PROMPT_TOO_LONG', 'scored tokens exceed the context');
        const { samples } = await small.generate([HELLO]);
        assert.deepEqual(samples[0]![0]!.tokens, baseline, 'the same engine answers a short request afterwards');
      } finally {
        small.dispose();
      }
      await assertAlive();
    });

    it('n below 1 or not an integer: ERR_INVALID_ARG in the sharp-style sentence', async () => {
      const cases: Array<[unknown, string]> = [[0, '0 of type number'], [1.5, '1.5 of type number'], ['3', '3 of type string'], [-2, '-2 of type number']];
      for (const [n, received] of cases) {
        const err = await rejectsWith(() => engine.generate([{ ...HELLO, n: n as number }]), 'ERR_INVALID_ARG');
        assert.equal(err.message, `Expected integer between 1 and 4096 for requests[0].n but received ${received}`);
      }
      await assertAlive();
    });

    it('a negative temperature: ERR_INVALID_ARG', async () => {
      const err = await rejectsWith(() => engine.generate([HELLO, { ...HELLO, temperature: -0.5 }]), 'ERR_INVALID_ARG');
      assert.equal(err.message, 'Expected number between 0 and 100 for requests[1].temperature but received -0.5 of type number');
      await assertAlive();
    });

    it('image markers in a raw prompt that do not match the images: ERR_INVALID_ARG', async () => {
      const marker = model.info.projector.marker;
      const prompt = (markers: number) => `<|im_start|>user\n${marker.repeat(markers)}Hi<|im_end|>\n<|im_start|>assistant\n`;
      await rejectsWith(() => engine.generate([{ prompt: prompt(0), images: [image], maxTokens: 2 }]), 'ERR_INVALID_ARG',
        'requests[0]: the prompt has 0 image markers but 1 images were given');
      await rejectsWith(() => engine.generate([{ prompt: prompt(2), images: [image], maxTokens: 2 }]), 'ERR_INVALID_ARG',
        'requests[0]: the prompt has 2 image markers but 1 images were given');
      await rejectsWith(() => engine.generate([{ prompt: prompt(1), maxTokens: 2 }]), 'ERR_INVALID_ARG',
        'requests[0]: the prompt has 1 image markers but 0 images were given');
      await assertAlive();
    });

    it('both messages and a prompt: ERR_INVALID_ARG', async () => {
      await rejectsWith(() => engine.generate([{ ...HELLO, prompt: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n' }]),
        'ERR_INVALID_ARG', 'requests[0]: give messages or prompt, not both');
      await assertAlive();
    });

    it('token ids outside the vocabulary (or not integers) in score: ERR_INVALID_ARG, not a crash or a silent wrap', async () => {
      const last = model.info.vocabSize - 1;
      for (const bad of [10_000_000, -1, model.info.vocabSize, 1.5, 2 ** 32 + 5]) {
        const err = await rejectsWith(() => engine.score({ messages: HELLO.messages }, [baseline[0]!, bad]), 'ERR_INVALID_ARG');
        assert.equal(err.message, `Expected integer between 0 and ${last} for tokens[1] but received ${bad} of type number`);
      }
      const good = await engine.score({ messages: HELLO.messages }, [baseline[0]!, last]);
      assert.equal(good.length, 2);
      assert.ok(good.every((lp) => Number.isFinite(lp) && lp <= 0));
      await assertAlive();
    });
  });

  describe('lifecycle', () => {
    it('a disposed model: ERR_DISPOSED from every use; dispose is idempotent', async () => {
      const doomed = await loadTiny();
      const child = await doomed.createRollout({ contextSize: 256, parallel: 1 });
      doomed.dispose();
      assert.equal(doomed.disposed, true);
      assert.equal(child.disposed, true, 'its engines are disposed with it');
      assert.doesNotThrow(() => doomed.dispose());
      assert.doesNotThrow(() => child.dispose());
      await rejectsWith(() => doomed.createRollout(), 'ERR_DISPOSED', 'the model is disposed');
      await rejectsWith(async () => doomed.tokenize('hi'), 'ERR_DISPOSED', 'the model is disposed');
      await rejectsWith(async () => doomed.renderChat(HELLO.messages!), 'ERR_DISPOSED', 'the model is disposed');
      await rejectsWith(() => child.generate([HELLO]), 'ERR_DISPOSED', 'disposed');
      await rejectsWith(() => child.score({ messages: HELLO.messages }, [1]), 'ERR_DISPOSED', 'disposed');
      await assertAlive();
    });

    it('a disposed engine: ERR_DISPOSED; the model and its other engines carry on', async () => {
      const doomed = await model.createRollout({ contextSize: 256, parallel: 1 });
      doomed.dispose();
      doomed.dispose();
      assert.equal(doomed.disposed, true);
      assert.equal(model.disposed, false);
      await rejectsWith(() => doomed.generate([HELLO]), 'ERR_DISPOSED', 'the rollout engine is disposed');
      await rejectsWith(() => doomed.score({ messages: HELLO.messages }, [1]), 'ERR_DISPOSED', 'the rollout engine is disposed');
      const fresh = await model.createRollout({ contextSize: 256, parallel: 1 });
      try {
        assert.deepEqual((await fresh.generate([HELLO])).samples[0]![0]!.tokens, baseline);
      } finally {
        fresh.dispose();
      }
      await assertAlive();
    });

    it('dispose while a generate runs natively: the call settles cleanly, later calls get ERR_DISPOSED', async () => {
      const doomed = await model.createRollout({ contextSize: 256, parallel: 1 });
      let progressCalls = 0;
      // Disposed from the progress callback, i.e. while the native worker holds the context.
      const inFlight = doomed.generate([{ ...HELLO, n: 3, maxTokens: 6, temperature: 1, seed: 3 }], {
        onProgress: () => { progressCalls++; doomed.dispose(); },
      });
      const outcome: unknown = await inFlight.then((r) => r, (e: unknown) => e);
      assert.ok(progressCalls >= 1, 'the native call was running when the engine was disposed');
      assert.equal(doomed.disposed, true);
      if (outcome instanceof Error) {
        assert.ok(outcome instanceof VisplayError && outcome.code === 'ERR_DISPOSED', String(outcome));
      } else {
        const { samples } = outcome as Awaited<typeof inFlight>;
        assert.equal(samples[0]!.length, 3, 'work in flight finishes on the memory it holds');
      }
      await rejectsWith(() => doomed.generate([HELLO]), 'ERR_DISPOSED', 'the rollout engine is disposed');
      await assertAlive();
    });

    it('two generate calls at once on one engine are queued and both give their own results', async () => {
      const a: RolloutRequest = { messages: [{ role: 'user', content: 'First.' }], images: [image], n: 2, maxTokens: 5, seed: 21 };
      const b: RolloutRequest = { messages: [{ role: 'user', content: 'Second.' }], n: 2, maxTokens: 5, seed: 22 };
      const [ra, rb] = await Promise.all([engine.generate([a]), engine.generate([b])]);
      const sa = await engine.generate([a]);
      const sb = await engine.generate([b]);
      assert.deepEqual(ra.samples, sa.samples, 'the first call equals the same call run alone');
      assert.deepEqual(rb.samples, sb.samples, 'the second call equals the same call run alone');
      assert.notDeepEqual(ra.samples, rb.samples);
      assert.equal(ra.stats.imageEncodes, 1);
      assert.equal(rb.stats.imageEncodes, 0);
      await assertAlive();
    });

    it('a failing call does not stall the queue behind it', async () => {
      const [bad, good] = await Promise.allSettled([engine.generate([{ ...HELLO, n: 0 }]), engine.generate([HELLO])]);
      assert.equal(bad.status, 'rejected');
      assert.equal((bad as PromiseRejectedResult).reason.code, 'ERR_INVALID_ARG');
      assert.equal(good.status, 'fulfilled');
      assert.deepEqual((good as PromiseFulfilledResult<Awaited<ReturnType<RolloutEngine['generate']>>>).value.samples[0]![0]!.tokens, baseline);
    });

    it('the binding itself refuses a second concurrent generate on one context with [ERR_BUSY]', async () => {
      const binding = loadBinding();
      const native = await binding.loadModel({
        modelPath: files.modelPath, mmprojPath: files.mmprojPath, gpuLayers: 0, threads: 2, useGpuForVision: false,
        imageMinTokens: 0, imageMaxTokens: 0, warmup: false,
      });
      try {
        const ctx = await native.createContext({ contextSize: 256, parallel: 1, batchSize: 64, threads: 2, flashAttention: 0 });
        const request: NativeRequest = {
          prompt: model.renderChat(HELLO.messages!), images: [], n: 1, maxTokens: 8, temperature: 0, topP: 1, topK: 0, seed: 1, stopTokens: [],
        };
        const first = ctx.generate({ images: [], requests: [request] });
        // The binding throws synchronously; the async wrapper turns either form into a rejection.
        await assert.rejects(async () => ctx.generate({ images: [], requests: [request] }),
          (e: Error) => e.message.startsWith('[ERR_BUSY]') && e.message.includes('already running'));
        await assert.rejects(async () => ctx.score({ images: [], prompt: request.prompt, imageIndices: [], tokens: Int32Array.from([1]) }),
          (e: Error) => e.message.startsWith('[ERR_BUSY]'));
        const result = await first;
        assert.deepEqual(Array.from(result.samples[0]![0]!.tokens.slice(0, 3)), baseline, 'the first call was not disturbed');
        const again = await ctx.generate({ images: [], requests: [request] });
        assert.ok(again.samples[0]![0]!.tokens.length > 0, 'the context is free again once the call finished');
        ctx.dispose();
      } finally {
        native.dispose();
      }
      await assertAlive();
    });
  });
});
