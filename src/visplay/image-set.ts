// The unlabeled images of a run: a folder (searched recursively) or a JSONL manifest
// ({"image": "path"} per line, paths relative to the manifest's folder). Every image is decoded
// once up front, so a file that does not decode is skipped, counted and listed in the run's
// manifest instead of failing an iteration later; a run without a usable image stops here.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, extname, isAbsolute, join, relative, resolve } from 'node:path';
import { VisplayError } from '../errors.js';
import { loadImage } from '../images.js';

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp']);

export interface RunImage {
  /** Absolute path. */
  file: string;
  /** Path as recorded: relative to the folder or manifest. */
  path: string;
  /** sha256 of the decoded pixels (the rollout engine's image key). */
  hash: string;
}

export interface ImageSet {
  images: RunImage[];
  skipped: Array<{ path: string; reason: string }>;
  root?: string;
  manifest?: string;
}

/** Lists and checks the images of `source` (a folder or a .jsonl manifest). */
export async function loadImageSet(source: string, options: { maxPixels?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<ImageSet> {
  const abs = resolve(source);
  if (!existsSync(abs)) throw new VisplayError('ERR_FILE_NOT_FOUND', `image folder or manifest not found: ${abs}`);
  const skipped: ImageSet['skipped'] = [];
  let candidates: Array<{ file: string; path: string }>;
  let root: string | undefined;
  let manifest: string | undefined;
  if (statSync(abs).isDirectory()) {
    root = abs;
    candidates = walk(abs).map((file) => ({ file, path: relative(abs, file) }));
  } else {
    manifest = abs;
    candidates = [];
    const base = dirname(abs);
    readFileSync(abs, 'utf8').split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      const where = `${source} line ${i + 1}`;
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        skipped.push({ path: where, reason: 'not valid JSON' });
        return;
      }
      const image = (entry as { image?: unknown })?.image;
      if (typeof image !== 'string' || image === '') {
        skipped.push({ path: where, reason: 'no "image" string field' });
        return;
      }
      candidates.push({ file: isAbsolute(image) ? image : join(base, image), path: image });
    });
  }
  const images: RunImage[] = [];
  const seen = new Set<string>();
  for (const [i, c] of candidates.entries()) {
    try {
      const decoded = await loadImage(c.file, { maxPixels: options.maxPixels });
      if (seen.has(decoded.key)) {
        skipped.push({ path: c.path, reason: 'duplicate of an earlier image (same pixels)' });
      } else {
        seen.add(decoded.key);
        images.push({ file: c.file, path: c.path, hash: decoded.key });
      }
    } catch (e) {
      skipped.push({ path: c.path, reason: (e as Error).message });
    }
    options.onProgress?.(i + 1, candidates.length);
  }
  if (images.length === 0) {
    const why = candidates.length === 0 ? 'no image files were found' : `none of its ${candidates.length} images decodes`;
    throw new VisplayError('ERR_INVALID_ARG', `${source}: ${why}; VisPlay needs at least one usable image`);
  }
  return { images, skipped, root, manifest };
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.name.startsWith('.')) continue;
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walk(p));
    else if (entry.isFile() && IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) out.push(p);
  }
  return out;
}
