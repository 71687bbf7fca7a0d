// Bad input for people who leave it running overnight: damaged and adversarial GGUF headers, bad
// manifest and benchmark lines, folders that cannot be written, a disk that fills up, a --resume
// folder that is not what it claims, options out of range, a judge that never answers. Each case
// checks the error code and message, and that the process lives on: library cases end with the
// shared model answering exactly as before, CLI cases with exit status 1, no signal and one
// `visplay-native:` line on stderr.
//
// Distinct bad-input cases across the test suite (each a test), 116 in all:
//   test/native/bad-input.test.ts            21  model files, images, prompts and options, lifecycle
//   test/native/training-bad-input.test.ts   10  the trainer: options, adapters, samples, non-finite loss
//   test/native/cli.test.ts                   4  generate: missing model, undecodable image, -n, long prompt
//   test/unit/gguf.test.ts                   22  the GGUF reader (17) and model/projector pairing (5)
//   test/unit/cli.test.ts                     6  usage, option values, missing mmproj and files, info
//   test/unit/visplay-eval.test.ts            8  benchmark lines, the judge (timeout, HTTP error, refused), options
//   test/unit/images.test.ts                  3  missing, empty, garbage and truncated images, bad inputs
//   this file                                42  below: GGUF headers 19 (10 of them aborted the process
//                                                before src/model-pair.ts checked them), evolve 7, --resume 6, eval 3,
//                                                full or read-only disks 5, policy folders 2
//
// Full-disk and read-only cases mount a small tmpfs when they can (root); otherwise the policy and
// run-store cases simulate the write error with a temporary file name that points at /dev/full,
// and the others skip, saying why.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync, closeSync, copyFileSync, cpSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readSync, rmSync,
  statfsSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { QWEN25VL_CHAT_TEMPLATE } from '../../src/chat.js';
import { VisplayError } from '../../src/errors.js';
import { Model } from '../../src/model.js';
import { loadBinding } from '../../src/native.js';
import type { Policy } from '../../src/policy.js';
import type { RolloutEngine, RolloutRequest } from '../../src/rollout.js';
import { TINY_MODEL_CONFIG, vocabularyPath, type TinyModelFiles } from '../../src/tiny-model.js';
import { evaluate, parseBench } from '../../src/visplay/eval.js';
import { evolve } from '../../src/visplay/loop.js';
import { JsonlLog, writeJsonAtomic } from '../../src/visplay/run-store.js';
import { cliFlags, failedAfterStarting, failedWith, filesUnder, imagesDir, jsonl, runCli, succeeded, TINY } from './evolve-helpers.js';
import { loadTiny, patternPng, rejectsWith, scratchDir, tinyFiles } from './helpers.js';


// ---- where things sit in a GGUF header ------------------------------------------------------------

const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

interface HeaderMap {
  /** Byte offset of each key's value type (u32) and of its value. */
  keys: Map<string, { typeAt: number; valueAt: number }>;
  tensors: Array<{ name: string; dimsAt: number; typeAt: number; offsetAt: number; offset: bigint }>;
}

/** Walks a well-formed header (ours) and records where each field is, to edit it in place. */
function mapHeader(bytes: Buffer): HeaderMap {
  let p = 8;
  const tensorCount = Number(bytes.readBigUInt64LE(p));
  const kvCount = Number(bytes.readBigUInt64LE(p + 8));
  p += 16;
  const string = () => {
    const n = Number(bytes.readBigUInt64LE(p));
    const s = bytes.toString('utf8', p + 8, p + 8 + n);
    p += 8 + n;
    return s;
  };
  const skip = (type: number): void => {
    if (type === 8) string();
    else if (type === 9) {
      const element = bytes.readUInt32LE(p);
      const n = Number(bytes.readBigUInt64LE(p + 4));
      p += 12;
      for (let i = 0; i < n; i++) skip(element);
    } else p += SCALAR_BYTES[type]!;
  };
  const keys: HeaderMap['keys'] = new Map();
  for (let i = 0; i < kvCount; i++) {
    const key = string();
    const typeAt = p;
    p += 4;
    keys.set(key, { typeAt, valueAt: p });
    skip(bytes.readUInt32LE(typeAt));
  }
  const tensors: HeaderMap['tensors'] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = string();
    const dims = bytes.readUInt32LE(p);
    const dimsAt = p + 4;
    p += 4 + 8 * dims;
    const typeAt = p;
    const offsetAt = p + 4;
    tensors.push({ name, dimsAt, typeAt, offsetAt, offset: bytes.readBigUInt64LE(offsetAt) });
    p += 12;
  }
  return { keys, tensors };
}

