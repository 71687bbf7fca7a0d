// Questions about a scene whose answers follow from the scene model alone, in the VisPlay question
// types (VISPLAY.md §5): counting ('numerical'), and colour, shape, spatial and comparison questions
// ('multiple choice', with options A-D or a Yes/No answer).
//
//   planFor        the k-th item of a family, chosen so that a split is balanced (counts 1-6, letters
//                  A-D, Yes/No in turn)
//   sceneOptionsFor  the scene constraints under which a family's question is unambiguous
//   makeQuestion   a question about a scene, or null when the scene admits none of that family
//   makeItem       scene + question from one seed (redrawn until the question exists)
//   formatQuestion the text the Reasoner sees (options as eval.ts's benchQuestion lays them out)
//   benchType      the eval bench's type of an item ('numeric' | 'multiple choice' | 'yes/no')
//
// Unambiguous by construction and checked here against the objects, not the scene's plan:
//   count    "How many red circles ...": any scene; the answer counts objects of that shape and colour.
//   colour   "What color is the star?": exactly one star in the scene.
//   shape    "What shape is the red object?": exactly one red object.
//   spatial  "Which shape is to the left of the blue square?": the blue square is the only one of its
//            class; every object clearly on that side (centres apart by >= 10 % of the canvas) has the
//            answer's shape, none of that shape or of a distractor's shape lies in the unclear band,
//            and the reference's own shape is not among the options.
//            "Is the red circle above the blue square?": both unique, apart by >= the margin on that axis.
//   compare  "Are there more circles than squares?": the two counts differ.
import type { BenchType } from '../visplay/eval.js';
import { benchQuestion } from '../visplay/eval.js';
import type { QuestionType } from '../visplay/records.js';
import { VisplayError } from '../errors.js';
import * as check from '../validate.js';
import {
  COLOURS, MAX_TARGET_COUNT, Rng, SHAPES, deriveSeed, makeScene, type Colour, type Scene, type SceneObject, type SceneOptions, type Shape,
} from './generator.js';

export const FAMILIES = ['count', 'colour', 'shape', 'spatial', 'compare'] as const;
export type QuestionFamily = (typeof FAMILIES)[number];

export const RELATIONS = ['left', 'right', 'above', 'below'] as const;
export type Relation = (typeof RELATIONS)[number];

const RELATION_TEXT: Readonly<Record<Relation, string>> = {
  left: 'to the left of',
  right: 'to the right of',
  above: 'above',
  below: 'below',
};

/** Options of a multiple-choice question (A-D). */
export const OPTION_COUNT = 4;

/** Two centres are clearly apart along an axis when they differ by at least this share of the canvas. */
export const SPATIAL_MARGIN = 0.1;

export interface WorldQuestion {
  family: QuestionFamily;
  question: string;
  /** The VisPlay type: 'numerical' for counts, 'multiple choice' for A-D and Yes/No. */
  type: QuestionType;
  /** The A-D options (multiple choice with letters only; Yes/No questions have none). */
  options?: string[];
  /** '1'-'6' (count), 'A'-'D' (options) or 'Yes'/'No'. */
  answer: string;
}

export interface WorldItem extends WorldQuestion {
  id: string;
  /** makeItem(seed, plan, options) gives this item back. */
  seed: number;
  scene: Scene;
}

/** What an item must come out as; fields left out are drawn at random. */
export interface QuestionPlan {
  family: QuestionFamily;
  /** count: the answer (1-6). */
  count?: number;
  /** Options questions: the index of the correct option (0-3). */
  slot?: number;
  /** Yes/No questions: the answer. */
  yes?: boolean;
  /** spatial: 'choice' ("Which shape is left of ...?", A-D) or 'yesno' ("Is the ... left of ...?"). */
  form?: 'choice' | 'yesno';
}

/**
 * The plan of a family's k-th item (k = 0, 1, ...): consecutive items cycle through counts 1-6,
 * option slots A-D and Yes/No, so any 24 consecutive items of a family are exactly balanced.
 */
