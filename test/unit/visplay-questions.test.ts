// The Questioner's output parser and the candidate filter, against the official code's rules.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { candidateDropReason, DEFAULT_BAND, parseQuestion } from '../../src/visplay/questions.js';

describe('parseQuestion', () => {
  it('parses the three tags and trims the fields', () => {
    const out = '<type>numerical</type>\n<question> How many birds are on the fence? </question>\n<answer> 4 </answer>';
    assert.deepEqual(parseQuestion(out), { valid: true, type: 'numerical', question: 'How many birds are on the fence?', answer: '4' });
  });

  it('removes whitespace around < > / first, as the code does (tags with spaces, and the text too)', () => {
    const out = '< type >multiple choice< / type > < question >Is the speed above 30 km / h?</question ><answer>Yes</ answer>';
    assert.deepEqual(parseQuestion(out), { valid: true, type: 'multiple choice', question: 'Is the speed above 30 km/h?', answer: 'Yes' });
  });

  it('allows text before, between and after the tags, across lines, and takes the first match', () => {
    const out = 'Sure!\n<type>regression</type>\nthen\n<question>How tall\nis the tree?</question>x<answer>12.5</answer> bye ' +
      '<type>numerical</type><question>second</question><answer>2</answer>';
    const parsed = parseQuestion(out);
    assert.equal(parsed.question, 'How tall\nis the tree?');
    assert.equal(parsed.answer, '12.5');
    assert.equal(parsed.type, 'regression');
  });

  it('is invalid with question "" when the tags are missing or out of order', () => {
    assert.deepEqual(parseQuestion('How many birds?'), { valid: false, type: '', question: '', answer: '' });
    assert.equal(parseQuestion('<question>q</question><type>numerical</type><answer>1</answer>').valid, false);
    assert.equal(parseQuestion('<type>numerical</type><question>q</question>').question, '');
  });

  it('is invalid, keeping its fields, when a tag is empty (the reward server skips such questions)', () => {
    const parsed = parseQuestion('<type>numerical</type><question>How many?</question><answer></answer>');
    assert.equal(parsed.valid, false);
    assert.equal(parsed.question, 'How many?');
    assert.equal(parseQuestion('<type> </type><question>q</question><answer>1</answer>').valid, false);
  });

  it('does not check the type against the three named types (the reward code does not)', () => {
    assert.equal(parseQuestion('<type>free text</type><question>q</question><answer>1</answer>').valid, true);
  });
});

describe('candidateDropReason', () => {
  const ok = { question: 'How many cars are parked?', silver: '4', confidence: 0.5 };

  it('keeps a candidate inside the band, bounds included', () => {
    assert.equal(candidateDropReason(ok), null);
    assert.equal(candidateDropReason({ ...ok, confidence: 0.3 }), null);
    assert.equal(candidateDropReason({ ...ok, confidence: 0.8 }), null);
    assert.deepEqual(DEFAULT_BAND, [0.3, 0.8]);
  });

  it('drops confidence outside the band', () => {
    assert.equal(candidateDropReason({ ...ok, confidence: 0.9 }), 'confidence 0.9 is outside [0.3, 0.8]');
    assert.equal(candidateDropReason({ ...ok, confidence: 0.2 }), 'confidence 0.2 is outside [0.3, 0.8]');
    assert.equal(candidateDropReason({ ...ok, confidence: 0.75 }, [0.3, 0.7]), 'confidence 0.75 is outside [0.3, 0.7]');
  });

  it('drops silver answers "" and "None"', () => {
    assert.equal(candidateDropReason({ ...ok, silver: '' }), 'no boxed answer to vote on');
    assert.equal(candidateDropReason({ ...ok, silver: 'None' }), 'the silver answer is "None"');
    assert.equal(candidateDropReason({ ...ok, silver: 'none' }), null, 'only the exact string, as the code');
  });

  it('drops questions mentioning "box" in any case, and proofs', () => {
    assert.equal(candidateDropReason({ ...ok, question: 'How many BOXES are stacked?' }), 'the question mentions "box"');
    assert.equal(candidateDropReason({ ...ok, question: '请证明三角形全等' }), 'the question asks for a proof (证明)');
  });

  it('drops silver answers containing "text" in any case', () => {
    assert.equal(candidateDropReason({ ...ok, silver: '\\text{red}' }), 'the silver answer contains "text"');
    assert.equal(candidateDropReason({ ...ok, silver: 'Textbook' }), 'the silver answer contains "text"');
  });
});
