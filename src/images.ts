// Images in, RGB bytes out: the one place that decodes images (sharp/libvips), so every image the
// projector sees was oriented, flattened and converted the same way.
//
// The pipeline: EXIF orientation applied (a phone photo's pixels are stored sideways; the model
// must see what a person sees), alpha flattened onto white (how viewers show transparent PNGs, and
// what the VLMs' own preprocessors do when they convert to RGB), sRGB, 8 bits per channel. Large
// images can be downscaled first (fit inside, aspect kept, never enlarged): mtmd resizes to its
// token budget anyway, and a 50-megapixel photo need not be held at full size until then.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { VisplayError } from './errors.js';
import { fileError } from './files.js';
import * as is from './validate.js';

export interface DecodedImage {
  /**
   * Identifies the pixels: the SHA-256 (hex) of the source bytes, with ":WxH" appended when the
   * image was downscaled, so one source decoded at two sizes never shares a key.
   */
  key: string;
  width: number;
  height: number;
  /** width * height * 3 bytes, RGB, rows top to bottom. Shared by cached copies: do not modify. */
  rgb: Buffer;
  /** The path it was read from; absent for in-memory input. */
  source?: string;
}

export type ImageInput = string | Buffer | Uint8Array;

export interface LoadImageOptions {
  /** Downscale images with more pixels than this (default: keep every image at full size). */
  maxPixels?: number;
}

export async function loadImage(input: ImageInput, options: LoadImageOptions = {}): Promise<DecodedImage> {
  const maxPixels = is.optional(options.maxPixels, (v) => is.positiveInteger('maxPixels', v));
  const source = await readSource(input);
  return decode(source, contentHash(source.bytes), maxPixels);
}

// ---- reading and decoding -----------------------------------------------------------------------

interface Source {
  bytes: Buffer;
  /** The path, for DecodedImage.source. */
  path?: string;
  /** How the image is named in messages. */
  label: string;
}

async function readSource(input: ImageInput): Promise<Source> {
  if (typeof input === 'string') {
    const label = `image ${input}`;
    let bytes: Buffer;
    try {
      bytes = await readFile(input);
    } catch (e) {
      throw fileError(e, label);
    }
    if (bytes.length === 0) throw new VisplayError('ERR_IMAGE_EMPTY', `${label} is empty (0 bytes)`);
    return { bytes, path: input, label };
  }
  if (input instanceof Uint8Array) {
    // A Buffer is a Uint8Array; a plain one is wrapped without copying.
    const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    if (bytes.length === 0) throw new VisplayError('ERR_IMAGE_EMPTY', 'image buffer is empty (0 bytes)');
    return { bytes, label: `image buffer (${bytes.length} bytes)` };
  }
  throw is.invalidArg('image', 'file path, Buffer or Uint8Array', input);
}

