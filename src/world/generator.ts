// A synthetic world of flat shapes whose every fact is known: the scene model (objects with shape,
// colour, size, position), a seeded PRNG so a scene is a function of its seed, a rasterizer that
// answers "which object owns this pixel" in the scene model's own geometry, and the renderer
// (SVG -> PNG via sharp) that draws exactly that geometry.
//
//   Rng, deriveSeed          mulberry32 and a hash of labelled parts into a 32-bit seed
//   makeScene                objects placed so that each one stays countable
//   objectGeometry           the circle or polygon an object is, in canvas pixels (shared by SVG and raster)
//   rasterizeScene           per pixel: the object seen there, the object whose exact colour it shows
//   sceneSvg, renderScene    the picture
//   sceneHash                identity of a scene's content (split disjointness)
//
// Countability is a property of the scene model, checked when the scene is made: objects of one
// colour never overlap and keep a gap (so each is its own blob of that colour); with occlusion off
// no two objects overlap at all; with occlusion on an object may cover one of another colour, as
// long as every object keeps at least 60 % of its area visible in one piece, and its solid
// (exact-colour) pixels in one piece too: no sliver cut off, no part joined only by a neck of
// anti-aliased edge pixels (rasterizeScene's `solidPieces`).
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { VisplayError } from '../errors.js';
import * as check from '../validate.js';

// ---- vocabulary ---------------------------------------------------------------------------------

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'hexagon', 'diamond'] as const;
export type Shape = (typeof SHAPES)[number];

export const COLOURS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange'] as const;
export type Colour = (typeof COLOURS)[number];

export type Rgb = readonly [number, number, number];

/** Fixed sRGB values, at least 100 apart (Euclidean) from each other and from the background. */
export const COLOUR_RGB: Readonly<Record<Colour, Rgb>> = {
  red: [225, 25, 35],
  green: [40, 170, 60],
  blue: [35, 75, 225],
  yellow: [240, 225, 30],
  purple: [150, 45, 185],
  orange: [250, 125, 15],
};

export const BACKGROUND_RGB: Rgb = [240, 240, 240];

export const SIZES = ['small', 'medium', 'large'] as const;
export type SizeName = (typeof SIZES)[number];

/** The canvas the pixel constants below are given for; they scale with the canvas. */
export const REFERENCE_SIZE = 224;

/** Each size class's radius r in pixels on a 224-pixel canvas (a circle's radius; other shapes scale with it). */
export const SIZE_RADIUS: Readonly<Record<SizeName, number>> = { small: 9, medium: 13, large: 18 };

/**
 * Circumradius of each shape as a multiple of r, chosen so that every shape covers about the area of
 * the circle of radius r (2.7-3.1 r^2): a large star is not much bigger than a large circle.
 */
export const SHAPE_EXTENT: Readonly<Record<Shape, number>> = {
  circle: 1,
  square: 1.2, // half side 0.85 r
  triangle: 1.4, // equilateral, pointing up
  star: 1.4, // five points, inner radius half the outer
  hexagon: 1.08,
  diamond: 1.5, // rhombus, half width 0.62 of half height
};

/** Rotation jitter of polygons in degrees (either way): small, so a square never reads as a diamond. */
const ROTATION_JITTER = 12;

/** Minimum share of an object left visible when another covers it. */
export const MIN_VISIBLE = 0.6;

export const DEFAULT_SCENE_SIZE = REFERENCE_SIZE;
export const DEFAULT_CLUTTER: readonly [number, number] = [1, 4];
export const MAX_TARGET_COUNT = 6;

// ---- the PRNG -----------------------------------------------------------------------------------

