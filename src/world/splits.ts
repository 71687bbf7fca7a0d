// The world on disk: a labelled pre-training split, an unlabelled image pool for VisPlay and a
// held-out labelled test split, each from its own seed stream and disjoint by scene content.
//
// DIR/
//   world.json        WorldManifest: seed, counts, size, vocabulary, answer balance (written last)
//   pretrain.jsonl    labelled items: the eval bench fields plus id, family and seed
//   pool.jsonl        {"image": "images/pool/000000.png"} per line (image-set.ts's manifest)
//   test.jsonl        eval bench lines (eval.ts parseBenchItem): image, question, options?, answer, type,
//                     plus id and family (ignored by the bench reader)
//   images/<split>/NNNNNN.png
//
// Item i of a split has the family FAMILIES[i mod 5] and that family's plan for k = floor(i / 5)
// (questions.ts planFor), so every split is balanced by construction. A split's scenes depend only on
// (seed, split, index): the test split is the same whatever the sizes of the other two, except in the
// (never observed) case that a scene repeats one of an earlier split, which is then drawn again.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import * as check from '../validate.js';
import {
  BACKGROUND_RGB, COLOUR_RGB, DEFAULT_CLUTTER, DEFAULT_SCENE_SIZE, REFERENCE_SIZE, SHAPES, SIZE_RADIUS, SIZES, clutterRange, deriveSeed,
  hexColour, renderScene, sceneHash, type Scene,
} from './generator.js';
import { FAMILIES, benchType, makeItem, planFor, type QuestionFamily, type WorldItem } from './questions.js';

export const SPLITS = ['pretrain', 'pool', 'test'] as const;
export type SplitName = (typeof SPLITS)[number];

/** Bumped whenever the same options would give other scenes, questions or pixels. */
export const WORLD_VERSION = 1;

export interface WorldOptions {
  /** Labelled pre-training items (one image each). Default 2000. */
  pretrain?: number;
  /** Unlabelled pool images. Default 2000. */
  pool?: number;
  /** Held-out labelled test items (one image each). Default 600. */
  test?: number;
  /** Default 0. */
  seed?: number;
  /** Image width = height in pixels. Default 224. */
  size?: number;
  /** Chance of an object overlapping another (0 to 1). Default 0: no overlaps. */
  occlusion?: number;
  /** Clutter objects per scene, [min, max]. Default [1, 4]. */
  clutter?: readonly [number, number];
}

export interface ResolvedWorldOptions {
  pretrain: number;
  pool: number;
  test: number;
  seed: number;
  size: number;
  occlusion: number;
  clutter: readonly [number, number];
}

export const DEFAULT_WORLD: ResolvedWorldOptions = { pretrain: 2000, pool: 2000, test: 600, seed: 0, size: DEFAULT_SCENE_SIZE, occlusion: 0, clutter: DEFAULT_CLUTTER };

export function resolveWorldOptions(options: WorldOptions = {}): ResolvedWorldOptions {
  const count = (name: SplitName) => check.optional(options[name], (v) => check.integer(name, v, 0, 1_000_000)) ?? DEFAULT_WORLD[name];
  return {
    pretrain: count('pretrain'),
    pool: count('pool'),
    test: count('test'),
    seed: check.optional(options.seed, (v) => check.integer('seed', v, 0, 0xffffffff)) ?? DEFAULT_WORLD.seed,
    size: check.optional(options.size, (v) => check.integer('size', v, 32, 4096)) ?? DEFAULT_WORLD.size,
    occlusion: check.optional(options.occlusion, (v) => check.number('occlusion', v, 0, 1)) ?? DEFAULT_WORLD.occlusion,
    clutter: check.optional(options.clutter, (v) => worldClutter(v)) ?? DEFAULT_WORLD.clutter,
  };
}

/** Spatial questions relate two objects: a world's scenes need room for at least one clutter object. */
function worldClutter(value: unknown): readonly [number, number] {
  const range = clutterRange('clutter', value);
  if (range[1] < 1) throw check.invalidArg('clutter', '[min, max] with max >= 1 (spatial questions need a second object)', value);
  return range;
}

export interface PoolImage {
  id: string;
  seed: number;
  /** The family whose layout the scene has (the pool mirrors the test distribution); no question. */
  family: QuestionFamily;
  scene: Scene;
}

export interface World {
  options: ResolvedWorldOptions;
  pretrain: WorldItem[];
  pool: PoolImage[];
  test: WorldItem[];
}

/** Path of a split's image, relative to the world folder. */
export function imagePath(split: SplitName, index: number): string {
  return `images/${split}/${String(index).padStart(6, '0')}.png`;
}

function itemId(split: SplitName, index: number): string {
  return `${split}-${String(index).padStart(6, '0')}`;
}

