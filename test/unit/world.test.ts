// The synthetic world (src/world): reproducible from its seed, splits disjoint, every answer checked
// against the scene's objects by a reader written independently of the generator (it parses the
// question text back), balanced answers, and the files writeWorld leaves (byte-identical for the
// same options, readable by the bench loader and the image-set loader).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { isVisplayError } from '../../src/errors.js';
import { benchQuestion, loadBench, parseBench } from '../../src/visplay/eval.js';
import { loadImageSet } from '../../src/visplay/image-set.js';
import {
  BACKGROUND_RGB, COLOURS, COLOUR_RGB, FAMILIES, MIN_VISIBLE, RELATIONS, Rng, SHAPES, SPATIAL_MARGIN, deriveSeed, formatQuestion, generateWorld,
  makeItem, makeScene, planFor, rasterizeScene, relationOffset, resolveWorldOptions, sceneHash, sceneSvg, writeWorld,
  type Relation, type Scene, type SceneObject, type WorldItem,
} from '../../src/world/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'visplay-world-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---- an independent reader of the questions -----------------------------------------------------

const SHAPE_RE = SHAPES.join('|');
const COLOUR_RE = COLOURS.join('|');
const RELATION_RE = 'to the left of|to the right of|above|below';
const RELATION_OF: Record<string, Relation> = { 'to the left of': 'left', 'to the right of': 'right', above: 'above', below: 'below' };

const objectsOf = (scene: Scene, shape?: string, colour?: string) =>
  scene.objects.filter((o) => (shape === undefined || o.shape === shape) && (colour === undefined || o.colour === colour));

/** The one object a definite description names ("the red circle"); fails unless exactly one exists. */
function the(scene: Scene, colour: string, shape: string): SceneObject {
  const found = objectsOf(scene, shape, colour);
  assert.equal(found.length, 1, `"the ${colour} ${shape}" must name exactly one object`);
  return found[0]!;
}

function letterIndex(answer: string): number {
  assert.match(answer, /^[A-D]$/);
  return answer.charCodeAt(0) - 65;
}