/** mulberry32: a small, fast, seedable uniform generator (period 2^32), enough for scene layout. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi], both included. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(list: readonly T[]): T {
    if (list.length === 0) throw new VisplayError('ERR_INTERNAL', 'Rng.pick from an empty list');
    return list[Math.floor(this.next() * list.length)]!;
  }

  /** A shuffled copy (Fisher-Yates). */
  shuffled<T>(list: readonly T[]): T[] {
    const out = [...list];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

/**
 * A 32-bit seed from labelled parts (FNV-1a over the parts, then murmur3's finalizer), so that
 * deriveSeed(world, 'test', 17) and deriveSeed(world, 'pool', 17) are unrelated streams.
 */
export function deriveSeed(...parts: ReadonlyArray<number | string>): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    const s = typeof part === 'number' ? `n${part}` : `s${part}`;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h ^= 0xff; // separator: ('ab') differs from ('a', 'b')
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---- the scene model ----------------------------------------------------------------------------

export interface SceneObject {
  shape: Shape;
  colour: Colour;
  size: SizeName;
  /** Centre in canvas pixels, origin top left, y down. */
  x: number;
  y: number;
  /** The size class's radius on this canvas, pixels; the shape's circumradius is SHAPE_EXTENT[shape] * r. */
  r: number;
  /** Degrees, clockwise (0 for circles). */
  rotation: number;
  /** 'target': an object of the scene's target class; 'clutter': anything else. */
  role: 'target' | 'clutter';
}

export interface Scene {
  /** Canvas width = height in pixels: the frame of the coordinates (rendering may scale). */
  size: number;
  /** The class the scene was built around: `count` objects of this shape and colour (1 to 6). */
  target: { shape: Shape; colour: Colour; count: number };
  /** In drawing order: a later object is drawn on top of an earlier one. */
  objects: SceneObject[];
}

export interface SceneOptions {
  /** Canvas size in pixels (default 224: 16x16 patches of 14, 8x8 image tokens after the 2x2 merger). */
  size?: number;
  /** Objects of the target class, 1 to 6 (default: uniform). */
  targetCount?: number;
  /** The target class (default: uniform over the vocabulary). */
  targetShape?: Shape;
  targetColour?: Colour;
  /** Clutter objects (never of the target class): [min, max], each 0 to 12 (default [1, 4]). */
  clutter?: readonly [number, number];
  /** No clutter object has the target's shape (then "the <shape>" names the target when count = 1). */
  uniqueShape?: boolean;
  /** No clutter object has the target's colour. */
  uniqueColour?: boolean;
  /**
   * Chance that an object is placed to overlap an earlier one of another colour (0 to 1, default 0 =
   * no overlaps at all). Covered objects keep >= 60 % of their area visible, in one piece.
   */
  occlusion?: number;
}

/** Scene options with defaults filled in and checked. */
export interface ResolvedSceneOptions {
  size: number;
  targetCount?: number;
  targetShape?: Shape;
  targetColour?: Colour;
  clutter: readonly [number, number];
  uniqueShape: boolean;
  uniqueColour: boolean;
  occlusion: number;
}

export function resolveSceneOptions(options: SceneOptions = {}): ResolvedSceneOptions {
  const size = check.optional(options.size, (v) => check.integer('size', v, 32, 4096)) ?? DEFAULT_SCENE_SIZE;
  const targetCount = check.optional(options.targetCount, (v) => check.integer('targetCount', v, 1, MAX_TARGET_COUNT));
  const targetShape = check.optional(options.targetShape, (v) => check.oneOf('targetShape', v, SHAPES));
  const targetColour = check.optional(options.targetColour, (v) => check.oneOf('targetColour', v, COLOURS));
  const clutter = check.optional(options.clutter, (v) => clutterRange('clutter', v)) ?? DEFAULT_CLUTTER;
  const uniqueShape = check.optional(options.uniqueShape, (v) => check.boolean('uniqueShape', v)) ?? false;
  const uniqueColour = check.optional(options.uniqueColour, (v) => check.boolean('uniqueColour', v)) ?? false;
  const occlusion = check.optional(options.occlusion, (v) => check.number('occlusion', v, 0, 1)) ?? 0;
  return { size, targetCount, targetShape, targetColour, clutter, uniqueShape, uniqueColour, occlusion };
}

export function clutterRange(name: string, value: unknown): readonly [number, number] {
  if (!Array.isArray(value) || value.length !== 2) throw check.invalidArg(name, '[min, max] with 0 <= min <= max <= 12', value);
  const min = check.integer(`${name}[0]`, value[0], 0, 12);
  const max = check.integer(`${name}[1]`, value[1], min, 12);
  return [min, max];
}

/** Pixel constants at a canvas size. */
function scale(size: number): { gap: number; edge: number } {
  const k = size / REFERENCE_SIZE;
  // gap: between objects that must not touch (same colour, or any two with occlusion off), wide
  // enough that anti-aliased edges never join two blobs; edge: distance kept from the border.
  return { gap: Math.max(2, 3.5 * k), edge: Math.max(1, 2 * k) };
}

/** The distance of an object's farthest point from its centre. */
export function extent(o: Pick<SceneObject, 'shape' | 'r'>): number {
  return SHAPE_EXTENT[o.shape] * o.r;
}

const ATTEMPTS_PER_OBJECT = 200;
const ATTEMPTS_PER_SCENE = 50;

/**
 * A scene with `targetCount` objects of the target class and some clutter, every object inside the
 * canvas and countable (see the file comment). Deterministic in `rng`'s state; a layout that does
 * not fit is drawn again from the same stream.
 */
export function makeScene(rng: Rng, options: SceneOptions = {}): Scene {
  const o = resolveSceneOptions(options);
  for (let attempt = 0; attempt < ATTEMPTS_PER_SCENE; attempt++) {
    const scene = tryScene(rng, o);
    if (scene) return scene;
  }
  throw new VisplayError('ERR_INTERNAL',
    `could not lay out a scene of ${o.size} px with up to ${MAX_TARGET_COUNT + o.clutter[1]} objects in ${ATTEMPTS_PER_SCENE} attempts; use a larger size or less clutter`);
}

interface Spec {
  shape: Shape;
  colour: Colour;
  role: SceneObject['role'];
}

function tryScene(rng: Rng, o: ResolvedSceneOptions): Scene | null {
  const shape = o.targetShape ?? rng.pick(SHAPES);
  const colour = o.targetColour ?? rng.pick(COLOURS);
  const count = o.targetCount ?? rng.int(1, MAX_TARGET_COUNT);
  const specs: Spec[] = Array.from({ length: count }, () => ({ shape, colour, role: 'target' as const }));
  const clutterShapes = SHAPES.filter((s) => !o.uniqueShape || s !== shape);
  const clutterColours = COLOURS.filter((c) => !o.uniqueColour || c !== colour);
  const nClutter = rng.int(o.clutter[0], o.clutter[1]);
  for (let i = 0; i < nClutter; i++) {
    // Half the clutter shares an attribute with the target, so that counting "red circles" needs
    // both words: red squares and blue circles are the distractors that matter.
    let spec: Spec;
    const share = rng.next();
    if (share < 0.25 && clutterShapes.includes(shape)) spec = { shape, colour: rng.pick(clutterColours.filter((c) => c !== colour)), role: 'clutter' };
    else if (share < 0.5 && clutterColours.includes(colour)) spec = { shape: rng.pick(clutterShapes.filter((s) => s !== shape)), colour, role: 'clutter' };
    else {
      do {
        spec = { shape: rng.pick(clutterShapes), colour: rng.pick(clutterColours), role: 'clutter' };
      } while (spec.shape === shape && spec.colour === colour);
    }
    specs.push(spec);
  }

  const { gap, edge } = scale(o.size);
  const k = o.size / REFERENCE_SIZE;
  const objects: SceneObject[] = [];
  for (const spec of rng.shuffled(specs)) {
    const size = rng.pick(SIZES);
    const r = round2(SIZE_RADIUS[size] * k);
    const rotation = spec.shape === 'circle' ? 0 : round2(rng.range(-ROTATION_JITTER, ROTATION_JITTER));
    const ext = SHAPE_EXTENT[spec.shape] * r;
    const lo = ext + edge;
    const hi = o.size - ext - edge;
    if (hi <= lo) return null;
    let placed = false;
    for (let attempt = 0; attempt < ATTEMPTS_PER_OBJECT && !placed; attempt++) {
      let x: number;
      let y: number;
      const others = objects.filter((p) => p.colour !== spec.colour);
      const overlapping = o.occlusion > 0 && others.length > 0 && rng.chance(o.occlusion);
      if (overlapping) {
        // Next to an object of another colour, close enough that the two overlap.
        const p = rng.pick(others);
        const angle = rng.range(0, 2 * Math.PI);
        const d = (extent(p) + ext) * rng.range(0.55, 0.95);
        x = p.x + d * Math.cos(angle);
        y = p.y + d * Math.sin(angle);
        if (x < lo || x > hi || y < lo || y > hi) continue;
      } else {
        x = rng.range(lo, hi);
        y = rng.range(lo, hi);
      }
      const candidate: SceneObject = { shape: spec.shape, colour: spec.colour, size, x: round2(x), y: round2(y), r, rotation, role: spec.role };
      let overlaps = false;
      let clash = false;
      for (const p of objects) {
        const apart = Math.hypot(p.x - candidate.x, p.y - candidate.y) - extent(p) - ext;
        if (apart >= gap) continue;
        if (p.colour === candidate.colour || o.occlusion === 0) {
          clash = true;
          break;
        }
        overlaps = true;
      }
      if (clash) continue;
      if (overlaps && !allCountable({ size: o.size, objects: [...objects, candidate] })) continue;
      objects.push(candidate);
      placed = true;
    }
    if (!placed) return null;
  }
  return { size: o.size, target: { shape, colour, count }, objects };
}

/** Every object keeps >= MIN_VISIBLE of its pixels visible, in one piece, and its solid pixels in one piece. */
function allCountable(scene: Pick<Scene, 'size' | 'objects'>): boolean {
  const raster = rasterizeScene(scene);
  return raster.objects.every((v) => v.area > 0 && v.visible / v.area >= MIN_VISIBLE && v.pieces === 1 && v.solidPieces === 1);
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}

// ---- geometry and raster ------------------------------------------------------------------------

export type Geometry =
  | { kind: 'circle'; cx: number; cy: number; r: number }
  | { kind: 'polygon'; points: Array<readonly [number, number]> };

/** The object's outline in canvas pixels (vertices rounded to 0.01 px: SVG and raster use the same numbers). */
export function objectGeometry(o: SceneObject): Geometry {
  if (o.shape === 'circle') return { kind: 'circle', cx: o.x, cy: o.y, r: o.r };
  // Unit outlines, y down, before rotation: angle 0 points right, -90 points up.
  let unit: Array<readonly [number, number]>;
  switch (o.shape) {
    case 'square': {
      const h = 0.85;
      unit = [[-h, -h], [h, -h], [h, h], [-h, h]];
      break;
    }
    case 'triangle':
      unit = polar([-90, 30, 150], SHAPE_EXTENT.triangle);
      break;
    case 'hexagon':
      unit = polar([0, 60, 120, 180, 240, 300], SHAPE_EXTENT.hexagon);
      break;
    case 'diamond': {
      const a = SHAPE_EXTENT.diamond;
      const b = 0.62 * a;
      unit = [[0, -a], [b, 0], [0, a], [-b, 0]];
      break;
    }
    case 'star': {
      const outer = SHAPE_EXTENT.star;
      unit = Array.from({ length: 10 }, (_, i) => {
        const radius = i % 2 === 0 ? outer : outer / 2;
        const angle = ((-90 + 36 * i) * Math.PI) / 180;
        return [radius * Math.cos(angle), radius * Math.sin(angle)] as const;
      });
      break;
    }
  }
  const t = (o.rotation * Math.PI) / 180;
  const cos = Math.cos(t);
  const sin = Math.sin(t);
  return {
    kind: 'polygon',
    points: unit.map(([ux, uy]) => [round2(o.x + o.r * (ux * cos - uy * sin)), round2(o.y + o.r * (ux * sin + uy * cos))] as const),
  };
}

function polar(degrees: number[], radius: number): Array<readonly [number, number]> {
  return degrees.map((d) => [radius * Math.cos((d * Math.PI) / 180), radius * Math.sin((d * Math.PI) / 180)] as const);
}

/** Whether the point (px, py) is inside the outline (even-odd rule; the star is not convex). */
export function insideGeometry(g: Geometry, px: number, py: number): boolean {
  if (g.kind === 'circle') return (px - g.cx) ** 2 + (py - g.cy) ** 2 <= g.r * g.r;
  let inside = false;
  const pts = g.points;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    const a = pts[i]!;
    const b = pts[j]!;
    const yi = a[1];
    const yj = b[1];
    if (yi > py !== yj > py && px < ((b[0] - a[0]) * (py - yi)) / (yj - yi) + a[0]) inside = !inside;
  }
  return inside;
}

