// The world's truth, read back from the pixels (sharp only, no addon): rendered scenes are segmented
// by each colour's exact RGB (anti-aliased edges fall out), and the blobs must be the scene model's
// objects: one blob per object of that colour, where the rasterized model puts it (its solid
// pixels: rasterizeScene's `solid`); the queried
// object's centre has the answer's colour; count answers equal the blobs of the counted objects;
// spatial answers hold for the blobs' centroids. Scenes with and without occlusion.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import {
  BACKGROUND_RGB, COLOURS, COLOUR_RGB, RELATIONS, SHAPES, SPATIAL_MARGIN, generateWorld, rasterizeScene, relationOffset, renderScene,
  type Colour, type Relation, type Rgb, type Scene, type WorldItem,
} from '../../src/world/index.js';

interface Pixels {
  data: Buffer;
  width: number;
}

async function pixels(png: Buffer): Promise<Pixels & { height: number; channels: number }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

function is(p: Pixels, i: number, rgb: Rgb): boolean {
  return p.data[3 * i] === rgb[0] && p.data[3 * i + 1] === rgb[1] && p.data[3 * i + 2] === rgb[2];
}

/** 8-connected blobs of pixels with exactly `rgb`; blobs under `minPixels` (stray edge pixels) dropped. */
function blobs(p: Pixels, rgb: Rgb, minPixels = 4): { label: Int32Array; sizes: number[]; centroids: Array<[number, number]> } {
  const n = p.width;
  const label = new Int32Array(n * n).fill(-1);
  const sizes: number[] = [];
  const centroids: Array<[number, number]> = [];
  for (let start = 0; start < n * n; start++) {
    if (label[start] !== -1 || !is(p, start, rgb)) continue;
    const members: number[] = [start];
    label[start] = -2;
    for (let k = 0; k < members.length; k++) {
      const q = members[k]!;
      const qx = q % n;
      const qy = (q - qx) / n;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const x = qx + dx;
          const y = qy + dy;
          const r = y * n + x;
          if (x >= 0 && y >= 0 && x < n && y < n && label[r] === -1 && is(p, r, rgb)) {
            label[r] = -2;
            members.push(r);
          }
        }
      }
    }
    const id = members.length >= minPixels ? sizes.length : -3;
    if (id >= 0) {
      sizes.push(members.length);
      centroids.push([members.reduce((s, q) => s + (q % n), 0) / members.length + 0.5, members.reduce((s, q) => s + Math.floor(q / n), 0) / members.length + 0.5]);
    }
    for (const q of members) label[q] = id;
  }
  return { label, sizes, centroids };
}

interface Reading {
  scene: Scene;
  p: Pixels;
  /** Per object: the blob of its colour that its solid pixels fall in. */
  blobOf: number[];
  solid: Int16Array;
  blobsByColour: Map<Colour, ReturnType<typeof blobs>>;
}

/** Checks a rendered scene against its model and returns the object-to-blob mapping. */
async function read(scene: Scene): Promise<Reading> {
  const png = await renderScene(scene);
  const p = await pixels(png);
  assert.deepEqual([p.width, p.height, p.channels], [scene.size, scene.size, 3]);
  const n = scene.size;
  const raster = rasterizeScene(scene);
  const owner = raster.owner;

  const blobsByColour = new Map<Colour, ReturnType<typeof blobs>>();
  for (const colour of COLOURS) {
    const b = blobs(p, COLOUR_RGB[colour]);
    blobsByColour.set(colour, b);
    const objects = scene.objects.filter((o) => o.colour === colour).length;
    assert.equal(b.sizes.length, objects, `${colour}: ${b.sizes.length} blobs of exact ${colour} for ${objects} objects`);
  }

  // Every exact-colour pixel lies on a visible object of that colour in the model (precision); every
  // pixel the model calls solid has its object's exact colour, and the background away from objects
  // has the background's (recall).
  let coloured = 0;
  let misplaced = 0;
  let solid = 0;
  let missed = 0;
  let background = 0;
  let notBackground = 0;
  for (let i = 0; i < n * n; i++) {
    const colour = COLOURS.find((c) => is(p, i, COLOUR_RGB[c]));
    if (colour) {
      coloured++;
      if (owner[i]! < 0 || scene.objects[owner[i]!]!.colour !== colour) misplaced++;
    }
    const o = raster.solid[i]!;
    if (o >= 0) {
      solid++;
      if (!is(p, i, COLOUR_RGB[scene.objects[o]!.colour])) missed++;
    }
    const x = i % n;
    const y = (i - x) / n;
    if (owner[i] === -1 && x > 0 && y > 0 && x < n - 1 && y < n - 1) {
      let empty = true;
      for (let dy = -1; dy <= 1 && empty; dy++) for (let dx = -1; dx <= 1 && empty; dx++) empty = owner[i + dy * n + dx] === -1;
      if (empty) {
        background++;
        if (!is(p, i, BACKGROUND_RGB)) notBackground++; // a sharp tip can poke between sample points
      }
    }
  }
  assert.ok(notBackground <= 0.001 * background, `${notBackground} of ${background} empty pixels are not background`);
  assert.ok(misplaced <= 0.005 * coloured, `${misplaced} of ${coloured} coloured pixels lie off their objects`);
  assert.ok(missed <= 0.005 * solid, `${missed} of ${solid} solid pixels have another colour`);

  // Each object's solid pixels fall in exactly one blob of its colour, and no two objects share one.
  const blobOf = scene.objects.map((o, index) => {
    const label = blobsByColour.get(o.colour)!.label;
    const hit = new Set<number>();
    for (let i = 0; i < n * n; i++) if (raster.solid[i] === index && label[i]! >= 0) hit.add(label[i]!);
    assert.equal(hit.size, 1, `object ${index} (${o.colour} ${o.shape}) spans ${hit.size} blobs`);
    return [...hit][0]!;
  });
  for (const colour of COLOURS) {
    const ids = scene.objects.flatMap((o, i) => (o.colour === colour ? [blobOf[i]] : []));
    assert.equal(new Set(ids).size, ids.length, `${colour} objects share a blob`);
  }

  // An object's centre, where nothing covers it, has its colour.
  scene.objects.forEach((o, index) => {
    const i = Math.floor(o.y) * n + Math.floor(o.x);
    if (raster.solid[i] === index) assert.ok(is(p, i, COLOUR_RGB[o.colour]), `centre of object ${index}`);
  });
  return { scene, p, blobOf, blobsByColour, solid: raster.solid };
}