/** Checks an item's answer from its question text and its scene's objects alone. */
function checkTruth(item: WorldItem): void {
  const { scene, question } = item;
  const margin = SPATIAL_MARGIN * scene.size;
  let m: RegExpExecArray | null;
  if (item.options) {
    assert.equal(item.options.length, 4);
    assert.equal(new Set(item.options).size, 4, 'options are distinct');
  }
  switch (item.family) {
    case 'count': {
      m = new RegExp(`^(?:How many|Count the) (${COLOUR_RE}) (${SHAPE_RE})s (?:are in the image\\?|are there\\?|in the image\\. How many are there\\?)$`).exec(question);
      assert.ok(m, question);
      assert.equal(item.type, 'numerical');
      assert.equal(item.options, undefined);
      assert.equal(item.answer, String(objectsOf(scene, m[2], m[1]).length));
      assert.ok(Number(item.answer) >= 1 && Number(item.answer) <= 6);
      return;
    }
    case 'colour': {
      m = new RegExp(`^(?:What color is the|What is the color of the|Which color is the) (${SHAPE_RE})(?: in the image)?\\?$`).exec(question);
      assert.ok(m, question);
      const objects = objectsOf(scene, m[1]);
      assert.equal(objects.length, 1, 'exactly one object of the asked shape');
      assert.ok(item.options!.every((o) => (COLOURS as readonly string[]).includes(o)));
      assert.deepEqual(item.options!.filter((o) => o === objects[0]!.colour), [objects[0]!.colour], 'exactly one correct option');
      assert.equal(item.options![letterIndex(item.answer)], objects[0]!.colour);
      return;
    }
    case 'shape': {
      m = new RegExp(`^(?:What shape is the (${COLOUR_RE}) object|What is the shape of the (${COLOUR_RE}) object|Which shape is drawn in (${COLOUR_RE}))\\?$`).exec(question);
      assert.ok(m, question);
      const objects = objectsOf(scene, undefined, m[1] ?? m[2] ?? m[3]);
      assert.equal(objects.length, 1, 'exactly one object of the asked colour');
      assert.ok(item.options!.every((o) => (SHAPES as readonly string[]).includes(o)));
      assert.deepEqual(item.options!.filter((o) => o === objects[0]!.shape), [objects[0]!.shape]);
      assert.equal(item.options![letterIndex(item.answer)], objects[0]!.shape);
      return;
    }
    case 'spatial': {
      if (item.options) {
        m = new RegExp(`^(?:Which|What) shape is (${RELATION_RE}) the (${COLOUR_RE}) (${SHAPE_RE})\\?$`).exec(question);
        assert.ok(m, question);
        const relation = RELATION_OF[m[1]!]!;
        const ref = the(scene, m[2]!, m[3]!);
        const offsets = scene.objects.filter((o) => o !== ref).map((o) => ({ o, d: relationOffset(relation, o, ref) }));
        // An option is true when an object of that shape is clearly on that side, false when every
        // object of that shape is clearly on the other side (or there is none); never in between.
        const truth = item.options!.map((shape) => {
          const of = offsets.filter(({ o }) => o.shape === shape);
          assert.ok(of.every(({ d }) => Math.abs(d) >= margin), `no ${shape} in the unclear band`);
          return of.some(({ d }) => d >= margin);
        });
        assert.equal(truth.filter(Boolean).length, 1, 'exactly one option is true');
        assert.equal(truth.indexOf(true), letterIndex(item.answer));
        // Every object on that side has the answer's shape ("Which shape ..." has one answer).
        assert.ok(offsets.filter(({ d }) => d >= margin).every(({ o }) => o.shape === item.options![letterIndex(item.answer)]));
        assert.ok(!item.options!.includes(ref.shape), 'the reference\'s shape is not an option');
      } else {
        m = new RegExp(`^Is the (${COLOUR_RE}) (${SHAPE_RE}) (${RELATION_RE}) the (${COLOUR_RE}) (${SHAPE_RE})\\?$`).exec(question);
        assert.ok(m, question);
        const subject = the(scene, m[1]!, m[2]!);
        const object = the(scene, m[4]!, m[5]!);
        const d = relationOffset(RELATION_OF[m[3]!]!, subject, object);
        assert.ok(Math.abs(d) >= margin, 'clearly on one side or the other');
        assert.equal(item.answer, d > 0 ? 'Yes' : 'No');
      }
      assert.equal(item.type, 'multiple choice');
      return;
    }
    case 'compare': {
      m = new RegExp(`^(?:Are there|Does the image contain) (more|fewer) (?:(${SHAPE_RE})s|(${COLOUR_RE}) objects) than (?:(${SHAPE_RE})s|(${COLOUR_RE}) objects)\\?$`).exec(question);
      assert.ok(m, question);
      const a = objectsOf(scene, m[2], m[3]).length;
      const b = objectsOf(scene, m[4], m[5]).length;
      assert.ok((m[2] === undefined) === (m[4] === undefined), 'shapes with shapes, colours with colours');
      assert.notEqual(a, b, 'no ties');
      assert.equal(item.answer, (m[1] === 'more' ? a > b : a < b) ? 'Yes' : 'No');
      assert.equal(item.type, 'multiple choice');
      assert.equal(item.options, undefined);
      return;
    }
  }
}

// ---- tests --------------------------------------------------------------------------------------

describe('seeded randomness', () => {
  it('Rng is mulberry32: the same seed gives the same stream, in [0, 1)', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const xs = Array.from({ length: 1000 }, () => a.next());
    assert.deepEqual(xs, Array.from({ length: 1000 }, () => b.next()));
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    assert.notDeepEqual(xs.slice(0, 10), Array.from({ length: 10 }, () => new Rng(43).next()));
    const ints = new Set(Array.from({ length: 600 }, () => a.int(1, 6)));
    assert.deepEqual([...ints].sort(), [1, 2, 3, 4, 5, 6]);
  });

  it('deriveSeed separates labelled streams', () => {
    assert.equal(deriveSeed(1, 'test', 3), deriveSeed(1, 'test', 3));
    const seeds = new Set([deriveSeed(1, 'test', 3), deriveSeed(1, 'pool', 3), deriveSeed(1, 'test', 4), deriveSeed(2, 'test', 3), deriveSeed('1test', 3), deriveSeed(13)]);
    assert.equal(seeds.size, 6);
  });
});

