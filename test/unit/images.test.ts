import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { VisplayError, type VisplayErrorCode } from '../../src/errors.js';
import { ImageCache, loadImage } from '../../src/images.js';
import { tempDir } from './helpers/gguf-writer.js';

const tmp = tempDir();
after(() => tmp.cleanup());

/** A w x h RGB test card: red increases left to right, green top to bottom, blue constant. */
function testCard(width: number, height: number): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      rgb[i] = Math.round((x / (width - 1)) * 255);
      rgb[i + 1] = Math.round((y / (height - 1)) * 255);
      rgb[i + 2] = 64;
    }
  }
  return rgb;
}

function encode(width: number, height: number): sharp.Sharp {
  return sharp(testCard(width, height), { raw: { width, height, channels: 3 } });
}

async function rejectsWith(promise: Promise<unknown>, code: VisplayErrorCode, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof VisplayError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('loadImage', () => {
  const formats: Array<[string, (s: sharp.Sharp) => sharp.Sharp, boolean]> = [
    ['png', (s) => s.png(), true],
    ['tiff', (s) => s.tiff({ compression: 'lzw' }), true],
    ['webp', (s) => s.webp({ lossless: true }), true],
    ['jpeg', (s) => s.jpeg({ quality: 95 }), false],
    ['gif', (s) => s.gif(), false],
    ['avif', (s) => s.avif({ quality: 90 }), false],
  ];
  for (const [format, encoder, lossless] of formats) {
    it(`decodes ${format} to ${lossless ? 'the exact' : 'close'} RGB bytes`, async () => {
      const bytes = await encoder(encode(32, 24)).toBuffer();
      const image = await loadImage(bytes);
      assert.equal(image.width, 32);
      assert.equal(image.height, 24);
      assert.equal(image.rgb.length, 32 * 24 * 3);
      assert.match(image.key, /^[0-9a-f]{64}$/);
      const expected = testCard(32, 24);
      if (lossless) {
        assert.deepEqual(image.rgb, expected);
      } else {
        // Lossy codecs (and GIF's 256-colour palette) move values a little, never a lot.
        let worst = 0;
        for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(image.rgb[i]! - expected[i]!));
        assert.ok(worst < 48, `largest channel error ${worst}`);
      }
    });
  }

  it('uses the SHA-256 of the source bytes as key and records the path', async () => {
    const bytes = await encode(8, 8).png().toBuffer();
    const path = tmp.file('card.png', bytes);
    const fromFile = await loadImage(path);
    const fromBuffer = await loadImage(new Uint8Array(bytes));
    assert.equal(fromFile.source, path);
    assert.equal(fromBuffer.source, undefined);
    assert.equal(fromFile.key, fromBuffer.key);
    const { createHash } = await import('node:crypto');
    assert.equal(fromFile.key, createHash('sha256').update(bytes).digest('hex'));
  });

  it('applies EXIF orientation 6 (rotate 90°): a 40x20 photo comes out 20x40', async () => {
    const bytes = await encode(40, 20).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const image = await loadImage(bytes);
    assert.equal(image.width, 20);
    assert.equal(image.height, 40);
    // Rotated clockwise: the stored left edge (red = 0) is now the top row.
    const topRowRed = image.rgb[(0 * 20 + 10) * 3]!;
    const bottomRowRed = image.rgb[(39 * 20 + 10) * 3]!;
    assert.ok(topRowRed < 40 && bottomRowRed > 215, `top ${topRowRed}, bottom ${bottomRowRed}`);
  });

  it('flattens transparency onto white', async () => {
    const rgba = Buffer.alloc(4 * 4 * 4); // fully transparent black
    for (let i = 0; i < 4; i++) rgba.set([255, 0, 0, 255], i * 4); // first row: opaque red
    const image = await loadImage(await sharp(rgba, { raw: { width: 4, height: 4, channels: 4 } }).png().toBuffer());
    assert.equal(image.rgb.length, 4 * 4 * 3);
    assert.deepEqual([...image.rgb.subarray(0, 3)], [255, 0, 0]);
    assert.deepEqual([...image.rgb.subarray(45, 48)], [255, 255, 255]);
  });

  it('turns greyscale into three equal channels', async () => {
    const grey = await sharp(Buffer.alloc(16, 100), { raw: { width: 4, height: 4, channels: 1 } }).png().toBuffer();
    const image = await loadImage(grey);
    assert.equal(image.rgb.length, 48);
    assert.deepEqual([...image.rgb.subarray(0, 3)], [100, 100, 100]);
  });

  it('downscales to maxPixels keeping the aspect ratio, never enlarging', async () => {
    const bytes = await encode(400, 200).png().toBuffer();
    const small = await loadImage(bytes, { maxPixels: 20_000 });
    assert.deepEqual([small.width, small.height], [200, 100]);
    assert.equal(small.rgb.length, 200 * 100 * 3);
    assert.match(small.key, /^[0-9a-f]{64}:200x100$/);
    const same = await loadImage(bytes, { maxPixels: 1_000_000 });
    assert.deepEqual([same.width, same.height], [400, 200]);
    assert.match(same.key, /^[0-9a-f]{64}$/);
  });

  it('downscales after orientation, so the limit applies to the picture as shown', async () => {
    const bytes = await encode(400, 200).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const image = await loadImage(bytes, { maxPixels: 20_000 });
    assert.deepEqual([image.width, image.height], [100, 200]);
  });

  it('reports a missing file, an empty file and garbage bytes', async () => {
    await rejectsWith(loadImage(`${tmp.dir}/nope.jpg`), 'ERR_FILE_NOT_FOUND', /^image .*nope\.jpg does not exist$/);
    await rejectsWith(loadImage(tmp.file('empty.png', Buffer.alloc(0))), 'ERR_IMAGE_EMPTY', /^image .*empty\.png is empty \(0 bytes\)$/);
    await rejectsWith(loadImage(Buffer.alloc(0)), 'ERR_IMAGE_EMPTY', /^image buffer is empty/);
    const garbage = tmp.file('photo.jpg', Buffer.from('this is not an image at all, just text'));
    await rejectsWith(loadImage(garbage), 'ERR_IMAGE_DECODE', /^image .*photo\.jpg does not decode: .*unsupported image format/);
  });

  it('reports a truncated JPEG as not decoding', async () => {
    const jpeg = await encode(64, 64).jpeg().toBuffer();
    await rejectsWith(loadImage(jpeg.subarray(0, jpeg.length / 2)), 'ERR_IMAGE_DECODE', /^image buffer \(\d+ bytes\) does not decode: /);
  });

  it('rejects inputs that are not paths or bytes, and bad limits', async () => {
    await rejectsWith(loadImage(42 as unknown as string), 'ERR_INVALID_ARG',
      /^Expected file path, Buffer or Uint8Array for image but received 42 of type number$/);
    await rejectsWith(loadImage(Buffer.from('x'), { maxPixels: 0 }), 'ERR_INVALID_ARG', /^Expected positive integer for maxPixels/);
  });
});