function colourAt(r: Reading, i: number): Colour | undefined {
  return COLOURS.find((c) => is(r.p, i, COLOUR_RGB[c]));
}

function optionText(item: WorldItem): string {
  return item.options![item.answer.charCodeAt(0) - 65]!;
}

async function checkItem(item: WorldItem, spatial: boolean): Promise<void> {
  const r = await read(item.scene);
  const { scene } = item;
  switch (item.family) {
    case 'count': {
      // The counted objects are distinct blobs of their colour: as many as the answer says.
      const { shape, colour } = scene.target;
      const ids = new Set(scene.objects.flatMap((o, i) => (o.shape === shape && o.colour === colour ? [r.blobOf[i]] : [])));
      assert.equal(String(ids.size), item.answer);
      assert.ok(item.question.includes(`${colour} ${shape}s`));
      return;
    }
    case 'colour': {
      // The asked object, where the model says it shows (its solid pixel nearest its centre), has
      // the answer's colour.
      const shape = SHAPES.find((s) => item.question.includes(` ${s}`))!;
      const index = scene.objects.findIndex((o) => o.shape === shape);
      const object = scene.objects[index]!;
      const n = scene.size;
      let best = -1;
      for (let i = 0; i < n * n; i++) {
        if (r.solid[i] !== index) continue;
        const d = (i % n + 0.5 - object.x) ** 2 + (Math.floor(i / n) + 0.5 - object.y) ** 2;
        if (best < 0 || d < (best % n + 0.5 - object.x) ** 2 + (Math.floor(best / n) + 0.5 - object.y) ** 2) best = i;
      }
      assert.ok(best >= 0);
      assert.equal(colourAt(r, best), optionText(item));
      return;
    }
    case 'shape': {
      // The one blob of the asked colour is the object whose shape is the answer.
      const colour = COLOURS.find((c) => item.question.includes(` ${c}`))!;
      assert.equal(r.blobsByColour.get(colour)!.sizes.length, 1);
      const object = scene.objects.find((o) => o.colour === colour)!;
      assert.equal(object.shape, optionText(item));
      return;
    }
    case 'spatial': {
      if (!spatial || item.options) return;
      // Yes/No: the blobs' centroids stand on the side the answer says.
      const m = /^Is the (\w+) (\w+) (to the left of|to the right of|above|below) the (\w+) (\w+)\?$/.exec(item.question)!;
      const relation = ({ 'to the left of': 'left', 'to the right of': 'right', above: 'above', below: 'below' } as Record<string, Relation>)[m[3]!]!;
      assert.ok(RELATIONS.includes(relation));
      const centroid = (colour: string, shape: string) => {
        const index = scene.objects.findIndex((o) => o.colour === colour && o.shape === shape);
        const [x, y] = r.blobsByColour.get(colour as Colour)!.centroids[r.blobOf[index]!]!;
        return { x, y };
      };
      const d = relationOffset(relation, centroid(m[1]!, m[2]!), centroid(m[4]!, m[5]!));
      assert.ok(Math.abs(d) >= SPATIAL_MARGIN * scene.size - 3, `centroids only ${d.toFixed(1)} px apart`);
      assert.equal(item.answer, d > 0 ? 'Yes' : 'No');
      return;
    }
    case 'compare':
      return; // counts of classes: covered by the per-colour blob counts above
  }
}

describe('the world, read from its pixels', () => {
  it('scenes without occlusion: blobs are the objects; count, colour, shape and spatial answers hold', async () => {
    const world = generateWorld({ pretrain: 0, pool: 0, test: 80, seed: 11 });
    for (const item of world.test) await checkItem(item, true);
  });

  it('scenes with occlusion: every object is still one blob of its colour where the model puts it', async () => {
    const world = generateWorld({ pretrain: 0, pool: 0, test: 80, seed: 12, occlusion: 0.6, clutter: [2, 5] });
    let covered = 0;
    for (const item of world.test) {
      await checkItem(item, false);
      covered += rasterizeScene(item.scene).objects.filter((o) => o.visible < o.area).length;
    }
    assert.ok(covered >= 20, `only ${covered} objects were partly covered`);
  });

  it('renders at other sizes with the same layout', async () => {
    const scene = generateWorld({ pretrain: 0, pool: 0, test: 5, seed: 13 }).test[0]!.scene;
    const large = await pixels(await renderScene(scene, 448));
    assert.deepEqual([large.width, large.height, large.channels], [448, 448, 3]);
    for (const o of scene.objects) {
      const i = Math.floor(2 * o.y) * 448 + Math.floor(2 * o.x);
      assert.ok(is(large, i, COLOUR_RGB[o.colour]), `${o.colour} ${o.shape} at its scaled centre`);
    }
    assert.ok(is(large, 0, BACKGROUND_RGB));
  });
});
