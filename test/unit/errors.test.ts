import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VISPLAY_ERROR_CODES, VisplayError, callNative, captureCallerStack, fromNative, isVisplayError } from '../../src/errors.js';

describe('VisplayError', () => {
  it('carries name, code, message and cause', () => {
    const cause = new Error('inner');
    const e = new VisplayError('ERR_DECODE', 'llama_decode failed', { cause });
    assert.ok(e instanceof Error);
    assert.equal(e.name, 'VisplayError');
    assert.equal(e.code, 'ERR_DECODE');
    assert.equal(e.message, 'llama_decode failed');
    assert.equal(e.cause, cause);
    assert.match(e.stack ?? '', /^VisplayError: llama_decode failed\n/);
    assert.equal(String(e), 'VisplayError: llama_decode failed');
  });

  it('isVisplayError checks the class and optionally the code', () => {
    const e = new VisplayError('ERR_BUSY', 'busy');
    assert.equal(isVisplayError(e), true);
    assert.equal(isVisplayError(e, 'ERR_BUSY'), true);
    assert.equal(isVisplayError(e, 'ERR_DISPOSED'), false);
    assert.equal(isVisplayError(new Error('x')), false);
  });

  it('lists the codes the addon may send', () => {
    for (const code of ['ERR_ADDON_MISSING', 'ERR_NOT_VLM', 'ERR_MMPROJ_MISMATCH', 'ERR_PROMPT_TOO_LONG', 'ERR_OUTPUT'] as const) {
      assert.ok(VISPLAY_ERROR_CODES.includes(code), code);
    }
  });
});

describe('fromNative', () => {
  it('parses the bracketed code off the message', () => {
    const e = fromNative(new Error('[ERR_MODEL_LOAD] failed to load model: bad magic'));
    assert.equal(e.code, 'ERR_MODEL_LOAD');
    assert.equal(e.message, 'failed to load model: bad magic');
  });

  it('keeps multi-line messages whole', () => {
    const e = fromNative(new Error('[ERR_DECODE] llama_decode returned 1:\nno KV slot'));
    assert.equal(e.code, 'ERR_DECODE');
    assert.equal(e.message, 'llama_decode returned 1:\nno KV slot');
  });

  it('defaults to ERR_NATIVE and keeps unknown codes in the text', () => {
    assert.equal(fromNative(new Error('std::bad_alloc')).code, 'ERR_NATIVE');
    assert.equal(fromNative(new Error('std::bad_alloc')).message, 'std::bad_alloc');
    const unknown = fromNative(new Error('[ERR_SOMETHING_NEW] hello'));
    assert.equal(unknown.code, 'ERR_NATIVE');
    assert.equal(unknown.message, '[ERR_SOMETHING_NEW] hello');
    assert.equal(fromNative('plain string').message, 'plain string');
  });

  it('takes the code from a code property when the message has none', () => {
    const e = fromNative(Object.assign(new Error('busy with another call'), { code: 'ERR_BUSY' }));
    assert.equal(e.code, 'ERR_BUSY');
    assert.equal(e.message, 'busy with another call');
    assert.equal(fromNative(Object.assign(new Error('x'), { code: 'ENOENT' })).code, 'ERR_NATIVE');
  });

  it('passes VisplayErrors through and keeps the native error as cause', () => {
    const original = new VisplayError('ERR_BUSY', 'busy');
    assert.equal(fromNative(original), original);
    const native = new Error('[ERR_DISPOSED] gone');
    assert.equal(fromNative(native).cause, native);
  });

  it('puts the caller stack on the error', () => {
    function callerFrameMarker(): string {
      return captureCallerStack();
    }
    const stack = callerFrameMarker();
    const e = fromNative(new Error('[ERR_DECODE] boom'), stack);
    const lines = (e.stack ?? '').split('\n');
    assert.equal(lines[0], 'VisplayError: boom');
    assert.match(lines[1] ?? '', /callerFrameMarker/);
  });

  it('callNative converts rejections and keeps the calling function in the stack', async () => {
    async function userFunctionThatCallsNative(): Promise<void> {
      await callNative(() => new Promise<void>((_, reject) => setImmediate(() => reject(new Error('[ERR_PROMPT_TOO_LONG] 9000 > 4096')))));
    }
    await assert.rejects(userFunctionThatCallsNative(), (e: unknown) => {
      assert.ok(e instanceof VisplayError);
      assert.equal(e.code, 'ERR_PROMPT_TOO_LONG');
      assert.equal(e.message, '9000 > 4096');
      assert.match(e.stack ?? '', /userFunctionThatCallsNative/);
      return true;
    });
    assert.equal(await callNative(() => 42), 42);
  });
});