/** Whether the outline contains the whole pixel square [x, x+1] x [y, y+1]. */
export function containsSquare(g: Geometry, x: number, y: number): boolean {
  const corners = [[x, y], [x + 1, y], [x, y + 1], [x + 1, y + 1]] as const;
  if (!corners.every(([cx, cy]) => insideGeometry(g, cx, cy))) return false;
  if (g.kind === 'circle') return true; // convex: the corners decide
  // A simple polygon whose boundary enters the square while all four corners are inside has a
  // (concave) vertex inside the square: the star's notches.
  return !g.points.some(([px, py]) => px > x && px < x + 1 && py > y && py < y + 1);
}

/** Whether the outline and the open pixel square (x, x+1) x (y, y+1) share a point. */
export function meetsSquare(g: Geometry, x: number, y: number): boolean {
  if (g.kind === 'circle') {
    const dx = g.cx - Math.max(x, Math.min(g.cx, x + 1));
    const dy = g.cy - Math.max(y, Math.min(g.cy, y + 1));
    return dx * dx + dy * dy < g.r * g.r;
  }
  const pts = g.points;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
    if (segmentMeetsSquare(pts[j]![0], pts[j]![1], pts[i]![0], pts[i]![1], x, y)) return true;
  }
  // No edge enters the square: it is wholly inside or wholly outside the polygon.
  return insideGeometry(g, x + 0.5, y + 0.5);
}