export function planFor(family: QuestionFamily, k: number): QuestionPlan {
  check.nonNegativeInteger('k', k);
  switch (family) {
    case 'count':
      return { family, count: 1 + (k % MAX_TARGET_COUNT) };
    case 'colour':
    case 'shape':
      return { family, slot: k % OPTION_COUNT };
    case 'spatial':
      // Even k: a choice question (slots cycle over k/2); odd k: a Yes/No question (answers alternate).
      return k % 2 === 0 ? { family, form: 'choice', slot: (k / 2) % OPTION_COUNT } : { family, form: 'yesno', yes: ((k - 1) / 2) % 2 === 0 };
    case 'compare':
      return { family, yes: k % 2 === 0 };
  }
}

/** The scene constraints under which a question of the plan's family exists (or very likely does). */
export function sceneOptionsFor(plan: QuestionPlan): SceneOptions {
  switch (plan.family) {
    case 'count':
      return plan.count === undefined ? {} : { targetCount: plan.count };
    case 'colour':
      return { targetCount: 1, uniqueShape: true };
    case 'shape':
      return { targetCount: 1, uniqueColour: true };
    case 'spatial':
      return { targetCount: 1 };
    case 'compare':
      return {};
  }
}

// ---- truth from the objects ---------------------------------------------------------------------

/** Objects with the given shape and/or colour. */
export function matching(scene: Scene, what: { shape?: Shape; colour?: Colour }): SceneObject[] {
  return scene.objects.filter((o) => (what.shape === undefined || o.shape === what.shape) && (what.colour === undefined || o.colour === what.colour));
}

/**
 * How far `o` lies in direction `relation` from `ref`, in pixels: positive when it is on that side
 * (left of, right of, above, below), by the distance of the centres along that axis.
 */
export function relationOffset(relation: Relation, o: Pick<SceneObject, 'x' | 'y'>, ref: Pick<SceneObject, 'x' | 'y'>): number {
  switch (relation) {
    case 'left': return ref.x - o.x;
    case 'right': return o.x - ref.x;
    case 'above': return ref.y - o.y;
    case 'below': return o.y - ref.y;
  }
}

function only<T>(list: T[]): T | null {
  return list.length === 1 ? list[0]! : null;
}

function plural(shape: Shape): string {
  return `${shape}s`;
}

function letter(i: number): string {
  return String.fromCharCode(65 + i);
}

/** Options with the correct one at `slot`; the distractors in random order. */
function arrange(rng: Rng, correct: string, distractors: readonly string[], slot: number | undefined): { options: string[]; answer: string } {
  if (distractors.length < OPTION_COUNT - 1) throw new VisplayError('ERR_INTERNAL', 'too few distractors');
  const s = slot ?? rng.int(0, OPTION_COUNT - 1);
  const options = rng.shuffled(distractors).slice(0, OPTION_COUNT - 1);
  options.splice(s, 0, correct);
  return { options, answer: letter(s) };
}

// ---- questions ----------------------------------------------------------------------------------

/** A question of the plan's family with an unambiguous answer in `scene`, or null if it has none. */
export function makeQuestion(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  if (plan.slot !== undefined) check.integer('slot', plan.slot, 0, OPTION_COUNT - 1);
  switch (plan.family) {
    case 'count': return countQuestion(rng, scene, plan);
    case 'colour': return colourQuestion(rng, scene, plan);
    case 'shape': return shapeQuestion(rng, scene, plan);
    case 'spatial': return (plan.form ?? (rng.chance(0.5) ? 'choice' : 'yesno')) === 'choice' ? spatialChoice(rng, scene, plan) : spatialYesNo(rng, scene, plan);
    case 'compare': return compareQuestion(rng, scene, plan);
  }
}

function countQuestion(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const { shape, colour } = scene.target;
  const n = matching(scene, { shape, colour }).length;
  if (n < 1 || (plan.count !== undefined && n !== plan.count)) return null;
  const what = `${colour} ${plural(shape)}`;
  const question = rng.pick([
    `How many ${what} are in the image?`,
    `How many ${what} are there?`,
    `Count the ${what} in the image. How many are there?`,
  ]);
  return { family: 'count', question, type: 'numerical', answer: String(n) };
}

