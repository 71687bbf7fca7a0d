import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { VisplayError, type VisplayErrorCode } from '../../src/errors.js';
import { inspectModelPair, readGguf } from '../../src/gguf.js';
import { ByteWriter, T, buildGguf, languageModel, projector, str, strings, tempDir, u32 } from './helpers/gguf-writer.js';

const tmp = tempDir();
after(() => tmp.cleanup());

/** Asserts a VisplayError with `code` whose message matches every pattern. */
async function rejectsWith(promise: Promise<unknown>, code: VisplayErrorCode, ...patterns: Array<RegExp | string>): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof VisplayError, `expected a VisplayError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) {
      if (typeof p === 'string') assert.equal(e.message, p);
      else assert.match(e.message, p);
    }
    return true;
  });
}

/** Header of a v3 file with the given counts, ready for hand-written key-values. */
function header(tensorCount: number | bigint, kvCount: number | bigint): ByteWriter {
  return new ByteWriter().raw('GGUF').u32(3).u64(tensorCount).u64(kvCount);
}

describe('readGguf on a well-formed file', () => {
  it('reads version, metadata, tensor infos with sizes and the aligned data offset', async () => {
    const bytes = languageModel({ embedding: 64 });
    const path = tmp.file('model.gguf', bytes);
    const file = await readGguf(path);
    assert.equal(file.version, 3);
    assert.equal(file.tensorCount, 3);
    assert.equal(file.fileSize, bytes.length);
    assert.equal(file.alignment, 32);
    assert.equal(file.dataOffset % 32, 0);
    assert.equal(file.metadata.get('general.architecture'), 'qwen2vl');
    assert.equal(file.metadata.get('qwen2vl.embedding_length'), 64);
    assert.deepEqual(file.metadata.get('tokenizer.ggml.tokens'), { type: 'array', elementType: 'string', length: 3, values: ['a', 'b', 'c'] });
    assert.deepEqual(file.tensors, [
      { name: 'token_embd.weight', dims: [64, 3], type: 'F16', typeId: 1, offset: 0, size: 64 * 3 * 2 },
      // Q8_0: blocks of 32 elements in 34 bytes
      { name: 'blk.0.attn_q.weight', dims: [64, 64], type: 'Q8_0', typeId: 8, offset: 384, size: (64 / 32) * 34 * 64 },
      { name: 'output_norm.weight', dims: [64], type: 'F32', typeId: 0, offset: 384 + 4352, size: 256 },
    ]);
    assert.equal(file.dataOffset + 384 + 4352 + 256, bytes.length);
  });

  it('reads every scalar type and keeps 64-bit values exact', async () => {
    const bytes = buildGguf({
      metadata: [
        ['u8', { type: 'u8', value: 255 }], ['i8', { type: 'i8', value: -128 }],
        ['u16', { type: 'u16', value: 65535 }], ['i16', { type: 'i16', value: -32768 }],
        ['i32', { type: 'i32', value: -5 }], ['f32', { type: 'f32', value: 0.5 }],
        ['f64', { type: 'f64', value: 1e-300 }], ['yes', { type: 'bool', value: true }],
        ['small', { type: 'u64', value: 7n }], ['huge', { type: 'u64', value: 2n ** 63n }],
        ['negative', { type: 'i64', value: -(2n ** 62n) }],
      ],
    });
    const m = (await readGguf(tmp.file('scalars.gguf', bytes))).metadata;
    assert.deepEqual([...m.values()], [255, -128, 65535, -32768, -5, 0.5, 1e-300, true, 7, 2n ** 63n, -(2n ** 62n)]);
  });

  it('keeps only the length of long arrays unless asked for them', async () => {
    const vocab = Array.from({ length: 100 }, (_, i) => `token${i}`);
    const bytes = buildGguf({
      metadata: [
        ['tokenizer.ggml.tokens', strings(vocab)],
        ['tokenizer.ggml.scores', { type: 'array', elementType: 'f32', values: vocab.map((_, i) => i) }],
        ['after', str('still read')],
      ],
    });
    const path = tmp.file('arrays.gguf', bytes);
    const skipped = await readGguf(path);
    assert.deepEqual(skipped.metadata.get('tokenizer.ggml.tokens'), { type: 'array', elementType: 'string', length: 100, values: null });
    assert.deepEqual(skipped.metadata.get('tokenizer.ggml.scores'), { type: 'array', elementType: 'f32', length: 100, values: null });
    assert.equal(skipped.metadata.get('after'), 'still read');
    const kept = await readGguf(path, { fullArrays: ['tokenizer.ggml.tokens'] });
    const tokens = kept.metadata.get('tokenizer.ggml.tokens');
    assert.ok(typeof tokens === 'object');
    assert.deepEqual(tokens.values, vocab);
  });

  it('reads headers that span many read chunks', async () => {
    // ~3.5 MB of vocabulary: the reader refills its 1 MiB window several times, mid-string.
    const vocab = Array.from({ length: 30_000 }, (_, i) => `${i}:${'x'.repeat(60 + (i % 97))}`);
    const path = tmp.file('big-vocab.gguf', languageModel({ vocab }));
    const file = await readGguf(path, { fullArrays: ['tokenizer.ggml.tokens'] });
    const tokens = file.metadata.get('tokenizer.ggml.tokens');
    assert.ok(typeof tokens === 'object' && tokens.values);
    assert.equal(tokens.length, 30_000);
    assert.deepEqual(tokens.values, vocab);
    assert.equal(file.tensors.length, 3);
  });

  it('honours general.alignment', async () => {
    const bytes = buildGguf({ alignment: 64, metadata: [['general.alignment', u32(64)]], tensors: [{ name: 'a', dims: [3] }, { name: 'b', dims: [5] }] });
    const file = await readGguf(tmp.file('align64.gguf', bytes));
    assert.equal(file.alignment, 64);
    assert.equal(file.dataOffset % 64, 0);
    assert.deepEqual(file.tensors.map((t) => t.offset), [0, 64]);
  });
});

describe('readGguf on files that are not GGUF', () => {
  it('names the path and the option of a missing file', async () => {
    await rejectsWith(readGguf(`${tmp.dir}/missing.gguf`, { role: 'model file', option: '--model' }), 'ERR_FILE_NOT_FOUND',
      `model file ${tmp.dir}/missing.gguf (--model) does not exist`);
  });

  it('rejects a folder', async () => {
    await rejectsWith(readGguf(tmp.dir), 'ERR_FILE_NOT_FOUND', /is a folder, not a file/);
  });

  it('shows the first bytes of a file with another magic', async () => {
    const elf = Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    const path = tmp.file('a.out', elf);
    await rejectsWith(readGguf(path, { role: 'model file', option: '--model' }), 'ERR_NOT_GGUF',
      `model file ${path} (--model) is not a GGUF file (starts with bytes 7f 45 4c 46)`);
  });

  it('explains Git LFS pointers and empty or tiny files', async () => {
    await rejectsWith(readGguf(tmp.file('lfs.gguf', 'version https://git-lfs.github.com/spec/v1\noid sha256:abc\n')), 'ERR_NOT_GGUF', /Git LFS pointer/);
    await rejectsWith(readGguf(tmp.file('empty.gguf', Buffer.alloc(0))), 'ERR_NOT_GGUF', /is empty \(0 bytes\)/);
    await rejectsWith(readGguf(tmp.file('two.gguf', Buffer.from('GG'))), 'ERR_NOT_GGUF', /it has only 2 bytes: 47 47/);
  });

  it('rejects GGUF v1 and big-endian files as unsupported', async () => {
    await rejectsWith(readGguf(tmp.file('v1.gguf', new ByteWriter().raw('GGUF').u32(1).u32(0).u32(0).toBuffer())), 'ERR_GGUF_UNSUPPORTED', /version 1/);
    const bigEndian = new ByteWriter().raw('GGUF').raw(Buffer.from([0, 0, 0, 3])).u64(0).u64(0).toBuffer();
    await rejectsWith(readGguf(tmp.file('be.gguf', bigEndian)), 'ERR_GGUF_UNSUPPORTED', /big-endian/);
  });
});

describe('readGguf on damaged files', () => {
  it('reports a file cut short in the tensor data as truncated, naming the tensor', async () => {
    const whole = languageModel();
    const path = tmp.file('cut-data.gguf', whole.subarray(0, whole.length - 100));
    await rejectsWith(readGguf(path), 'ERR_GGUF_TRUNCATED',
      new RegExp(`is truncated: tensor 'output_norm.weight' ends at byte ${whole.length} but the file has only ${whole.length - 100} bytes`));
  });

  it('reports a file cut short inside the header as truncated', async () => {
    const path = tmp.file('cut-header.gguf', languageModel().subarray(0, 60));
    await rejectsWith(readGguf(path), 'ERR_GGUF_TRUNCATED', /is truncated: reading .* at byte \d+ needs \d+ bytes but the file ends at byte 60/);
  });

  it('rejects a huge key-value count without allocating for it', async () => {
    const path = tmp.file('kv-count.gguf', header(0, 2n ** 40n).toBuffer());
    await rejectsWith(readGguf(path), 'ERR_GGUF_CORRUPT', /key-value count is 1099511627776, more than a GGUF header can hold \(at byte 16\)/);
  });

  it('rejects a huge tensor count', async () => {
    await rejectsWith(readGguf(tmp.file('t-count.gguf', header(2n ** 62n, 0).toBuffer())), 'ERR_GGUF_CORRUPT', /tensor count is 4611686018427387904/);
  });

  it('rejects a huge string length with its byte offset', async () => {
    const bytes = header(0, 1).u64(2n ** 62n).raw('general.name').toBuffer();
    await rejectsWith(readGguf(tmp.file('str-len.gguf', bytes)), 'ERR_GGUF_CORRUPT',
      /the length of key 0 is 4611686018427387904 bytes, more than a GGUF header can hold \(at byte 24\)/);
  });

  it('rejects an unknown value type id', async () => {
    const bytes = header(0, 1).str('general.name').u32(99).u32(0).toBuffer();
    await rejectsWith(readGguf(tmp.file('type-id.gguf', bytes)), 'ERR_GGUF_CORRUPT',
      /the type of key 'general.name' is 99, not a GGUF value type \(0-12\) \(at byte 44\)/);
  });

  it('rejects huge arrays, nested arrays and repeated keys', async () => {
    const huge = header(0, 1).str('tokens').u32(T.array).u32(T.string).u64(2n ** 50n).toBuffer();
    await rejectsWith(readGguf(tmp.file('array-count.gguf', huge)), 'ERR_GGUF_CORRUPT', /array 'tokens' claims 1125899906842624 items/);
    const nested = header(0, 1).str('nest').u32(T.array).u32(T.array).u64(1).toBuffer();
    await rejectsWith(readGguf(tmp.file('nested.gguf', nested)), 'ERR_GGUF_CORRUPT', /array 'nest' holds arrays/);
    const twice = header(0, 2).kv('a', str('x')).kv('a', str('y')).toBuffer();
    await rejectsWith(readGguf(tmp.file('twice.gguf', twice)), 'ERR_GGUF_CORRUPT', /key 'a' appears twice/);
  });

  it('rejects a tensor with 99 dimensions', async () => {
    const bytes = header(1, 0).str('w').u32(99).toBuffer();
    await rejectsWith(readGguf(tmp.file('ndims.gguf', bytes)), 'ERR_GGUF_CORRUPT', /tensor 'w' has 99 dimensions; ggml allows at most 4 \(at byte 33\)/);
  });

  it('rejects an unknown ggml type and rows that do not fill whole blocks', async () => {
    const typeless = header(1, 0).str('w').u32(1).u64(8).u32(4).u64(0).toBuffer();
    await rejectsWith(readGguf(tmp.file('ggml-type.gguf', typeless)), 'ERR_GGUF_CORRUPT', /tensor 'w' has type 4, not a ggml type/);
    const ragged = header(1, 0).str('w').u32(1).u64(33).u32(2 /* Q4_0, 32 per block */).u64(0).toBuffer();
    await rejectsWith(readGguf(tmp.file('ragged.gguf', ragged)), 'ERR_GGUF_CORRUPT', /rows of 33 elements, not a multiple of its block size 32/);
  });

  it('rejects tensor data offsets out of order and offsets past any file', async () => {
    const gap = buildGguf({ tensors: [{ name: 'a', dims: [8] }, { name: 'b', dims: [8], offset: 4096n }] });
    await rejectsWith(readGguf(tmp.file('gap.gguf', gap)), 'ERR_GGUF_CORRUPT', /tensor 'b' has data offset 4096, expected 32/);
    const far = buildGguf({ tensors: [{ name: 'a', dims: [8], offset: 2n ** 62n }] });
    await rejectsWith(readGguf(tmp.file('far.gguf', far)), 'ERR_GGUF_CORRUPT', /tensor 'a' claims data at bytes 4611686018427387904/);
  });

  it('rejects an alignment that is not a power of two', async () => {
    const bytes = buildGguf({ metadata: [['general.alignment', u32(24)]] });
    await rejectsWith(readGguf(tmp.file('align.gguf', bytes)), 'ERR_GGUF_CORRUPT', /general.alignment is 24, not a power of two/);
  });

  it('stops at the header size limit', async () => {
    const bytes = buildGguf({ metadata: [['general.description', str('z'.repeat(5000))]] });
    await rejectsWith(readGguf(tmp.file('limit.gguf', bytes), { maxHeaderBytes: 1024 }), 'ERR_GGUF_CORRUPT', /more than a GGUF header can hold/);
  });
});

describe('inspectModelPair', () => {
  const model = tmp.file('pair-model.gguf', languageModel({ embedding: 64 }));

  it('accepts a matching pair and reports what it found', async () => {
    const pair = await inspectModelPair(model, tmp.file('pair-mmproj.gguf', projector({ projectionDim: 64 })));
    assert.equal(pair.architecture, 'qwen2vl');
    assert.equal(pair.embeddingSize, 64);
    assert.equal(pair.projectorType, 'qwen2.5vl');
    assert.equal(pair.projectionDim, 64);
    assert.equal(pair.model.tensorCount, 3);
  });

  it('accepts a projector that does not record its projection size', async () => {
    const pair = await inspectModelPair(model, tmp.file('no-dim.gguf', projector({ projectionDim: null })));
    assert.equal(pair.projectionDim, null);
  });

  it('names both sizes and both files on a mismatch', async () => {
    const mmproj = tmp.file('big-mmproj.gguf', projector({ projectionDim: 2048 }));
    await rejectsWith(inspectModelPair(model, mmproj), 'ERR_MMPROJ_MISMATCH',
      `mmproj file ${mmproj} (--mmproj) produces 2048-dimensional image embeddings, but model file ${model} (--model) ` +
      'takes 64-dimensional ones: pass the mmproj file made for this model');
  });

  it('says so when the model file is itself an mmproj', async () => {
    const mmproj = tmp.file('swapped.gguf', projector());
    await rejectsWith(inspectModelPair(mmproj, mmproj), 'ERR_NOT_VLM', /\(--model\) is a vision projector \(mmproj\), not a language model/);
  });

  it('rejects a text-only pair: a language model where the mmproj belongs', async () => {
    await rejectsWith(inspectModelPair(model, model), 'ERR_NOT_VLM', /\(--mmproj\) is a language model \(qwen2vl\), not a vision projector/);
  });

  it('rejects a projector without a vision encoder', async () => {
    const audio = tmp.file('audio-mmproj.gguf', projector({ vision: false, audio: true }));
    await rejectsWith(inspectModelPair(model, audio), 'ERR_NOT_VLM',
      `mmproj file ${audio} (--mmproj) has no vision encoder (it is an audio projector); ` +
      'visplay-native needs a vision-language model: pass its mmproj file with --mmproj');
  });

  it('rejects a model without an embedding size and metadata of the wrong type', async () => {
    const vocabOnly = tmp.file('vocab.gguf', buildGguf({ metadata: [['general.architecture', str('llama')]] }));
    await rejectsWith(inspectModelPair(vocabOnly, model), 'ERR_NOT_VLM', /has no llama.embedding_length; it is not a language model/);
    const odd = tmp.file('odd.gguf', buildGguf({ metadata: [['general.architecture', u32(7)]] }));
    await rejectsWith(inspectModelPair(odd, model), 'ERR_GGUF_CORRUPT', /general.architecture should be a string but is 7/);
  });
});