/** Liang-Barsky: whether the segment (x0, y0)-(x1, y1) passes through the open unit square at (x, y). */
function segmentMeetsSquare(x0: number, y0: number, x1: number, y1: number, x: number, y: number): boolean {
  let t0 = 0;
  let t1 = 1;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const clip = (p: number, q: number): boolean => {
    // The part of the segment with p * t < q.
    if (p === 0) return q > 0;
    const t = q / p;
    if (p < 0) {
      if (t > t0) t0 = t;
    } else if (t < t1) t1 = t;
    return t0 < t1;
  };
  return clip(-dx, x0 - x) && clip(dx, x + 1 - x0) && clip(-dy, y0 - y) && clip(dy, y + 1 - y0);
}

export interface SceneRaster {
  size: number;
  /** size * size: index of the topmost object covering the pixel's centre, -1 for background. */
  owner: Int16Array;
  /**
   * size * size: the object that contains the whole pixel with no later-drawn object touching it,
   * else -1. A renderer fills exactly these pixels with the object's exact colour (and may round a
   * few nearly covered edge pixels to it); anti-aliased edge pixels are not solid.
   */
  solid: Int16Array;
  /**
   * Per object: pixels inside its outline (area), pixels where it is on top (visible), the visible
   * part's 8-connected pieces, and the 8-connected pieces of its solid pixels. A part cut off by an
   * occluder, or joined to the rest only by a neck of edge pixels, is a second solid piece:
   * segmented by colour, it would read as another object.
   */
  objects: Array<{ area: number; visible: number; pieces: number; solidPieces: number }>;
}

