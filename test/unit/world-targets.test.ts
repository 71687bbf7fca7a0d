// What the world model is taught (src/world/prompts.ts) must be read back by the loop's own parsers
// exactly: the Questioner's target parses into its type, question and answer; the Reasoner's target
// boxes the answer, earns the full reward against its own label, and scores as correct. And the
// held-out scoring per family (src/world/evaluate.ts) and the mean ± sd of the experiment table.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lastBoxed } from '../../src/visplay/answers.js';
import { scoreAnswer, type EvalResult } from '../../src/visplay/eval.js';
import { parseQuestion } from '../../src/visplay/questions.js';
import { reasonerReward } from '../../src/visplay/rewards.js';
import { resolveConfig } from '../../src/visplay/config.js';
import { generateWorld, benchType, FAMILIES } from '../../src/world/index.js';
import { meanSd } from '../../src/world/experiment.js';
import { scoreByFamily } from '../../src/world/evaluate.js';
import { questionerTarget, reasonerTarget, type LabelledItem } from '../../src/world/prompts.js';

const world = generateWorld({ pretrain: 50, pool: 0, test: 0, seed: 11 });
const items: LabelledItem[] = world.pretrain.map((w) => ({ question: w.question, options: w.options, answer: w.answer, type: benchType(w) }));

describe('world targets', () => {
  it('covers every family and answer type', () => {
    assert.deepEqual(new Set(world.pretrain.map((w) => w.family)), new Set(FAMILIES));
    assert.deepEqual(new Set(items.map((i) => i.type)), new Set(['numeric', 'multiple choice', 'yes/no']));
  });

  it('the Questioner target parses back into its type, question (with options) and answer', () => {
    for (const item of items) {
      const parsed = parseQuestion(questionerTarget(item));
      assert.equal(parsed.valid, true, questionerTarget(item));
      assert.equal(parsed.type, item.type === 'numeric' ? 'numerical' : 'multiple choice');
      assert.equal(parsed.answer, item.answer);
      assert.ok(parsed.question.startsWith(item.question));
      for (const option of item.options ?? []) assert.ok(parsed.question.includes(option), `${option} in ${parsed.question}`);
    }
  });

  it('the Reasoner target boxes the answer, thinks first, earns reward 1 and scores as correct', () => {
    for (const item of items) {
      const text = reasonerTarget(item);
      assert.equal(lastBoxed(text), item.answer);
      assert.match(text, /^<think>[^<]+<\/think>\n\\boxed\{[^}]+\}$/);
      assert.equal(reasonerReward(text, item.answer).total, 1, text);
      assert.equal(scoreAnswer({ ...item, type: item.type }, lastBoxed(text)!), true);
    }
    // An option's text comes before its letter: the step reads the image, the letter is a copy.
    assert.equal(reasonerTarget({ question: 'What color is the star?', options: ['red', 'blue', 'green', 'yellow'], answer: 'B', type: 'multiple choice' }),
      '<think>It is blue, option B.</think>\n\\boxed{B}');
    assert.throws(() => reasonerTarget({ question: 'q', options: ['a', 'b'], answer: 'D', type: 'multiple choice' }), /not one of the options/);
  });
});

describe('world scoring', () => {
  it('scoreByFamily counts each item under its family, exactly', () => {
    const result = {
      items: [
        { id: 't1', correct: true }, { id: 't1', correct: false }, { id: 't2', correct: true }, { id: 't3', correct: false }, { id: 'zz', correct: true },
      ],
    } as unknown as EvalResult;
    const families = new Map([['t1', 'count'], ['t2', 'colour'], ['t3', 'count']]);
    const s = scoreByFamily(result, families, 'mean@2');
    assert.equal(s.mode, 'mean@2');
    assert.deepEqual(s.overall, { accuracy: 3 / 5, correct: 3, total: 5 });
    assert.deepEqual(s.byFamily.count, { accuracy: 1 / 3, correct: 1, total: 3 });
    assert.deepEqual(s.byFamily.colour, { accuracy: 1, correct: 1, total: 1 });
    assert.deepEqual(s.byFamily.unknown, { accuracy: 1, correct: 1, total: 1 });
  });

  it('meanSd: the sample sd, 0 for one value', () => {
    assert.deepEqual(meanSd([0.5]), { mean: 0.5, sd: 0, n: 1 });
    const m = meanSd([0.4, 0.5, 0.6]);
    assert.ok(Math.abs(m.mean - 0.5) < 1e-15 && Math.abs(m.sd - 0.1) < 1e-15 && m.n === 3);
  });

  it('shuffleRewards is a checked boolean of the evolve config, off by default', () => {
    assert.equal(resolveConfig({}).shuffleRewards, false);
    assert.equal(resolveConfig({ shuffleRewards: true }).shuffleRewards, true);
    assert.throws(() => resolveConfig({ shuffleRewards: 'yes' as unknown as boolean }), /shuffleRewards/);
  });
});

describe('world vocabulary texts', () => {
  it('are fixed, and hold every word the world can put in a question or an answer', async () => {
    const { worldVocabularyTexts } = await import('../../src/world/vocabulary.js');
    const { COLOURS, SHAPES } = await import('../../src/world/index.js');
    const texts = worldVocabularyTexts();
    assert.deepEqual(worldVocabularyTexts(), texts, 'the same list on every call (it is part of the model cache key)');
    assert.equal(new Set(texts).size, texts.length);
    const all = texts.join('\n');
    for (const word of [...COLOURS, ...SHAPES, 'left', 'right', 'above', 'below', 'Yes', 'No', '\\boxed{', '<question>', '<think>']) {
      assert.ok(all.includes(word), word);
    }
    // Every item of a fresh world's split is made of the same words as the vocabulary's sample.
    const sample = generateWorld({ pretrain: 200, pool: 0, test: 0, seed: 12 }).pretrain;
    const words = new Set(all.split(/[^A-Za-z]+/));
    for (const w of sample) for (const word of w.question.split(/[^A-Za-z]+/)) assert.ok(words.has(word), `"${word}" of "${w.question}"`);
  });
});
