// Answer extraction and equivalence: the table of pairs that must and must not match, the boxed
// answer extractor's edge cases, and the majority vote's grouping and tie rules (the official code's).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  answersEquivalent, answersMatch, lastBoxed, majorityVote, normalizeAnswer, numbersClose, parseAnswer,
} from '../../src/visplay/answers.js';

/** [a, b, should match, what the pair is about]. */
const PAIRS: Array<[string, string, boolean, string]> = [
  // numbers
  ['1,000', '1000', true, 'thousands separator'],
  ['1,234,567.5', '1234567.5', true, 'several separators and decimals'],
  ['1 000 000', '1000000', true, 'space-separated thousands'],
  ['1{,}000', '1000', true, 'LaTeX thousands separator'],
  ['0.5', '1/2', true, 'decimal vs slash fraction'],
  ['0.5', '\\frac{1}{2}', true, 'decimal vs \\frac'],
  ['\\dfrac12', '\\frac{1}{2}', true, '\\dfrac shorthand'],
  ['\\tfrac{3}{4}', '0.75', true, '\\tfrac'],
  ['2/4', '1/2', true, 'unreduced fraction equals its value (not mathruler)'],
  ['$\\frac{3}{4}$', '0.75', true, 'inline math delimiters'],
  ['1\\frac{1}{2}', '1.5', true, 'mixed number'],
  ['-\\frac{1}{2}', '-0.5', true, 'negative fraction'],
  ['−3', '-3', true, 'Unicode minus'],
  ['-3', '3', false, 'sign matters'],
  ['2.50', '2.5', true, 'trailing zero'],
  ['3.0', '3', true, 'integer-valued decimal'],
  ['1.5e6', '1500000', true, 'scientific notation'],
  ['1.5 \\times 10^{6}', '1.5e6', true, 'LaTeX scientific notation'],
  ['1.5×10^6', '1500000', true, 'Unicode times'],
  ['0.3333333', '\\frac{1}{3}', true, 'within relative 1e-6'],
  ['0.333', '1/3', false, 'outside relative 1e-6'],
  ['1000000', '1000001', false, 'integers compare exactly'],
  ['2\\sqrt{3}', '\\sqrt{12}', true, 'roots evaluate'],
  ['\\frac{\\pi}{2}', '1.5707963', true, 'pi'],
  ['\\left( 3 \\right)', '3', true, '\\left( \\right)'],
  ['x = 5', '5', true, 'named value'],
  ['approximately 42', '42', true, 'hedge word'],
  ['Answer: 5', '5', true, 'answer lead-in'],
  ['The final answer is 12 apples', '12', true, 'answer sentence with a unit'],
  ['2020-01-01', '2018', false, 'a date is not a subtraction'],
  // percent and units
  ['50%', '50', true, 'percent sign dropped (mathruler)'],
  ['50\\%', '50', true, 'LaTeX percent dropped'],
  ['50%', '0.5', false, 'percent is not a fraction of one (mathruler)'],
  ['5 cm', '5', true, 'unit dropped'],
  ['5\\,\\text{cm}', '5', true, 'LaTeX unit'],
  ['12 apples', '12', true, 'counted noun dropped'],
  ['60 km/h', '60', true, 'compound unit'],
  ['3 m^2', '3', true, 'squared unit'],
  ['90^\\circ', '90', true, 'degree sign'],
  ['90°', '90 degrees', true, 'degree words'],
  ['\\$5', '5', true, 'currency'],
  ['12 apples', '13 apples', false, 'different counts'],
  ['two', '2', true, 'number word'],
  // options
  ['A', '(A)', true, 'parenthesized letter'],
  ['A', 'A.', true, 'letter with period'],
  ['B', 'option B', true, 'option prefix'],
  ['C) red car', 'C', true, 'letter with option text'],
  ['(D) 12', 'D', true, 'parenthesized letter with option text'],
  ['\\text{A}', 'A', true, '\\text{} wrapper'],
  ['\\textbf{(B)}', 'B', true, '\\textbf{} wrapper'],
  ['The answer is (C)', 'C', true, 'answer sentence'],
  ['b', 'B', true, 'case of a lone letter'],
  ['A', 'B', false, 'different letters'],
  ['A', 'a cat', false, 'an article is not an option'],
  ['C', '12', false, 'letter vs number'],
  // yes / no
  ['Yes.', 'yes', true, 'case and period'],
  ['YES', 'Yes', true, 'case'],
  ['No, it is not.', 'no', true, 'no with a reason'],
  ['yes', 'no', false, 'yes vs no'],
  ['Yes', 'Yesterday', false, 'a word starting with yes'],
  // text
  ['The Red Car', 'red car', true, 'case, article and spacing'],
  ['"blue"', 'blue', true, 'quotes'],
  ['\\mathrm{H_2O}', 'h_2o', true, '\\mathrm{} wrapper'],
  ['(1, 2)', '(1,2)', true, 'tuple spacing'],
  ['(1, 2)', '(2, 1)', false, 'tuple order'],
  ['cat', 'dog', false, 'different words'],
  ['', 'A', false, 'empty vs answer'],
];