/**
 * The scene on its own pixel grid: which object a viewer sees where (pixel centres), and which
 * pixels show an object's exact colour (whole pixel squares). The truth behind "countable".
 */
export function rasterizeScene(scene: Pick<Scene, 'size' | 'objects'>): SceneRaster {
  const n = scene.size;
  const owner = new Int16Array(n * n).fill(-1);
  const solid = new Int16Array(n * n).fill(-1);
  const area = new Array<number>(scene.objects.length).fill(0);
  const shapes = scene.objects.map((o) => {
    const e = extent(o) + 1;
    return {
      g: objectGeometry(o),
      x0: Math.max(0, Math.floor(o.x - e)),
      x1: Math.min(n - 1, Math.ceil(o.x + e)),
      y0: Math.max(0, Math.floor(o.y - e)),
      y1: Math.min(n - 1, Math.ceil(o.y + e)),
    };
  });
  // Painter's order: a later object takes the pixels it covers. Whole squares: all four corners
  // inside (from a lattice of corner tests shared by neighbouring pixels) and no vertex inside.
  shapes.forEach(({ g, x0, x1, y0, y1 }, index) => {
    const w = x1 - x0 + 2;
    const corner = new Uint8Array(w * (y1 - y0 + 2));
    for (let y = y0; y <= y1 + 1; y++) for (let x = x0; x <= x1 + 1; x++) corner[(y - y0) * w + (x - x0)] = insideGeometry(g, x, y) ? 1 : 0;
    const vertexPixels = new Set(g.kind === 'circle' ? [] : g.points
      .filter(([px, py]) => !Number.isInteger(px) && !Number.isInteger(py))
      .map(([px, py]) => Math.floor(py) * n + Math.floor(px)));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * n + x;
        if (insideGeometry(g, x + 0.5, y + 0.5)) {
          owner[i] = index;
          area[index]!++;
        }
        const c = (y - y0) * w + (x - x0);
        if (corner[c] && corner[c + 1] && corner[c + w] && corner[c + w + 1] && !vertexPixels.has(i)) solid[i] = index;
      }
    }
  });
  // A pixel stays solid only if no object drawn over its object touches it.
  shapes.forEach(({ g, x0, x1, y0, y1 }, index) => {
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * n + x;
        const s = solid[i]!;
        if (s >= 0 && s < index && meetsSquare(g, x, y)) solid[i] = -1;
      }
    }
  });
  const visible = new Array<number>(scene.objects.length).fill(0);
  for (let i = 0; i < owner.length; i++) if (owner[i]! >= 0) visible[owner[i]!]!++;
  const pieces = countPieces(owner, n, scene.objects.length, 1);
  const solidPieces = countPieces(solid, n, scene.objects.length, SOLID_MIN_PIXELS);
  return {
    size: n, owner, solid,
    objects: area.map((a, i) => ({ area: a, visible: visible[i]!, pieces: pieces[i]!, solidPieces: solidPieces[i]! })),
  };
}

