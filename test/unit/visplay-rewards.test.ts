// The Questioner and Reasoner rewards on worked examples, each number derived in a comment.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  labelCandidate, questionerRewards, reasonerReward, uncertainty, type QuestionerItem, type RewardFunction,
} from '../../src/visplay/rewards.js';

function assertClose(actual: number, expected: number, tol = 1e-12): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${actual} vs ${expected}`);
}

describe('uncertainty', () => {
  it("'min' is min(c, 1 - c); 'r-zero' is 1 - 2|c - 1/2|", () => {
    assert.equal(uncertainty(0.5), 0.5);
    assert.equal(uncertainty(0.2), 0.2);
    assert.equal(uncertainty(0.9, 'min'), 1 - 0.9);
    assert.equal(uncertainty(0.5, 'r-zero'), 1);
    assert.equal(uncertainty(1, 'r-zero'), 0);
    assertClose(uncertainty(0.3, 'r-zero'), 0.6);
  });
});

describe('questionerRewards: a worked batch of four (m = 10)', () => {
  // Questions 0 and 1 have 14 tokens and differ in the 13th: it spoils 1 of 14 unigrams, 2 of 13
  // bigrams, 2 of 12 trigrams and 2 of 11 4-grams, so BLEU = (13/14 * 11/13 * 10/12 * 9/11)^(1/4)
  // = (90/168)^(1/4) = 0.856 and the distance 0.144 < 0.5: one cluster. Question 2 shares only "the" and "?" with them, and the
  // invalid one enters as '' (distance 1 to all): clusters {0, 1}, {2}, {3}; N = 4.
  const items: QuestionerItem[] = [
    { valid: true, question: 'How many red cars are parked on the left side of the street ?',
      answers: ['3', '3', '3', '3', '3', '4', '4', '', '', '5'] }, // 5 votes for 3: c = 5/10
    { valid: true, question: 'How many red cars are parked on the left side of the road ?',
      answers: Array.from({ length: 10 }, () => '7') }, // c = 1
    { valid: true, question: 'What fraction of the pie chart is blue ?',
      answers: ['0.25', '1/4', '\\frac{1}{4}', '0.5', '', '', '', '', '', ''] }, // 3 equivalent votes: c = 3/10
    { valid: false, question: '', answers: [] },
  ];

  it("computes c, min(c, 1 - c), the cluster shares and the totals ('min', invalid questions clustered)", () => {
    const r = questionerRewards(items);
    assert.deepEqual(r.map((x) => x.silver), ['3', '7', '0.25', '']);
    assert.deepEqual(r.map((x) => x.count), [5, 10, 3, 0]);
    assert.deepEqual(r.map((x) => x.confidence), [0.5, 1, 0.3, 0]);
    assert.deepEqual(r.map((x) => x.uncertainty), [0.5, 0, 0.3, -1]);
    assert.deepEqual(r.map((x) => x.penalty), [0.5, 0.5, 0.25, 0.25]); // 2/4, 2/4, 1/4, 1/4
    assert.equal(r[0]!.cluster, r[1]!.cluster);
    assert.notEqual(r[0]!.cluster, r[2]!.cluster);
    const expected = [0.5 - 0.5, 0 - 0.5, 0.3 - 0.25, -1 - 0.25];
    r.forEach((x, i) => assertClose(x.total, expected[i]!));
  });

  it("uses R-Zero's 1 - 2|c - 1/2| when asked", () => {
    const r = questionerRewards(items, { uncertaintyReward: 'r-zero' });
    const expected = [1 - 0.5, 0 - 0.5, 0.6 - 0.25, -1 - 0.25];
    r.forEach((x, i) => assertClose(x.total, expected[i]!));
  });

  it('can leave invalid questions out of the clustering (N = 3, no penalty for the invalid one)', () => {
    const r = questionerRewards(items, { invalidInClustering: false });
    [2 / 3, 2 / 3, 1 / 3, 0].forEach((p, i) => assertClose(r[i]!.penalty, p));
    assert.equal(r[3]!.total, -1);
    assert.equal(r[3]!.cluster, -1);
  });

  it('keeps unboxed samples in the denominator but never lets them win', () => {
    const [r] = questionerRewards([{ valid: true, question: 'q', answers: ['', '', '', '', '', '', '', '', 'A', 'B'] }]);
    assert.equal(r!.silver, 'A');
    assert.equal(r!.confidence, 0.1);
    assert.equal(r!.penalty, 1); // alone in the batch: |cluster| / N = 1
  });

  it('moves the threshold with distanceThreshold', () => {
    // At threshold 0.1 the near-duplicates (distance 0.144) no longer merge: every penalty is 1/4.
    const r = questionerRewards(items, { distanceThreshold: 0.1 });
    assert.deepEqual(r.map((x) => x.penalty), [0.25, 0.25, 0.25, 0.25]);
  });
});

describe('labelCandidate', () => {
  it('divides the majority count by the boxed answers only (VISPLAY.md §8.2)', () => {
    // 9 samples, 4 boxed, 3 of them "3": 3/4 (the reward would use 3/9).
    assert.deepEqual(labelCandidate(['3', '3', '', '4', '', '3', '', '', '']), { silver: '3', count: 3, confidence: 0.75 });
  });
  it('gives silver "" and confidence 0 when nothing is boxed', () => {
    assert.deepEqual(labelCandidate(['', '', '']), { silver: '', count: 0, confidence: 0 });
  });
});

describe('reasonerReward: 0.9 * acc + 0.1 * fmt', () => {
  it('scores a correct, well-formatted response 1', () => {
    assert.deepEqual(reasonerReward('<think>two on the left, one on the right</think>\n\\boxed{3}', '3'),
      { total: 1, correct: true, formatOk: true, boxed: '3' });
  });

  it('scores a wrong answer in the right format 0.1', () => {
    const r = reasonerReward('<think>I count four</think> \\boxed{4}', '3');
    assertClose(r.total, 0.1);
    assert.equal(r.correct, false);
  });

  it('requires <think> for the format point by default; requireThink: false accepts any response ending in a box', () => {
    assertClose(reasonerReward('There are three cars, so \\boxed{3}', '3').total, 0.9);
    assert.equal(reasonerReward('There are three cars, so \\boxed{3}', '3', { requireThink: false }).total, 1);
    assertClose(reasonerReward('So \\boxed{3}. Done.', '3', { requireThink: false }).total, 0.9);
  });

  it('requires the response to start with <think> and end with the box (fullmatch)', () => {
    assertClose(reasonerReward('Sure. <think>x</think>\\boxed{3}', '3').total, 0.9);
    assertClose(reasonerReward('<think>x</think>\\boxed{3} because x', '3').total, 0.9);
  });

  it('cleans whitespace around < > / first, for tags and the boxed answer alike', () => {
    assert.deepEqual(reasonerReward('< think >half< / think > \\boxed{ 1 / 2 }', '0.5'),
      { total: 1, correct: true, formatOk: true, boxed: '1/2' });
  });

  it('grades by equivalence, without the vote\'s "no " shortcut', () => {
    assert.equal(reasonerReward('<think>x</think>\\boxed{(B) red}', 'B').correct, true);
    assert.equal(reasonerReward('<think>x</think>\\boxed{no cars}', 'no trucks').correct, false);
  });

  it('gives 0 to a response without a box', () => {
    assert.deepEqual(reasonerReward('I think it is 3', '3'), { total: 0, correct: false, formatOk: false, boxed: '' });
  });
});

describe('RewardFunction', () => {
  it('is a batch -> Promise<number[]> function over the samples', async () => {
    const byLength: RewardFunction = async (batch) => batch.map((b) => (b.response.includes(b.silver ?? '\u0000') ? 1 : 0));
    const image = { hash: 'ab', path: 'a.png' };
    assert.deepEqual(await byLength([
      { image, question: 'q', type: 'numerical', response: '\\boxed{3}', silver: '3' },
      { image, question: 'q', type: 'numerical', response: '\\boxed{4}', silver: '3' },
      { image, question: 'q', type: 'numerical', response: '\\boxed{4}' },
    ]), [1, 0, 0]);
  });
});