const GGUF_F32 = 6;
const GGUF_U8 = 0;

/** An edit of a copy of the tiny model's language model or projector. */
type Edit = (bytes: Buffer, map: HeaderMap) => Buffer;

const setU32 = (key: string, value: number): Edit => (b, m) => { b.writeUInt32LE(value, m.keys.get(key)!.valueAt); return b; };
const setType = (key: string, type: number): Edit => (b, m) => { b.writeUInt32LE(type, m.keys.get(key)!.typeAt); return b; };
/** Every item of an i32 array key. */
const setI32s = (key: string, value: number): Edit => (b, m) => {
  const at = m.keys.get(key)!.valueAt;
  const n = Number(b.readBigUInt64LE(at + 4));
  for (let i = 0; i < n; i++) b.writeInt32LE(value, at + 12 + 4 * i);
  return b;
};

describe('hardening: bad input that must not stop an overnight run badly', () => {
  let files: TinyModelFiles;
  let model: Model;
  let engine: RolloutEngine;
  let baseline: number[];
  let dir: string;
  let modelBytes: Buffer;
  let mmprojBytes: Buffer;
  let modelMap: HeaderMap;
  let mmprojMap: HeaderMap;
  const mounts: string[] = [];
  const HELLO: RolloutRequest = { messages: [{ role: 'user', content: 'Hello.' }], maxTokens: 3, temperature: 0 };

  /** The shared model answers exactly as before the bad input. */
  async function assertAlive(): Promise<void> {
    const { samples } = await engine.generate([HELLO]);
    assert.deepEqual(samples[0]![0]!.tokens, baseline, 'the model answers as it did before the bad input');
  }

  /** Writes edited copies (one of the two files edited) and returns the pair's paths. */
  function edited(which: 'model' | 'mmproj', edit: Edit): { model: string; mmproj: string } {
    if (which === 'model') {
      const path = join(dir, 'edited-model.gguf');
      writeFileSync(path, edit(Buffer.from(modelBytes), modelMap));
      return { model: path, mmproj: files.mmprojPath };
    }
    const path = join(dir, 'edited-mmproj.gguf');
    writeFileSync(path, edit(Buffer.from(mmprojBytes), mmprojMap));
    return { model: files.modelPath, mmproj: path };
  }

  /** A tmpfs of `size` (e.g. '256k') with extra mount options, or null where mounting is not allowed. */
  function tmpfs(size: string, extra = ''): string | null {
    const at = join(scratchDir(), 'tmpfs');
    mkdirSync(at);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}${extra ? `,${extra}` : ''}`, 'tmpfs', at], { stdio: 'ignore' });
    } catch {
      return null;
    }
    mounts.push(at);
    return at;
  }

  /** A folder nobody may write to: a read-only tmpfs for root (which ignores modes), else mode 0555. */
  function readOnlyDir(): string | null {
    if (process.getuid?.() === 0) return tmpfs('64k', 'ro');
    const d = join(scratchDir(), 'read-only');
    mkdirSync(d);
    chmodSync(d, 0o555);
    return d;
  }

  /** Fills `at` until `free` bytes (a multiple of the page size) are left. */
  function leaveFree(at: string, free: number): void {
    rmSync(join(at, 'filler'), { force: true });
    const s = statfsSync(at);
    writeFileSync(join(at, 'filler'), Buffer.alloc(Math.max(0, s.bavail * s.bsize - free)));
  }

  before(async () => {
    files = await tinyFiles();
    model = await loadTiny();
    engine = await model.createRollout({ contextSize: 1024, parallel: 2 });
    baseline = (await engine.generate([HELLO])).samples[0]![0]!.tokens;
    dir = scratchDir();
    modelBytes = readFileSync(files.modelPath);
    mmprojBytes = readFileSync(files.mmprojPath);
    modelMap = mapHeader(modelBytes);
    mmprojMap = mapHeader(mmprojBytes);
  });
  after(() => {
    model?.dispose();
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  });

  describe('damaged and adversarial GGUF headers (Model.load and info)', () => {
    it('a tensor count of 2^40 in the real model: ERR_GGUF_CORRUPT, nothing allocated for it', async () => {
      const pair = edited('model', (b) => { b.writeBigUInt64LE(2n ** 40n, 8); return b; });
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT',
        `model file ${pair.model} (--model) is corrupt: tensor count is 1099511627776, more than a GGUF header can hold (at byte 8)`);
      await assertAlive();
    });

    it('a key-value count of 2^62 (info): exit 1, one line', async () => {
      const pair = edited('model', (b) => { b.writeBigUInt64LE(2n ** 62n, 16); return b; });
      failedWith(await runCli(['info', '--model', pair.model, '--mmproj', pair.mmproj]),
        `model file ${pair.model} (--model) is corrupt: key-value count is 4611686018427387904, more than a GGUF header can hold (at byte 16)`);
    });

    it('a string length of 2^62 (general.name): ERR_GGUF_CORRUPT with its byte offset', async () => {
      const pair = edited('model', (b, m) => { b.writeBigUInt64LE(2n ** 62n, m.keys.get('general.name')!.valueAt); return b; });
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT',
        /is corrupt: the length of the value of key 'general.name' is 4611686018427387904 bytes, more than a GGUF header can hold \(at byte \d+\)/);
      await assertAlive();
    });

    it('a wrong value type: the block count stored as f32', async () => {
      const pair = edited('model', setType('qwen2vl.block_count', GGUF_F32));
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT', /is corrupt: qwen2vl\.block_count is 2\.8\d*e-45; llama\.cpp takes 1 to 512 blocks/);
      await assertAlive();
    });

    it('a wrong value type: the projector\'s has_vision_encoder stored as u8', async () => {
      const pair = edited('mmproj', setType('clip.has_vision_encoder', GGUF_U8));
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT',
        `mmproj file ${pair.mmproj} (--mmproj) is corrupt: clip.has_vision_encoder should be a boolean but is 1`);
      await assertAlive();
    });

    it('a tensor offset past the end of the file: ERR_GGUF_CORRUPT naming the tensor', async () => {
      const last = modelMap.tensors.at(-1)!;
      const pair = edited('model', (b) => { b.writeBigUInt64LE(BigInt(modelBytes.length), last.offsetAt); return b; });
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT',
        `is corrupt: tensor '${last.name}' has data offset ${modelBytes.length}, expected ${last.offset}`);
      await assertAlive();
    });

    it('a tensor offset beyond any file (2^62): ERR_GGUF_CORRUPT', async () => {
      const first = modelMap.tensors[0]!;
      const pair = edited('model', (b) => { b.writeBigUInt64LE(2n ** 62n, first.offsetAt); return b; });
      await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT', `is corrupt: tensor '${first.name}' claims data at bytes 4611686018427387904..`, 'beyond any file');
      await assertAlive();
    });

    it('the model one byte short (a download cut at the very end): ERR_GGUF_TRUNCATED naming the last tensor', async () => {
      const path = join(dir, 'short.gguf');
      writeFileSync(path, modelBytes.subarray(0, modelBytes.length - 1));
      await rejectsWith(() => Model.load({ model: path, mmproj: files.mmprojPath }), 'ERR_GGUF_TRUNCATED',
        `model file ${path} (--model) is truncated: tensor '${modelMap.tensors.at(-1)!.name}' ends at byte ${modelBytes.length} but the file has only ${modelBytes.length - 1} bytes`);
      await assertAlive();
    });

    it('the projector cut inside its header: ERR_GGUF_TRUNCATED', async () => {
      const path = join(dir, 'cut-mmproj.gguf');
      writeFileSync(path, mmprojBytes.subarray(0, 200));
      await rejectsWith(() => Model.load({ model: files.modelPath, mmproj: path }), 'ERR_GGUF_TRUNCATED',
        new RegExp(`mmproj file ${path} \\(--mmproj\\) is truncated: reading .* at byte \\d+ needs \\d+ bytes but the file ends at byte 200`));
      await assertAlive();
    });

    // Header values llama.cpp asserts on or divides by before it looks at the tensors: each of these
    // aborted the whole process (SIGABRT or SIGFPE, found by these edits) until src/model-pair.ts
    // checked them.
    const aborting: Array<[string, 'model' | 'mmproj', Edit, string | RegExp]> = [
      ['a block count of 0', 'model', setU32('qwen2vl.block_count', 0), 'qwen2vl.block_count is 0; llama.cpp takes 1 to 512 blocks'],
      ['a block count of 1000 (more than llama.cpp\'s 512 layers)', 'model', setU32('qwen2vl.block_count', 1000), 'qwen2vl.block_count is 1000; llama.cpp takes 1 to 512 blocks'],
      ['M-RoPE sections all 0', 'model', setI32s('qwen2vl.rope.dimension_sections', 0),
        'qwen2vl.rope.dimension_sections is [0, 0, 0, 0]; M-RoPE needs sections of zero or more, not all zero, adding up to at most the head width 32'],
      ['M-RoPE sections that overflow their sum (4 x 2^30)', 'model', setI32s('qwen2vl.rope.dimension_sections', 2 ** 30),
        /qwen2vl\.rope\.dimension_sections is \[1073741824, 1073741824, 1073741824, 1073741824\]; M-RoPE needs/],
      ['a vision block count of 0', 'mmproj', setU32('clip.vision.block_count', 0), 'clip.vision.block_count is 0; llama.cpp takes 1 to 512 blocks'],
      ['3 vision heads for a 64-wide encoder', 'mmproj', setU32('clip.vision.attention.head_count', 3),
        'clip.vision.attention.head_count is 3, which does not split the 64-wide embedding into heads of 4 or more values'],
      ['64 vision heads of one value each', 'mmproj', setU32('clip.vision.attention.head_count', 64),
        'clip.vision.attention.head_count is 64, which does not split the 64-wide embedding into heads of 4 or more values'],
      ['a vision width the patch embedding does not make', 'mmproj', setU32('clip.vision.embedding_length', 32),
        'clip.vision.embedding_length is 32, but the tensor v.patch_embd.weight makes 64-wide embeddings'],
      ['a patch size the patch embedding does not take', 'mmproj', setU32('clip.vision.patch_size', 13),
        'clip.vision.patch_size is 13, but the tensor v.patch_embd.weight takes 14x14 patches'],
      ['a window-attention pattern of 1 (no windowed block)', 'mmproj', setU32('clip.vision.n_wa_pattern', 1),
        'clip.vision.n_wa_pattern is 1 (no block attends within windows), which llama.cpp\'s Qwen2.5-VL encoder cannot run'],
    ];
    for (const [what, which, edit, message] of aborting) {
      it(`${what}: ERR_GGUF_CORRUPT before llama.cpp sees it`, async () => {
        const pair = edited(which, edit);
        const label = which === 'model' ? `model file ${pair.model} (--model)` : `mmproj file ${pair.mmproj} (--mmproj)`;
        await rejectsWith(() => Model.load(pair), 'ERR_GGUF_CORRUPT', `${label} is corrupt: `, message);
        // What llama.cpp does load and run: an image through the projector, a token through the model.
        await assertAlive();
        const { stats } = await engine.generate([{ ...HELLO, images: [await patternPng(56, 56, 1)] }]);
        assert.equal(stats.imageEncodes, 1);
      });
    }
  });

  describe('evolve: options, manifests, output folders', () => {
    let images: string;
    let out: string;
    before(async () => {
      images = await imagesDir();
      out = join(scratchDir(), 'run');
    });
    const evolveWith = (...extra: string[]) => runCli(['evolve', '--images', images, '--out', out, ...extra]);

    it('--band 0.9,0.1: the low end above the high end', async () => {
      failedWith(await evolveWith('--band', '0.9,0.1'), 'visplay-native: band: the low end 0.9 is above the high end 0.1');
      assert.equal(existsSync(out), false, 'nothing is written');
    });

    it('--group-size 1: GRPO needs two samples per group', async () => {
      failedWith(await evolveWith('--group-size', '1'), 'visplay-native: Expected integer between 2 and 1024 for groupSize but received 1 of type number');
    });

    it('--steps -1', async () => {
      failedWith(await evolveWith('--steps', '-1'), 'visplay-native: Expected integer between 0 and 1000000 for questionerSteps but received -1 of type number');
    });

    it('--uncertainty-reward that does not exist', async () => {
      failedWith(await evolveWith('--uncertainty-reward', 'entropy'),
        'visplay-native: Expected one of min, r-zero for uncertaintyReward but received entropy of type string');
    });

    it('--out under a read-only folder: ERR_OUTPUT naming the folder, after the images are checked', async (t) => {
      const ro = readOnlyDir();
      if (!ro) return t.skip('no read-only folder: root ignores file modes and tmpfs cannot be mounted here');
      const target = join(ro, 'run');
      // Node's recursive mkdir reports a read-only file system as ENOENT (it stats the folder it
      // could not make and returns that error), so the reason varies; the folder is named either way.
      failedAfterStarting(await runCli(['evolve', '--images', images, '--out', target, ...cliFlags(TINY)]),
        `visplay-native: cannot create the run folder ${target}: `, /read-only file system|permission denied|ENOENT/i);
    });

    it('a manifest whose every line is bad: exit 1 naming the manifest', async () => {
      const manifest = join(scratchDir(), 'bad.jsonl');
      writeFileSync(manifest, '{"image": 3}\nnot json\n{"picture": "a.png"}\n');
      failedAfterStarting(await runCli(['evolve', '--images', manifest, '--out', join(scratchDir(), 'run')]),
        `visplay-native: ${manifest}: no image files were found; VisPlay needs at least one usable image`);
    });

    it('a manifest with bad lines: they are skipped and listed in run.json with their line numbers, the run completes', { timeout: 300_000 }, async () => {
      const folder = scratchDir();
      const manifest = join(folder, 'images.jsonl');
      copyFileSync(join(images, 'shape-1.png'), join(folder, 'one.png'));
      writeFileSync(join(folder, 'broken.png'), 'not an image');
      writeFileSync(manifest, [
        JSON.stringify({ image: 'one.png' }),
        '{"image": "two.png"',                       // line 2: cut short
        JSON.stringify({ path: 'one.png' }),          // line 3: no "image"
        JSON.stringify({ image: 'missing.png' }),
        JSON.stringify({ image: 'broken.png' }),
        '',
        JSON.stringify({ image: join(images, 'shape-2.png') }),
      ].join('\n'));
      const run = join(scratchDir(), 'run');
      succeeded(await runCli(['evolve', '--images', manifest, '--out', run, '--json-log', ...cliFlags({
        ...TINY, questionerSteps: 0, reasonerSteps: 0, candidateImages: 1, candidatesPerImage: 1, imagesPerStep: 1, labelVotes: 1,
      })], { timeoutMs: 240_000 }));
      const manifestRecord = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')).images as { usable: number; skipped: Array<{ path: string; reason: string }> };
      assert.equal(manifestRecord.usable, 2);
      assert.deepEqual(manifestRecord.skipped.map((s) => s.path), [`${manifest} line 2`, `${manifest} line 3`, 'missing.png', 'broken.png']);
      assert.deepEqual(manifestRecord.skipped.slice(0, 2).map((s) => s.reason), ['not valid JSON', 'no "image" string field']);
      assert.match(manifestRecord.skipped[2]!.reason, /does not exist/);
      assert.match(manifestRecord.skipped[3]!.reason, /does not decode/);
    });
  });

  describe('evolve --resume of a folder that is not what it claims', () => {
    /** A run stopped after its first committed Questioner step (it holds a saved state). */
    let stoppedRun: string;
    let images: string;
    before(async () => {
      images = await imagesDir();
      stoppedRun = join(scratchDir(), 'stopped');
      const controller = new AbortController();
      const r = await evolve({ images, out: stoppedRun, config: TINY }, { signal: controller.signal, onEvent: (e) => { if (e.type === 'step') controller.abort(); } });
      assert.equal(r.completed, false);
    });
    const copyOfRun = () => {
      const copy = join(scratchDir(), 'run');
      cpSync(stoppedRun, copy, { recursive: true });
      return copy;
    };
    const editManifest = (run: string, edit: (m: Record<string, any>) => void) => {
      const m = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as Record<string, any>;
      edit(m);
      writeFileSync(join(run, 'run.json'), JSON.stringify(m));
    };

    it('written by another version: ERR_CHECKPOINT, the resume would not reproduce the run', async () => {
      const run = copyOfRun();
      editManifest(run, (m) => { m.software.package = 'visplay-native/evolve-0'; });
      failedWith(await runCli(['evolve', '--resume', run]), `visplay-native: ${run} was written by visplay-native/evolve-0 with llama.cpp `,
        'this is visplay-native/evolve-1', 'a resume would not reproduce the run');
    });

    it('pointing at another model: ERR_CHECKPOINT, its saved policies were made for another model', { timeout: 180_000 }, async () => {
      const other = scratchDir();
      const pair = { modelPath: join(other, 'model.gguf'), mmprojPath: join(other, 'mmproj.gguf') };
      await loadBinding().makeTinyModel({ ...TINY_MODEL_CONFIG, layerCount: 1, seed: 2, vocabPath: vocabularyPath(), chatTemplate: QWEN25VL_CHAT_TEMPLATE, ...pair });
      const run = copyOfRun();
      editManifest(run, (m) => { m.model = pair.modelPath; m.mmproj = pair.mmprojPath; });
      failedWith(await runCli(['evolve', '--resume', run]), /adapter\.gguf was made for another model \(qwen2vl:embd=128,layers=2,.*\), not this one \(qwen2vl:embd=128,layers=1,/);
    });

    it('a checkpoint.json cut in half: ERR_CHECKPOINT naming the file', async () => {
      const run = copyOfRun();
      const text = readFileSync(join(run, 'checkpoint.json'), 'utf8');
      writeFileSync(join(run, 'checkpoint.json'), text.slice(0, text.length >> 1));
      failedWith(await runCli(['evolve', '--resume', run]), `visplay-native: cannot read ${join(run, 'checkpoint.json')}: `);
    });

    it('a record file shorter than the checkpoint says: ERR_CHECKPOINT with both counts', async () => {
      const run = copyOfRun();
      writeFileSync(join(run, 'metrics.jsonl'), '');
      failedWith(await runCli(['evolve', '--resume', run]), `visplay-native: ${join(run, 'metrics.jsonl')} has 0 records, the checkpoint counts 1`);
    });

    it('a folder that holds no run', async () => {
      const empty = scratchDir();
      failedWith(await runCli(['evolve', '--resume', empty]), `visplay-native: cannot read ${empty}/run.json: `, /ENOENT|no such file/);
    });

    it('--resume with settings of its own: they would change the run', async () => {
      failedWith(await runCli(['evolve', '--resume', stoppedRun, '--steps', '3']),
        'visplay-native: --resume continues with the run\'s own settings; drop questionerSteps, reasonerSteps');
    });
  });

  describe('eval: benchmark lines, the judge', () => {
    let image: string;
    before(async () => {
      image = join(scratchDir(), 'picture.png');
      writeFileSync(image, await patternPng(48, 48, 2));
    });

    it('a benchmark whose every line misses a field: exit 1 naming the lines', async () => {
      const bench = join(scratchDir(), 'bench.jsonl');
      writeFileSync(bench, [
        JSON.stringify({ image, answer: '2' }),
        JSON.stringify({ question: 'Is it red?', answer: 'yes' }),
        JSON.stringify({ image, question: 'How many?' }),
        'not json',
      ].join('\n'));
      failedWith(await runCli(['eval', '--bench', bench]), `visplay-native: benchmark ${bench} has no usable line: line 1: needs "question": a non-empty string; ` +
        'line 2: needs "image": the path of the image; line 3: needs "answer": a non-empty string (or a number); 1 more (see docs/benchmarks.md for the format)');
    });

    it('a benchmark with some bad lines: each is reported with its line number, the rest is scored', { timeout: 120_000 }, async () => {
      const bench = join(scratchDir(), 'bench.jsonl');
      writeFileSync(bench, [
        JSON.stringify({ image, question: 'How many shapes?', answer: '2' }),
        JSON.stringify({ image, answer: '2' }),
        JSON.stringify({ image: join(scratchDir(), 'gone.png'), question: 'Q?', answer: 'yes' }),
      ].join('\n'));
      const run = await runCli(['eval', '--bench', bench, '--max-tokens', '4', '--threads', '2', '--json']);
      succeeded(run);
      const skipped = run.stderr.split('\n').filter((l) => l.startsWith('skipped'));
      assert.deepEqual(skipped.map((l) => l.replace(/: .*/, '')), [`skipped ${bench} line 2`, `skipped ${bench} line 3`]);
      assert.match(skipped[0]!, /needs "question"/);
      assert.match(skipped[1]!, /gone\.png does not exist/);
      const result = JSON.parse(run.stdout) as { overall: { total: number }; skipped: Array<{ line: number }> };
      assert.equal(result.overall.total, 1);
      assert.deepEqual(result.skipped.map((s) => s.line), [2, 3]);
    });

    it('a judge that never answers: ERR_JUDGE after --judge-timeout, naming the URL; the engine is released', { timeout: 60_000 }, async () => {
      const hanging: Server = createServer(() => { /* never answers */ });
      await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
      const url = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}`;
      // The tiny model never writes a \boxed{} answer, so the judge would not be asked: a stand-in
      // engine answers in the right form instead.
      let disposed = 0;
      const answering = {
        info: model.info,
        createRollout: async () => ({
          generate: async (requests: RolloutRequest[]) => ({ samples: requests.map(() => [{ text: 'It is \\boxed{a red car}.' }]), stats: { generatedTokens: 6 } }),
          dispose: () => { disposed++; },
        }),
      } as unknown as Model;
      const bench = parseBench(JSON.stringify({ image, question: 'What is shown?', answer: 'a red car', type: 'free-form' }), { baseDir: '/' });
      const started = performance.now();
      try {
        await rejectsWith(() => evaluate(answering, bench, { judge: url, judgeTimeoutMs: 400 }), 'ERR_JUDGE',
          `the judge at ${url}/v1/chat/completions did not answer within 0.4 s (--judge-timeout)`);
      } finally {
        hanging.closeAllConnections();
        await new Promise((r) => hanging.close(r));
      }
      assert.ok(performance.now() - started < 10_000, 'the timeout holds');
      assert.equal(disposed, 1, 'the rollout engine is disposed on the way out');
      await assertAlive();
    });
  });

  describe('full and read-only disks', () => {
    let policy: Policy;
    let saved: string;
    let savedBytes: Record<string, Buffer>;
    before(async () => {
      policy = await model.createPolicy({ rank: 4, seed: 3 });
      saved = join(scratchDir(), 'policy');
      await policy.save(saved);
      savedBytes = Object.fromEntries(['adapter.gguf', 'optimizer.gguf'].map((f) => [f, readFileSync(join(saved, f))]));
    });
    after(() => policy?.dispose());

    /** `folder` holds exactly the saved policy's two files: whole, nothing temporary beside them. */
    function holdsTheSave(folder: string): void {
      assert.deepEqual(readdirSync(folder).sort(), ['adapter.gguf', 'optimizer.gguf'], 'no temporary file is left behind');
      for (const [f, bytes] of Object.entries(savedBytes)) assert.ok(readFileSync(join(folder, f)).equals(bytes), `${f} is whole and unchanged`);
    }

    it('policy.save into a folder it cannot create: ERR_OUTPUT naming it', async (t) => {
      const ro = readOnlyDir();
      if (!ro) return t.skip('no read-only folder: root ignores file modes and tmpfs cannot be mounted here');
      const target = join(ro, 'policy');
      await rejectsWith(() => policy.save(target), 'ERR_OUTPUT', `cannot create the folder ${target}: `, /read-only file system|permission denied/i);
      await assertAlive();
    });

    it('policy.save into an existing read-only folder: ERR_OUTPUT, the previous save stays whole', async (t) => {
      const folder = tmpfs('1m');
      if (!folder && process.getuid?.() === 0) return t.skip('tmpfs cannot be mounted here');
      const target = folder ? join(folder, 'policy') : join(scratchDir(), 'policy');
      cpSync(saved, target, { recursive: true });
      if (folder) execFileSync('mount', ['-o', 'remount,ro', folder]);
      else chmodSync(target, 0o555);
      try {
        await rejectsWith(() => policy.save(target), 'ERR_OUTPUT', `cannot write the adapter to ${join(target, 'adapter.gguf')}.tmp-${process.pid}`,
          /read-only file system|permission denied/i);
        holdsTheSave(target);
      } finally {
        if (folder) execFileSync('mount', ['-o', 'remount,rw', folder]);
        else chmodSync(target, 0o755);
      }
      await assertAlive();
    });

    it('policy.save on a full disk, at every fill level: it saves whole files or fails with ERR_OUTPUT, never a truncated file in place', { timeout: 120_000 }, async () => {
      const folder = tmpfs('768k');
      const target = join(folder ?? scratchDir(), 'policy');
      cpSync(saved, target, { recursive: true });
      const total = Object.values(savedBytes).reduce((n, b) => n + b.length, 0);
      let failures = 0;
      let successes = 0;
      if (folder) {
        // Page by page from nothing left to room for both files: each save writes two temporary
        // files beside the previous save, so every stopping point is somewhere along the way.
        for (let free = 0; free <= total + 16_384; free += 4096) {
          leaveFree(folder, free);
          try {
            await policy.save(target);
            successes++;
          } catch (e) {
            assert.ok(e instanceof VisplayError && e.code === 'ERR_OUTPUT', String(e));
            assert.match(e.message, /^cannot write the (adapter|optimizer state) to .*\.tmp-\d+: No space left on device$/);
            failures++;
          }
          holdsTheSave(target);
        }
        rmSync(join(folder, 'filler'));
      } else {
        // No tmpfs: the temporary file of each of the two writes in turn points at /dev/full.
        for (const file of ['adapter.gguf', 'optimizer.gguf']) {
          const tmp = join(target, `${file}.tmp-${process.pid}`);
          symlinkSync('/dev/full', tmp);
          await rejectsWith(() => policy.save(target), 'ERR_OUTPUT', /No space left on device/);
          failures++;
          holdsTheSave(target);
        }
      }
      assert.ok(failures > 0, 'the disk did fill up');
      (await model.loadPolicy(target)).dispose();
      console.log(`# policy.save on a full disk: ${failures} failed cleanly, ${successes} succeeded`);
      await assertAlive();
    });

    it('the run store on a full disk: the checkpoint keeps its last whole version, a record append fails without a partial line', async () => {
      const folder = tmpfs('64k');
      const root = folder ?? scratchDir();
      const checkpoint = join(root, 'checkpoint.json');
      writeJsonAtomic(checkpoint, { step: 1 });
      const log = new JsonlLog(root);
      log.append('metrics.jsonl', [{ step: 1 }]);
      const big = { step: 2, padding: 'x'.repeat(100_000) };
      if (folder) {
        leaveFree(folder, 8192);
      } else {
        symlinkSync('/dev/full', `${checkpoint}.tmp-${process.pid}`);
      }
      await rejectsWith(() => writeJsonAtomic(checkpoint, big), 'ERR_OUTPUT', `cannot write ${checkpoint}: `, /ENOSPC|no space left/i);
      assert.deepEqual(JSON.parse(readFileSync(checkpoint, 'utf8')), { step: 1 }, 'the previous checkpoint is whole');
      assert.deepEqual(filesUnder(root).filter((f) => f.includes('.tmp')), [], 'no temporary file is left behind');
      if (folder) {
        await rejectsWith(() => log.append('metrics.jsonl', [big]), 'ERR_OUTPUT', `cannot append to ${join(root, 'metrics.jsonl')}: `, /ENOSPC|no space left/i);
        assert.deepEqual(log.committed(), { 'metrics.jsonl': 1 }, 'the failed append is not counted');
        assert.equal(readFileSync(join(root, 'metrics.jsonl'), 'utf8'), '{"step":1}\n', 'no partial line is left');
        rmSync(join(folder, 'filler'));
        log.append('metrics.jsonl', [{ step: 2 }]);
        assert.deepEqual(jsonl(join(root, 'metrics.jsonl')), [{ step: 1 }, { step: 2 }], 'appends go on once there is room');
      }
    });

    it('evolve on a disk that fills up: exit 1 with ERR_OUTPUT\'s line; with room again, --resume completes the run', { timeout: 400_000 }, async (t) => {
      const folder = tmpfs('160k');
      if (!folder) return t.skip('tmpfs cannot be mounted here');
      const images = await imagesDir();
      const run = join(folder, 'run');
      const flags = cliFlags({ ...TINY, questionerSteps: 1, reasonerSteps: 1, candidateImages: 2 });
      failedAfterStarting(await runCli(['evolve', '--images', images, '--out', run, ...flags], { timeoutMs: 300_000 }), /No space left on device|ENOSPC/i);
      execFileSync('mount', ['-o', 'remount,size=64m', folder]);
      succeeded(await runCli(['evolve', '--resume', run], { timeoutMs: 300_000 }));
      assert.deepEqual(filesUnder(run).filter((f) => f.includes('.tmp')), []);
      for (const f of filesUnder(run).filter((n) => n.endsWith('.jsonl'))) jsonl(join(run, f));
      for (const d of ['questioner-1', 'reasoner-1']) (await model.loadPolicy(join(run, d))).dispose();
      assert.ok(existsSync(join(run, 'report', 'index.html')));
      await assertAlive();
    });
  });

  describe('policy folders', () => {
    let folder: string;
    before(async () => {
      const p = await model.createPolicy({ rank: 2, seed: 4 });
      folder = join(scratchDir(), 'policy');
      await p.save(folder);
      await p.step([{ messages: [{ role: 'user', content: 'hi' }], samples: [{ tokens: [1, 2], advantage: 1 }, { tokens: [3], advantage: -1 }] }]);
      await p.save(join(folder, 'later'));
      p.dispose();
    });

    it('a truncated adapter.gguf: ERR_CHECKPOINT, not a crash', async () => {
      const copy = join(scratchDir(), 'policy');
      cpSync(folder, copy, { recursive: true });
      const size = statSync(join(copy, 'adapter.gguf')).size;
      const fd = openSync(join(copy, 'adapter.gguf'), 'r');
      const head = Buffer.alloc(size >> 1);
      readSync(fd, head, 0, head.length, 0);
      closeSync(fd);
      writeFileSync(join(copy, 'adapter.gguf'), head);
      await rejectsWith(() => model.loadPolicy(copy), 'ERR_CHECKPOINT', `LoRA adapter ${join(copy, 'adapter.gguf')} is not a readable GGUF file`);
      await assertAlive();
    });

    it('an adapter and optimizer state from different saves: ERR_CHECKPOINT naming both steps', async () => {
      const copy = join(scratchDir(), 'policy');
      cpSync(folder, copy, { recursive: true });
      copyFileSync(join(folder, 'later', 'optimizer.gguf'), join(copy, 'optimizer.gguf'));
      await rejectsWith(() => model.loadPolicy(copy), 'ERR_CHECKPOINT', `the adapter (step 0) and optimizer state (step 1) in ${copy} are from different saves`);
      await assertAlive();
    });
  });
});