describe('scenes', () => {
  const scenes = (options: Parameters<typeof makeScene>[1], n = 150) => Array.from({ length: n }, (_, i) => makeScene(new Rng(deriveSeed('scene', i)), options));

  it('are a function of the seed', () => {
    assert.deepEqual(makeScene(new Rng(7)), makeScene(new Rng(7)));
    assert.notDeepEqual(makeScene(new Rng(7)), makeScene(new Rng(8)));
    assert.equal(sceneSvg(makeScene(new Rng(7))), sceneSvg(makeScene(new Rng(7))));
  });

  it('hold the target class 1-6 times, no clutter of that class, every object inside the canvas', () => {
    const counts = new Set<number>();
    for (const scene of scenes({})) {
      const { shape, colour, count } = scene.target;
      counts.add(count);
      assert.equal(objectsOf(scene, shape, colour).length, count);
      assert.ok(scene.objects.every((o) => (o.role === 'target') === (o.shape === shape && o.colour === colour)));
      assert.ok(scene.objects.length - count >= 1 && scene.objects.length - count <= 4, 'clutter in [1, 4]');
      const raster = rasterizeScene(scene);
      // Inside the canvas: the whole outline was rasterized (a clipped shape loses area at the border).
      for (const [i, o] of scene.objects.entries()) {
        const g = raster.objects[i]!;
        assert.ok(g.area > 0.7 * Math.PI * o.r * o.r, `object ${i} has ${g.area} px`);
      }
    }
    assert.deepEqual([...counts].sort(), [1, 2, 3, 4, 5, 6]);
  });

  it('without occlusion, no two objects overlap; each object is one piece', () => {
    for (const scene of scenes({ occlusion: 0 })) {
      for (const o of rasterizeScene(scene).objects) {
        assert.equal(o.visible, o.area);
        assert.equal(o.pieces, 1);
        assert.equal(o.solidPieces, 1);
      }
    }
  });

  it('with occlusion, objects overlap only other colours and keep >= 60 % visible in one piece', () => {
    let overlapped = 0;
    for (const scene of scenes({ occlusion: 0.6, clutter: [2, 5] })) {
      const raster = rasterizeScene(scene);
      for (const o of raster.objects) {
        assert.ok(o.visible / o.area >= MIN_VISIBLE, `visible ${o.visible} of ${o.area}`);
        assert.equal(o.pieces, 1);
        assert.equal(o.solidPieces, 1);
        if (o.visible < o.area) overlapped++;
      }
      // Same-colour objects never overlap: rasterize each colour alone and nothing is hidden.
      for (const colour of COLOURS) {
        const alone = rasterizeScene({ size: scene.size, objects: objectsOf(scene, undefined, colour) });
        assert.ok(alone.objects.every((o) => o.visible === o.area));
      }
    }
    assert.ok(overlapped > 30, `only ${overlapped} objects were partly covered`);
  });

  it('unique-shape and unique-colour scenes name their target by one word', () => {
    for (const scene of scenes({ targetCount: 1, uniqueShape: true }, 50)) assert.equal(objectsOf(scene, scene.target.shape).length, 1);
    for (const scene of scenes({ targetCount: 1, uniqueColour: true }, 50)) assert.equal(objectsOf(scene, undefined, scene.target.colour).length, 1);
  });

  it('scale with the canvas size', () => {
    const small = makeScene(new Rng(3), { size: 112 });
    const large = makeScene(new Rng(3), { size: 448 });
    assert.equal(small.size, 112);
    assert.ok(small.objects.every((o) => o.x > 0 && o.x < 112 && o.r < 9.5));
    assert.ok(large.objects.every((o) => o.r >= 18));
  });

  it('colours are far apart from each other and from the background', () => {
    const rgbs = [...Object.values(COLOUR_RGB), BACKGROUND_RGB];
    for (let i = 0; i < rgbs.length; i++) {
      for (let j = i + 1; j < rgbs.length; j++) {
        const d = Math.hypot(rgbs[i]![0] - rgbs[j]![0], rgbs[i]![1] - rgbs[j]![1], rgbs[i]![2] - rgbs[j]![2]);
        assert.ok(d >= 100, `${rgbs[i]} vs ${rgbs[j]}: ${d.toFixed(0)}`);
      }
    }
  });

  it('reject bad options with the uniform message', () => {
    assert.throws(() => makeScene(new Rng(1), { targetCount: 7 }), (e) => isVisplayError(e, 'ERR_INVALID_ARG') &&
      e.message === 'Expected integer between 1 and 6 for targetCount but received 7 of type number');
    assert.throws(() => makeScene(new Rng(1), { clutter: [3, 1] }), /Expected integer between 3 and 12 for clutter\[1\] but received 1/);
    assert.throws(() => makeScene(new Rng(1), { occlusion: 2 }), /Expected number between 0 and 1 for occlusion/);
  });
});

