// Sentence BLEU against hand-computed values (each derived in its comment) and values printed by
// NLTK's sentence_bleu(..., smoothing_function=SmoothingFunction().method1); the distance matrix
// against the pairwise definition, on a set large enough to exercise the inverted index.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bleuDistanceMatrix, sentenceBleu, whitespaceTokens } from '../../src/visplay/bleu.js';
import { rng } from './helpers/rng.js';

const bleu = (hyp: string, ref: string) => sentenceBleu(whitespaceTokens(hyp), whitespaceTokens(ref));

function assertClose(actual: number, expected: number, tol = 1e-12): void {
  assert.ok(Math.abs(actual - expected) <= tol, `${actual} vs ${expected}`);
}

describe('sentenceBleu (NLTK method1)', () => {
  it('is 1 for identical texts of at least four tokens', () => {
    assertClose(bleu('the cat sat on the mat', 'the cat sat on the mat'), 1);
  });

  it('smooths zero counts with 0.1 / number of hypothesis k-grams', () => {
    // hyp a b c d e, ref a b x d e: p1 = 4/5, p2 = 2/4 (ab, de), p3 = 0.1/3, p4 = 0.1/2; BP = 1 (5 vs 5).
    assertClose(bleu('a b c d e', 'a b x d e'), (0.8 * 0.5 * (0.1 / 3) * (0.1 / 2)) ** 0.25);
    assertClose(bleu('a b c d e', 'a b x d e'), 0.16068568378893033, 1e-15); // NLTK
  });

  it('gives orders longer than the hypothesis 0.1 / 1, so a one-word match is 0.1^(3/4)', () => {
    // p1 = 1, p2 = p3 = p4 = 0.1 / max(1, 0); BP = exp(1 - 1/1) = 1.
    assertClose(bleu('a', 'a'), 0.1 ** 0.75);
  });

  it('applies the brevity penalty exp(1 - |ref| / |hyp|) when the hypothesis is not longer', () => {
    // hyp a b, ref a..h: p1 = 1, p2 = 1, p3 = p4 = 0.1; BP = exp(1 - 8/2).
    assertClose(bleu('a b', 'a b c d e f g h'), Math.exp(1 - 8 / 2) * (0.1 * 0.1) ** 0.25);
    // hyp "the cat", ref 6 tokens: exp(-2) * 0.1^(1/2).
    assertClose(bleu('the cat', 'the cat sat on the mat'), Math.exp(-2) * Math.sqrt(0.1));
  });

  it('clips counts to the reference (the "the the the" example)', () => {
    // p1 = min(7, 2) / 7, p2 = 0.1/6, p3 = 0.1/5, p4 = 0.1/4; BP = 1 (7 > 6).
    assertClose(bleu('the the the the the the the', 'the cat is on the mat'), ((2 / 7) * (0.1 / 6) * (0.1 / 5) * (0.1 / 4)) ** 0.25);
  });

  it('is not symmetric', () => {
    // hyp 6 tokens, ref "the cat": p1 = 2/6 (the clipped to 1, cat), p2 = 1/5, p3 = 0.1/4, p4 = 0.1/3; BP = 1.
    assertClose(bleu('the cat sat on the mat', 'the cat'), ((2 / 6) * (1 / 5) * (0.1 / 4) * (0.1 / 3)) ** 0.25);
    assert.notEqual(bleu('the cat sat on the mat', 'the cat'), bleu('the cat', 'the cat sat on the mat'));
  });

  it('matches NLTK on question-like pairs', () => {
    assertClose(bleu('How many red cars are in the image ?', 'How many blue cars are visible in the image ?'), 0.36088772259506874, 1e-15);
    assertClose(bleu('What is the total number of people standing near the left bus stop ?', 'What is the number of people near the bus ?'),
      0.14283632578659292, 1e-15);
  });

  it('is 0 without a unigram match, for an empty hypothesis and for an empty reference', () => {
    assert.equal(bleu('x y z', 'a b c'), 0);
    assert.equal(bleu('', 'a b c'), 0);
    assert.equal(bleu('a b c', ''), 0);
    assert.equal(bleu('', ''), 0);
  });
});

describe('whitespaceTokens', () => {
  it("splits like Python's str.split()", () => {
    assert.deepEqual(whitespaceTokens('  a\tb\n\nc\u00a0d\u3000e \x1cf '), ['a', 'b', 'c', 'd', 'e', 'f']);
    assert.deepEqual(whitespaceTokens('a\ufeffb'), ['a\ufeffb'], 'U+FEFF is not whitespace to Python');
    assert.deepEqual(whitespaceTokens('   '), []);
  });
});


describe('bleuDistanceMatrix', () => {
  // 300 texts over a small vocabulary (many shared and repeated k-grams), with empty and equal texts.
  const random = rng(3);
  const words = 'what how many is the are of in on image left right red blue cars people'.split(' ');
  const texts = Array.from({ length: 300 }, () => Array.from({ length: Math.floor(random() * 16) }, () => words[Math.floor(random() * words.length)]!).join(' '));
  texts[10] = '';
  texts[11] = '';
  texts[12] = texts[13]!;
  const n = texts.length;
  const d = bleuDistanceMatrix(texts);

  it('is n x n with zeros on the diagonal and values in [0, 1]', () => {
    assert.equal(d.length, n * n);
    for (let i = 0; i < n; i++) assert.equal(d[i * n + i], 0);
    for (const v of d) assert.ok(v >= 0 && v <= 1, `${v}`);
  });

  it('holds 1 - BLEU(hyp = i, ref = j) for i < j, mirrored to [j, i] (the official code)', () => {
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const expected = 1 - sentenceBleu(whitespaceTokens(texts[i]!), whitespaceTokens(texts[j]!));
        assert.ok(Math.abs(d[i * n + j]! - expected) <= 1e-12, `[${i}, ${j}]: ${d[i * n + j]} vs ${expected}`);
        assert.equal(d[j * n + i], d[i * n + j]);
      }
    }
  });

  it('puts empty texts at distance 1 from everything, each other included', () => {
    assert.equal(d[10 * n + 11], 1);
    assert.equal(d[10 * n + 0], 1);
  });

  it('handles 0 and 1 texts', () => {
    assert.deepEqual(Array.from(bleuDistanceMatrix([])), []);
    assert.deepEqual(Array.from(bleuDistanceMatrix(['only one'])), [0]);
  });
});