function colourQuestion(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const object = only(matching(scene, { shape: scene.target.shape }));
  if (!object) return null;
  const question = rng.pick([
    `What color is the ${object.shape}?`,
    `What is the color of the ${object.shape}?`,
    `Which color is the ${object.shape} in the image?`,
  ]);
  return { family: 'colour', question, type: 'multiple choice', ...arrange(rng, object.colour, COLOURS.filter((c) => c !== object.colour), plan.slot) };
}

function shapeQuestion(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const object = only(matching(scene, { colour: scene.target.colour }));
  if (!object) return null;
  const question = rng.pick([
    `What shape is the ${object.colour} object?`,
    `What is the shape of the ${object.colour} object?`,
    `Which shape is drawn in ${object.colour}?`,
  ]);
  return { family: 'shape', question, type: 'multiple choice', ...arrange(rng, object.shape, SHAPES.filter((s) => s !== object.shape), plan.slot) };
}

/** The target as a reference object: the only object of its class, or null. */
function reference(scene: Scene): SceneObject | null {
  return only(matching(scene, { shape: scene.target.shape, colour: scene.target.colour }));
}

function spatialChoice(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const ref = reference(scene);
  if (!ref) return null;
  const margin = SPATIAL_MARGIN * scene.size;
  const others = scene.objects.filter((o) => o !== ref);
  const candidates: Array<{ relation: Relation; shape: Shape; distractors: Shape[] }> = [];
  for (const relation of RELATIONS) {
    const side = others.filter((o) => relationOffset(relation, o, ref) >= margin);
    const band = others.filter((o) => Math.abs(relationOffset(relation, o, ref)) < margin);
    const shape = side[0]?.shape;
    if (shape === undefined || shape === ref.shape || !side.every((o) => o.shape === shape)) continue;
    const unclear = new Set(band.map((o) => o.shape));
    if (unclear.has(shape)) continue;
    // The reference's own shape is never the answer, so it is never a distractor either: a model
    // must not score by striking out the option the question names.
    const distractors = SHAPES.filter((s) => s !== shape && s !== ref.shape && !unclear.has(s));
    if (distractors.length >= OPTION_COUNT - 1) candidates.push({ relation, shape, distractors });
  }
  if (candidates.length === 0) return null;
  const c = rng.pick(candidates);
  const question = rng.pick([
    `Which shape is ${RELATION_TEXT[c.relation]} the ${ref.colour} ${ref.shape}?`,
    `What shape is ${RELATION_TEXT[c.relation]} the ${ref.colour} ${ref.shape}?`,
  ]);
  return { family: 'spatial', question, type: 'multiple choice', ...arrange(rng, c.shape, c.distractors, plan.slot) };
}

function spatialYesNo(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const ref = reference(scene);
  if (!ref) return null;
  const margin = SPATIAL_MARGIN * scene.size;
  // Objects that "the <colour> <shape>" names: the only one of their class.
  const named = scene.objects.filter((o) => o !== ref && matching(scene, { shape: o.shape, colour: o.colour }).length === 1);
  const want = plan.yes ?? rng.chance(0.5);
  const candidates: Array<{ subject: SceneObject; object: SceneObject; relation: Relation }> = [];
  for (const other of named) {
    for (const [subject, object] of [[other, ref], [ref, other]] as const) {
      for (const relation of RELATIONS) {
        const offset = relationOffset(relation, subject, object);
        if (Math.abs(offset) >= margin && offset > 0 === want) candidates.push({ subject, object, relation });
      }
    }
  }
  if (candidates.length === 0) return null;
  const c = rng.pick(candidates);
  const question = `Is the ${c.subject.colour} ${c.subject.shape} ${RELATION_TEXT[c.relation]} the ${c.object.colour} ${c.object.shape}?`;
  return { family: 'spatial', question, type: 'multiple choice', answer: want ? 'Yes' : 'No' };
}