describe('questions', () => {
  const world = generateWorld({ pretrain: 300, pool: 100, test: 600, seed: 5 });
  const occluded = generateWorld({ pretrain: 0, pool: 0, test: 300, seed: 6, occlusion: 0.5, clutter: [2, 5] });

  it('every answer follows from the scene\'s objects (the question text read back independently)', () => {
    for (const item of [...world.pretrain, ...world.test, ...occluded.test]) {
      try {
        checkTruth(item);
      } catch (e) {
        (e as Error).message += `\n  item ${item.id}: ${formatQuestion(item)} -> ${item.answer}`;
        throw e;
      }
    }
  });

  it('the test split is balanced: families, counts 1-6, letters A-D, Yes/No', () => {
    const tally = (xs: string[]) => xs.reduce<Record<string, number>>((t, x) => ({ ...t, [x]: (t[x] ?? 0) + 1 }), {});
    assert.deepEqual(tally(world.test.map((i) => i.family)), Object.fromEntries(FAMILIES.map((f) => [f, 120])));
    assert.deepEqual(tally(world.test.filter((i) => i.family === 'count').map((i) => i.answer)), { 1: 20, 2: 20, 3: 20, 4: 20, 5: 20, 6: 20 });
    assert.deepEqual(tally(world.test.filter((i) => i.options).map((i) => i.answer)), { A: 75, B: 75, C: 75, D: 75 });
    assert.deepEqual(tally(world.test.filter((i) => i.answer === 'Yes' || i.answer === 'No').map((i) => i.answer)), { Yes: 90, No: 90 });
    for (const family of ['colour', 'shape'] as const) {
      const answers = world.test.filter((i) => i.family === family).map((i) => i.options![letterIndex(i.answer)]!);
      assert.equal(new Set(answers).size, 6, `${family} answers cover the vocabulary`);
    }
    const relations = new Set(world.test.filter((i) => i.family === 'spatial').map((i) => /left|right|above|below/.exec(i.question)![0]));
    assert.deepEqual([...relations].sort(), [...RELATIONS].sort());
    // Compare questions mix shapes and colours, and "more" and "fewer".
    const compare = world.test.filter((i) => i.family === 'compare').map((i) => i.question);
    assert.ok(compare.some((q) => q.includes(' objects')) && compare.some((q) => !q.includes(' objects')));
    assert.ok(compare.some((q) => q.includes(' fewer ')) && compare.some((q) => q.includes(' more ')));
  });

  it('is a function of the options; the seed changes everything', () => {
    const again = generateWorld({ pretrain: 300, pool: 100, test: 600, seed: 5 });
    assert.deepEqual(again, world);
    const other = generateWorld({ pretrain: 0, pool: 0, test: 20, seed: 9 });
    assert.notDeepEqual(other.test.map((i) => i.question), world.test.slice(0, 20).map((i) => i.question));
    // An item comes back from its seed and plan alone.
    const item = world.test[7]!;
    assert.deepEqual(makeItem(item.seed, planFor(item.family, 1), { size: 224, occlusion: 0, clutter: [1, 4] }, item.id), item);
  });

  it('splits are disjoint by scene content, and the test split does not depend on the other sizes', () => {
    const hashes = [...world.pretrain, ...world.pool, ...world.test].map((x) => sceneHash(x.scene));
    assert.equal(new Set(hashes).size, hashes.length);
    const alone = generateWorld({ pretrain: 0, pool: 0, test: 600, seed: 5 });
    assert.deepEqual(alone.test, world.test);
    assert.equal(new Set(world.pool.map((p) => p.family)).size, FAMILIES.length, 'the pool holds every family\'s layout');
  });

  it('plans are honoured', () => {
    for (let k = 0; k < 24; k++) {
      assert.equal(makeItem(1000 + k, planFor('count', k)).answer, String(1 + (k % 6)));
      assert.equal(makeItem(2000 + k, planFor('colour', k)).answer, 'ABCD'[k % 4]);
      assert.equal(makeItem(3000 + k, planFor('compare', k)).answer, k % 2 === 0 ? 'Yes' : 'No');
      const spatial = makeItem(4000 + k, planFor('spatial', k));
      assert.equal(spatial.answer, k % 2 === 0 ? 'ABCD'[(k / 2) % 4] : ((k - 1) / 2) % 2 === 0 ? 'Yes' : 'No');
    }
  });

  it('formats as eval shows a bench item, or with the options inline', () => {
    const item = { question: 'What color is the star?', options: ['red', 'blue', 'green', 'yellow'] };
    assert.equal(formatQuestion(item), 'What color is the star?\nA. red\nB. blue\nC. green\nD. yellow');
    assert.equal(formatQuestion(item), benchQuestion(item));
    assert.equal(formatQuestion(item, 'inline'), 'What color is the star? Options: A. red B. blue C. green D. yellow');
    assert.equal(formatQuestion({ question: 'Are there more circles than squares?' }, 'inline'), 'Are there more circles than squares?');
  });

  it('never mention "box" (VisPlay drops such questions)', () => {
    assert.ok(world.test.every((i) => !i.question.toLowerCase().includes('box')));
  });

  it('world options are checked', () => {
    assert.deepEqual(resolveWorldOptions({}), { pretrain: 2000, pool: 2000, test: 600, seed: 0, size: 224, occlusion: 0, clutter: [1, 4] });
    assert.throws(() => generateWorld({ test: -1 }), (e) => isVisplayError(e, 'ERR_INVALID_ARG') &&
      e.message === 'Expected integer between 0 and 1000000 for test but received -1 of type number');
    assert.throws(() => generateWorld({ size: 16 }), /Expected integer between 32 and 4096 for size but received 16/);
    assert.throws(() => generateWorld({ clutter: [0, 0] }), /Expected \[min, max\] with max >= 1 \(spatial questions need a second object\) for clutter but received \[0,0\]/);
  });
});