/** Solid pieces smaller than this are specks at a sharp tip, not a part of an object. */
export const SOLID_MIN_PIXELS = 1;

/** 8-connected components of at least `minPixels` pixels of each label in a label image (-1 = none). */
function countPieces(labels: Int16Array, n: number, count: number, minPixels: number): number[] {
  const pieces = new Array<number>(count).fill(0);
  const seen = new Uint8Array(labels.length);
  const stack: number[] = [];
  for (let start = 0; start < labels.length; start++) {
    const label = labels[start]!;
    if (label < 0 || seen[start]) continue;
    let size = 0;
    seen[start] = 1;
    stack.push(start);
    while (stack.length > 0) {
      const p = stack.pop()!;
      size++;
      const px = p % n;
      const py = (p - px) / n;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const qx = px + dx;
          const qy = py + dy;
          if (qx < 0 || qy < 0 || qx >= n || qy >= n) continue;
          const q = qy * n + qx;
          if (!seen[q] && labels[q] === label) {
            seen[q] = 1;
            stack.push(q);
          }
        }
      }
    }
    if (size >= minPixels) pieces[label]!++;
  }
  return pieces;
}

// ---- rendering ----------------------------------------------------------------------------------

export function hexColour(rgb: Rgb): string {
  return `#${rgb.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

/** The scene as SVG, `size` pixels square (default: the scene's canvas), the scene's frame as viewBox. */
export function sceneSvg(scene: Scene, size: number = scene.size): string {
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 ${scene.size} ${scene.size}">`,
    `<rect x="0" y="0" width="${scene.size}" height="${scene.size}" fill="${hexColour(BACKGROUND_RGB)}"/>`,
  ];
  for (const o of scene.objects) {
    const g = objectGeometry(o);
    const fill = hexColour(COLOUR_RGB[o.colour]);
    parts.push(g.kind === 'circle'
      ? `<circle cx="${g.cx}" cy="${g.cy}" r="${g.r}" fill="${fill}"/>`
      : `<polygon points="${g.points.map(([x, y]) => `${x},${y}`).join(' ')}" fill="${fill}"/>`);
  }
  parts.push('</svg>');
  return parts.join('');
}

/** The scene as an RGB PNG of `size` x `size` pixels (default: the scene's canvas). Anti-aliased by librsvg. */
export async function renderScene(scene: Scene, size: number = scene.size): Promise<Buffer> {
  check.integer('size', size, 8, 4096);
  return sharp(Buffer.from(sceneSvg(scene, size))).removeAlpha().png().toBuffer();
}

/** SHA-256 (hex) of the scene's content: equal for scenes that look the same, whatever their seed. */
export function sceneHash(scene: Scene): string {
  const content = {
    size: scene.size,
    objects: scene.objects.map((o) => [o.shape, o.colour, o.size, o.x, o.y, o.r, o.rotation]),
  };
  return createHash('sha256').update(JSON.stringify(content)).digest('hex');
}