function compareQuestion(rng: Rng, scene: Scene, plan: QuestionPlan): WorldQuestion | null {
  const want = plan.yes ?? rng.chance(0.5);
  const byShape = rng.chance(0.5);
  // [more, fewer] pairs of shapes or of colours. Prefer two classes that are both in the picture
  // ("more circles than hexagons" with no hexagon at all is a presence question in disguise): the
  // drawn kind first, then the other kind, then pairs with an absent class.
  const kinds = [byShape, !byShape].map((shapes) => {
    const names: readonly string[] = shapes ? SHAPES : COLOURS;
    const count = (name: string) => (shapes ? matching(scene, { shape: name as Shape }) : matching(scene, { colour: name as Colour })).length;
    const pairs: Array<[string, string]> = [];
    for (const a of names) for (const b of names) if (count(a) > count(b)) pairs.push([a, b]);
    return { shapes, pairs, present: pairs.filter(([, b]) => count(b) > 0) };
  });
  const choice = kinds.find((k) => k.present.length > 0) ?? kinds.find((k) => k.pairs.length > 0);
  if (!choice) return null;
  const [more, fewer] = rng.pick(choice.present.length > 0 ? choice.present : choice.pairs);
  const term = (name: string) => (choice.shapes ? plural(name as Shape) : `${name} objects`);
  const askMore = rng.chance(0.5);
  // Yes: "more <more> than <fewer>" or "fewer <fewer> than <more>"; No: the other way round.
  const [first, second] = askMore === want ? [more, fewer] : [fewer, more];
  const word = askMore ? 'more' : 'fewer';
  const question = rng.pick([
    `Are there ${word} ${term(first)} than ${term(second)}?`,
    `Does the image contain ${word} ${term(first)} than ${term(second)}?`,
  ]);
  return { family: 'compare', question, type: 'multiple choice', answer: want ? 'Yes' : 'No' };
}

// ---- items --------------------------------------------------------------------------------------

const ATTEMPTS_PER_ITEM = 100;

/**
 * A scene and its question, both from `seed`: scenes are drawn (with the family's constraints on top
 * of `options`) until one admits a question that fits the plan.
 */
export function makeItem(seed: number, plan: QuestionPlan, options: SceneOptions = {}, id = `item-${seed}`): WorldItem {
  for (let attempt = 0; attempt < ATTEMPTS_PER_ITEM; attempt++) {
    const rng = new Rng(deriveSeed(seed, attempt));
    const scene = makeScene(rng, { ...options, ...sceneOptionsFor(plan) });
    const q = makeQuestion(rng, scene, plan);
    if (q) return { id, seed, scene, ...q };
  }
  throw new VisplayError('ERR_INTERNAL', `no ${plan.family} question fits ${ATTEMPTS_PER_ITEM} scenes of seed ${seed}; allow more clutter`);
}

// ---- presentation -------------------------------------------------------------------------------

/**
 * The question as the Reasoner sees it. 'lines' (default) is exactly what `eval` shows for a bench
 * item (benchQuestion: "question\nA. red\nB. blue ..."), so training and evaluation see one format;
 * 'inline' puts the options on the question's line ("question Options: A. red B. blue ...").
 */
export function formatQuestion(item: Pick<WorldQuestion, 'question' | 'options'>, layout: 'lines' | 'inline' = 'lines'): string {
  if (layout === 'lines' || !item.options) return benchQuestion(item);
  return `${item.question} Options: ${item.options.map((o, i) => `${letter(i)}. ${o}`).join(' ')}`;
}

/** The eval bench's type of an item: counts are 'numeric', A-D 'multiple choice', Yes/No 'yes/no'. */
export function benchType(item: Pick<WorldQuestion, 'type' | 'options' | 'answer'>): Extract<BenchType, 'numeric' | 'multiple choice' | 'yes/no'> {
  if (item.type === 'numerical') return 'numeric';
  return item.options ? 'multiple choice' : 'yes/no';
}