describe('answersMatch: the equivalence table', () => {
  it(`has at least 40 pairs, both matching and not (${PAIRS.length} pairs)`, () => {
    assert.ok(PAIRS.length >= 40);
    assert.ok(PAIRS.some(([, , m]) => m) && PAIRS.some(([, , m]) => !m));
  });
  for (const [a, b, expected, about] of PAIRS) {
    it(`${expected ? 'matches' : 'does not match'}: ${JSON.stringify(a)} vs ${JSON.stringify(b)} (${about})`, () => {
      assert.equal(answersMatch(a, b), expected);
      assert.equal(answersMatch(b, a), expected, 'symmetric');
    });
  }
});

describe('answersMatch: the official cheap rules', () => {
  it('lumps together any two answers that both contain "no " (case-insensitive), as the code does', () => {
    assert.equal(answersMatch('No parking here', 'there is no car'), true);
    assert.equal(answersEquivalent('No parking here', 'there is no car'), false, 'grading does not use that rule');
  });
  it('equal strings match even when they do not parse', () => {
    assert.equal(answersMatch('∮ weird ∮', '∮ weird ∮'), true);
  });
});

describe('normalizeAnswer / parseAnswer', () => {
  it('gives the canonical forms', () => {
    assert.equal(normalizeAnswer(' (b) '), 'B');
    assert.equal(normalizeAnswer('Yes!'), 'yes');
    assert.equal(normalizeAnswer('\\dfrac{1}{4}'), '0.25');
    assert.equal(normalizeAnswer('1,000 apples'), '1000');
    assert.equal(normalizeAnswer('-0'), '0');
    assert.equal(normalizeAnswer('The  Eiffel Tower.'), 'eiffeltower');
    assert.equal(normalizeAnswer('$$ $$'), '');
  });
  it('classifies answers', () => {
    assert.equal(parseAnswer('A) 5').kind, 'option');
    assert.equal(parseAnswer('no.').kind, 'yesno');
    assert.equal(parseAnswer('3\\pi').kind, 'number');
    assert.equal(parseAnswer('a cat').kind, 'text');
    assert.equal(parseAnswer('\\frac{1}{0}').kind, 'text', 'division by zero is not a number');
    assert.equal(parseAnswer('').kind, 'empty');
  });
});

describe('numbersClose', () => {
  it('uses a relative tolerance, 1e-6 by default', () => {
    assert.equal(numbersClose(1, 1 + 1e-7), true);
    assert.equal(numbersClose(1, 1 + 1e-5), false);
    assert.equal(numbersClose(100, 104, 0.05), true);
    assert.equal(numbersClose(100, 106, 0.05), false);
    assert.equal(numbersClose(0, 1e-12), false, 'no absolute tolerance');
    assert.equal(numbersClose(0, 0), true);
  });
  it('reads strings as answers', () => {
    assert.equal(numbersClose('1,000 m', '1e3'), true);
    assert.equal(numbersClose('\\frac{1}{3}', '0.33', 0.02), true);
    assert.equal(numbersClose('A', '1'), false);
    assert.equal(numbersClose('abc', 'abc'), false, 'non-numbers are close to nothing');
  });
});

describe('lastBoxed', () => {
  it('takes the last box, with nested braces', () => {
    assert.equal(lastBoxed('first \\boxed{1}, finally \\boxed{\\frac{1}{2}}.'), '\\frac{1}{2}');
  });
  it('accepts a space before the brace and trims the content', () => {
    assert.equal(lastBoxed('so \\boxed {  42 } done'), '42');
  });
  it('is null without a box, and null when the last box never closes (truncated output)', () => {
    assert.equal(lastBoxed('the answer is 42'), null);
    assert.equal(lastBoxed('\\boxed{1} and then \\boxed{\\frac{2}{3'), null);
  });
  it('gives "" for an empty box', () => {
    assert.equal(lastBoxed('\\boxed{}'), '');
  });
});

describe('majorityVote', () => {
  it('groups equivalent answers and keeps the first-seen spelling', () => {
    assert.deepEqual(majorityVote(['0.5', 'B', '1/2', '(B)', '\\frac{1}{2}']), { silver: '0.5', count: 3 });
  });
  it('breaks ties by first occurrence (Counter/dict insertion order)', () => {
    assert.deepEqual(majorityVote(['7', 'C', 'C', '7']), { silver: '7', count: 2 });
    assert.deepEqual(majorityVote(['C', '7', '7', 'C']), { silver: 'C', count: 2 });
  });
  it('never lets the empty answer win', () => {
    assert.deepEqual(majorityVote(['', '', '', '3']), { silver: '3', count: 1 });
    assert.deepEqual(majorityVote(['', ' ']), { silver: '', count: 0 });
    assert.deepEqual(majorityVote([]), { silver: '', count: 0 });
  });
  it('joins an answer to the first group whose representative matches it (not transitive)', () => {
    // "no dogs" matches the "no cats" group by the "no " rule; "no" (no space) is its own yes/no group.
    assert.deepEqual(majorityVote(['no cats', 'no', 'no dogs', 'No.']), { silver: 'no cats', count: 2 });
  });
});
