import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createProgress, formatEta, formatRate } from '../../src/progress.js';

/** A stream that records writes; `isTTY` as given. */
function sink(isTTY: boolean): Writable & { isTTY: boolean; text: string } {
  const stream = new Writable({
    write(chunk, _encoding, done) {
      stream.text += String(chunk);
      done();
    },
  }) as Writable & { isTTY: boolean; text: string };
  stream.isTTY = isTTY;
  stream.text = '';
  return stream;
}

describe('createProgress', () => {
  it('draws nothing when the stream is not a terminal', () => {
    const stream = sink(false);
    const progress = createProgress('generate', 4, { stream });
    progress.update(2, { tokens: 100 });
    progress.stop();
    assert.equal(stream.text, '');
  });

  it('stop is idempotent and update after stop is ignored', () => {
    const progress = createProgress('generate', 4, { stream: sink(false) });
    progress.stop();
    assert.doesNotThrow(() => {
      progress.stop();
      progress.update(3, { tokens: 1 });
    });
  });
});

describe('formatRate', () => {
  it('fits rates of any size in a few characters', () => {
    assert.equal(formatRate(0), '0.0');
    assert.equal(formatRate(NaN), '0.0');
    assert.equal(formatRate(3.44), '3.4');
    assert.equal(formatRate(57.4), '57');
    assert.equal(formatRate(12_345), '12.3k');
  });
});

describe('formatEta', () => {
  it('shows unknown, seconds, minutes and hours', () => {
    assert.equal(formatEta(NaN), '--');
    assert.equal(formatEta(Infinity), '--');
    assert.equal(formatEta(41.6), '42s');
    assert.equal(formatEta(185), '3m05s');
    assert.equal(formatEta(3720), '1h02m');
  });
});