describe('writeWorld', () => {
  const options = { pretrain: 12, pool: 8, test: 10, seed: 3, size: 112 };

  it('writes PNGs and JSONL that the bench and image-set loaders accept, byte-identical for the same options', async () => {
    const a = join(tmp, 'a');
    const b = join(tmp, 'b');
    const manifest = await writeWorld(a, options);
    await writeWorld(b, options, { concurrency: 1 });

    const files = (dir: string): string[] => readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name).slice(dir.length + 1)).sort();
    assert.deepEqual(files(a), files(b));
    assert.equal(files(a).length, 4 + 12 + 8 + 10);
    for (const f of files(a)) assert.ok(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${f} differs`);

    assert.equal(manifest.size, 112);
    assert.deepEqual(manifest.counts, { pretrain: 12, pool: 8, test: 10 });
    assert.deepEqual(JSON.parse(readFileSync(join(a, 'world.json'), 'utf8')), JSON.parse(JSON.stringify(manifest)));
    const meta = await sharp(join(a, 'images', 'test', '000000.png')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 112, 112, 3]);

    const bench = await loadBench(join(a, 'test.jsonl'));
    assert.equal(bench.items.length, 10);
    assert.deepEqual(bench.skipped, []);
    assert.deepEqual([...new Set(bench.items.map((i) => i.type))].sort(), ['multiple choice', 'numeric', 'yes/no']);
    const pretrain = parseBench(readFileSync(join(a, 'pretrain.jsonl'), 'utf8'), { baseDir: a });
    assert.equal(pretrain.items.length, 12);
    assert.deepEqual(pretrain.skipped, []);
    const world = generateWorld(options);
    const line = JSON.parse(readFileSync(join(a, 'test.jsonl'), 'utf8').split('\n')[1]!);
    const item = world.test[1]!;
    assert.deepEqual(line, {
      id: 'test-000001', image: 'images/test/000001.png', question: item.question, ...(item.options ? { options: item.options } : {}),
      answer: item.answer, type: item.type === 'numerical' ? 'numeric' : item.options ? 'multiple choice' : 'yes/no', family: item.family,
    });

    const pool = await loadImageSet(join(a, 'pool.jsonl'));
    assert.equal(pool.images.length, 8);
    assert.deepEqual(pool.skipped, []);
    assert.deepEqual(readFileSync(join(a, 'pool.jsonl'), 'utf8').split('\n')[0], '{"image":"images/pool/000000.png"}');
  });
});