/** The three splits in memory (no pixels): deterministic in the options. */
export function generateWorld(options: WorldOptions = {}): World {
  const o = resolveWorldOptions(options);
  const base = { size: o.size, occlusion: o.occlusion, clutter: o.clutter };
  const seen = new Set<string>();
  const split = <T extends { scene: Scene }>(name: SplitName, n: number, make: (seed: number, family: QuestionFamily, k: number, index: number) => T): T[] => {
    const splitSeed = deriveSeed('visplay-world', WORLD_VERSION, o.seed, name);
    const out: T[] = [];
    for (let i = 0; i < n; i++) {
      const family = FAMILIES[i % FAMILIES.length]!;
      const k = Math.floor(i / FAMILIES.length);
      for (let redraw = 0; ; redraw++) {
        const value = make(deriveSeed(splitSeed, i, redraw), family, k, i);
        const hash = sceneHash(value.scene);
        if (seen.has(hash)) continue;
        seen.add(hash);
        out.push(value);
        break;
      }
    }
    return out;
  };
  const items = (name: SplitName, n: number) => split(name, n, (seed, family, k, i) => makeItem(seed, planFor(family, k), base, itemId(name, i)));
  const pretrain = items('pretrain', o.pretrain);
  const pool = split('pool', o.pool, (seed, family, k, i): PoolImage => ({
    id: itemId('pool', i), seed, family, scene: makeItem(seed, planFor(family, k), base).scene,
  }));
  const test = items('test', o.test);
  return { options: o, pretrain, pool, test };
}

/** One bench line of a labelled item (eval.ts parseBenchItem's fields, then ours). */
export function benchLine(item: WorldItem, image: string): Record<string, unknown> {
  return {
    id: item.id,
    image,
    question: item.question,
    ...(item.options ? { options: item.options } : {}),
    answer: item.answer,
    type: benchType(item),
    family: item.family,
  };
}

export interface WorldManifest {
  version: number;
  seed: number;
  size: number;
  occlusion: number;
  clutter: readonly [number, number];
  counts: Record<SplitName, number>;
  files: { pretrain: string; pool: string; test: string; images: string };
  vocabulary: {
    shapes: readonly string[];
    colours: Record<string, string>;
    background: string;
    /** Radius r of each size class on this canvas, pixels. */
    sizes: Record<string, number>;
    families: readonly string[];
  };
  /** Per labelled split: items per family and per answer. */
  balance: Record<'pretrain' | 'test', { families: Record<string, number>; answers: Record<string, number> }>;
}

export interface WriteWorldOptions {
  /** Images rendered at once (default: twice the number of CPUs, at least 4). */
  concurrency?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Writes the world to `dir` (created if needed; files of an earlier world with the same names are
 * replaced): every image, the three JSONL files and, last, world.json. The same options give
 * byte-identical files.
 */
export async function writeWorld(dir: string, options: WorldOptions = {}, write: WriteWorldOptions = {}): Promise<WorldManifest> {
  check.nonEmptyString('dir', dir);
  // Twice the CPUs: while sharp renders on its threads, other jobs encode and write files.
  const concurrency = check.optional(write.concurrency, (v) => check.integer('concurrency', v, 1, 256)) ?? Math.max(4, 2 * availableParallelism());
  const world = generateWorld(options);
  const o = world.options;
  for (const s of SPLITS) await mkdir(join(dir, 'images', s), { recursive: true });

  const jobs: Array<{ scene: Scene; path: string }> = [
    ...world.pretrain.map((item, i) => ({ scene: item.scene, path: imagePath('pretrain', i) })),
    ...world.pool.map((image, i) => ({ scene: image.scene, path: imagePath('pool', i) })),
    ...world.test.map((item, i) => ({ scene: item.scene, path: imagePath('test', i) })),
  ];
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      await writeFile(join(dir, job.path), await renderScene(job.scene, o.size));
      write.onProgress?.(++done, jobs.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));

  const jsonl = (lines: unknown[]) => lines.map((l) => `${JSON.stringify(l)}\n`).join('');
  await atomicWrite(join(dir, 'pretrain.jsonl'), jsonl(world.pretrain.map((item, i) => ({ ...benchLine(item, imagePath('pretrain', i)), seed: item.seed }))));
  await atomicWrite(join(dir, 'pool.jsonl'), jsonl(world.pool.map((_, i) => ({ image: imagePath('pool', i) }))));
  await atomicWrite(join(dir, 'test.jsonl'), jsonl(world.test.map((item, i) => benchLine(item, imagePath('test', i)))));

  const k = o.size / REFERENCE_SIZE;
  const manifest: WorldManifest = {
    version: WORLD_VERSION,
    seed: o.seed,
    size: o.size,
    occlusion: o.occlusion,
    clutter: o.clutter,
    counts: { pretrain: o.pretrain, pool: o.pool, test: o.test },
    files: { pretrain: 'pretrain.jsonl', pool: 'pool.jsonl', test: 'test.jsonl', images: 'images' },
    vocabulary: {
      shapes: SHAPES,
      colours: Object.fromEntries(Object.entries(COLOUR_RGB).map(([name, rgb]) => [name, hexColour(rgb)])),
      background: hexColour(BACKGROUND_RGB),
      sizes: Object.fromEntries(SIZES.map((s) => [s, Math.round(SIZE_RADIUS[s] * k * 100) / 100])),
      families: FAMILIES,
    },
    balance: { pretrain: balance(world.pretrain), test: balance(world.test) },
  };
  await atomicWrite(join(dir, 'world.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** Items per family and per answer, keys sorted. */
export function balance(items: readonly WorldItem[]): { families: Record<string, number>; answers: Record<string, number> } {
  const tally = (keys: string[]) => {
    const counts: Record<string, number> = {};
    for (const key of [...keys].sort()) counts[key] = (counts[key] ?? 0) + 1;
    return counts;
  };
  return { families: tally(items.map((i) => i.family)), answers: tally(items.map((i) => i.answer)) };
}

async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}