describe('ImageCache', () => {
  it('decodes each content once, whatever path or buffer it comes from', async () => {
    const bytes = await encode(16, 16).png().toBuffer();
    const a = tmp.file('a.png', bytes);
    const b = tmp.file('b.png', bytes);
    const cache = new ImageCache();
    const [first, second, third] = await Promise.all([cache.load(a), cache.load(b), cache.load(Buffer.from(bytes))]);
    assert.deepEqual(cache.stats, { hits: 2, misses: 1, evictions: 0 });
    assert.equal(cache.size, 1);
    assert.equal(first!.rgb, second!.rgb); // the same pixels, not a copy
    assert.equal(first!.rgb, third!.rgb);
    assert.equal(first!.source, a);
    assert.equal(second!.source, b);
    assert.equal(third!.source, undefined);
  });

  it('decodes different content separately, and one content at two sizes separately', async () => {
    const cache = new ImageCache();
    const one = await encode(16, 16).png().toBuffer();
    const two = await encode(17, 16).png().toBuffer();
    const x = await cache.load(one);
    const y = await cache.load(two);
    const z = await cache.load(one, { maxPixels: 64 });
    assert.notEqual(x.key, y.key);
    assert.notEqual(x.key, z.key);
    assert.equal(cache.stats.misses, 3);
  });

  it('evicts the least recently used image beyond maxEntries', async () => {
    const cache = new ImageCache({ maxEntries: 2 });
    const images = await Promise.all([8, 9, 10].map((w) => encode(w, 8).png().toBuffer()));
    await cache.load(images[0]!);
    await cache.load(images[1]!);
    await cache.load(images[0]!); // now images[1] is the least recent
    await cache.load(images[2]!); // evicts images[1]
    assert.equal(cache.size, 2);
    assert.equal(cache.stats.evictions, 1);
    await cache.load(images[0]!);
    assert.equal(cache.stats.hits, 2);
    await cache.load(images[1]!);
    assert.equal(cache.stats.misses, 4);
  });

  it('evicts beyond maxBytes but keeps the image just loaded', async () => {
    const cache = new ImageCache({ maxBytes: 100 }); // less than one 8x8 image (192 bytes)
    await cache.load(await encode(8, 8).png().toBuffer());
    assert.equal(cache.size, 1);
    await cache.load(await encode(9, 8).png().toBuffer());
    assert.equal(cache.size, 1);
    assert.equal(cache.stats.evictions, 1);
  });

  it('does not cache failures', async () => {
    const cache = new ImageCache();
    const garbage = Buffer.from('not an image');
    await assert.rejects(cache.load(garbage), /does not decode/);
    await assert.rejects(cache.load(garbage), /does not decode/);
    assert.equal(cache.size, 0);
    assert.equal(cache.stats.misses, 2);
  });
});