function contentHash(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

async function decode(source: Source, hash: string, maxPixels: number | undefined): Promise<DecodedImage> {
  let rgb: Buffer;
  let width: number;
  let height: number;
  let resized = false;
  try {
    const image = sharp(source.bytes);
    // Dimensions as displayed, i.e. after the EXIF rotation that .rotate() applies below.
    const { width: shownWidth, height: shownHeight } = (await image.metadata()).autoOrient;
    let pipeline = image.rotate().flatten({ background: '#ffffff' });
    if (maxPixels !== undefined && shownWidth * shownHeight > maxPixels) {
      const scale = Math.sqrt(maxPixels / (shownWidth * shownHeight));
      pipeline = pipeline.resize({
        width: Math.max(1, Math.floor(shownWidth * scale)),
        height: Math.max(1, Math.floor(shownHeight * scale)),
        fit: 'inside',
        withoutEnlargement: true,
      });
      resized = true;
    }
    const { data, info } = await pipeline.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    ({ width, height } = info);
    if (info.channels !== 3 || data.length !== width * height * 3) {
      throw new Error(`expected ${width}x${height} RGB but got ${info.channels} channels in ${data.length} bytes`);
    }
    rgb = data;
  } catch (e) {
    throw new VisplayError('ERR_IMAGE_DECODE', `${source.label} does not decode: ${(e as Error).message}`, { cause: e });
  }
  const key = resized ? `${hash}:${width}x${height}` : hash;
  return source.path === undefined ? { key, width, height, rgb } : { key, width, height, rgb, source: source.path };
}

// ---- cache --------------------------------------------------------------------------------------

export interface ImageCacheOptions {
  /** Most images kept (default 256). */
  maxEntries?: number;
  /** Most RGB bytes kept (default 512 MiB). */
  maxBytes?: number;
}

export interface ImageCacheStats {
  /** Loads answered from the cache (including ones that joined a decode in flight). */
  hits: number;
  /** Loads that decoded. */
  misses: number;
  evictions: number;
}

interface CacheEntry {
  image: Promise<DecodedImage>;
  /** RGB bytes once decoded; 0 while in flight. */
  bytes: number;
}

/**
 * Decodes each distinct image once: entries are keyed by the hash of the source bytes (and the
 * size limit), so the same picture under two paths, or as a path and a Buffer, is decoded once.
 * Loads of an image already being decoded wait for that decode. Least recently used images are
 * dropped beyond `maxEntries` or `maxBytes`.
 */
export class ImageCache {
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly #entries = new Map<string, CacheEntry>(); // in use order: least recent first
  #bytes = 0;
  readonly #stats: ImageCacheStats = { hits: 0, misses: 0, evictions: 0 };

  constructor(options: ImageCacheOptions = {}) {
    this.maxEntries = is.optional(options.maxEntries, (v) => is.positiveInteger('maxEntries', v)) ?? 256;
    this.maxBytes = is.optional(options.maxBytes, (v) => is.positiveInteger('maxBytes', v)) ?? 512 * 1024 * 1024;
  }

  get stats(): Readonly<ImageCacheStats> {
    return { ...this.#stats };
  }

  get size(): number {
    return this.#entries.size;
  }

  async load(input: ImageInput, options: LoadImageOptions = {}): Promise<DecodedImage> {
    const maxPixels = is.optional(options.maxPixels, (v) => is.positiveInteger('maxPixels', v));
    const source = await readSource(input);
    const hash = contentHash(source.bytes);
    const cacheKey = `${hash}/${maxPixels ?? 'full'}`;

    const hit = this.#entries.get(cacheKey);
    if (hit) {
      this.#entries.delete(cacheKey); // re-insert: now the most recently used
      this.#entries.set(cacheKey, hit);
      this.#stats.hits++;
      return withSource(await hit.image, source.path);
    }

    this.#stats.misses++;
    const entry: CacheEntry = { image: decode(source, hash, maxPixels), bytes: 0 };
    this.#entries.set(cacheKey, entry);
    try {
      const image = await entry.image;
      if (this.#entries.get(cacheKey) === entry) { // not evicted while decoding
        entry.bytes = image.rgb.length;
        this.#bytes += entry.bytes;
        this.#evict();
      }
      return withSource(image, source.path);
    } catch (e) {
      if (this.#entries.get(cacheKey) === entry) this.#entries.delete(cacheKey); // let a retry decode anew
      throw e;
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  #evict(): void {
    for (const [key, entry] of this.#entries) {
      if (this.#entries.size <= this.maxEntries && this.#bytes <= this.maxBytes) break;
      if (this.#entries.size === 1) break; // keep the image just loaded, even when it alone is over
      this.#entries.delete(key);
      this.#bytes -= entry.bytes;
      this.#stats.evictions++;
    }
  }
}

/** The cached image as this caller named it; pixels are shared, not copied. */
function withSource(image: DecodedImage, path: string | undefined): DecodedImage {
  if (image.source === path) return image;
  const { source: _, ...pixels } = image;
  return path === undefined ? pixels : { ...pixels, source: path };
}
