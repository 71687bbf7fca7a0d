// The prompt registry (messages, image placement, placeholders), family resolution, and the
// override file's validation messages.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CHAT_FORMATS, type ChatMessage, type ChatPart } from '../../src/chat.js';
import { VisplayError, type VisplayErrorCode } from '../../src/errors.js';
import {
  loadPromptOverrides, PROMPT_FAMILIES, questionerMessages, reasonerMessages, resolvePromptFamily,
} from '../../src/visplay/prompts.js';

function parts(message: ChatMessage): ChatPart[] {
  assert.ok(Array.isArray(message.content), 'content is a list of parts');
  return message.content;
}

function textOf(message: ChatMessage): string {
  return typeof message.content === 'string' ? message.content : message.content.map((p) => (p.type === 'text' ? p.text : '')).join('');
}

function throwsWith(fn: () => unknown, code: VisplayErrorCode, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VisplayError, `expected a VisplayError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  });
}

describe('questionerMessages', () => {
  it('training: one user turn, instructions then the image (verl appends the image)', () => {
    const m = questionerMessages('qwen2.5-vl');
    assert.equal(m.length, 1);
    assert.equal(m[0]!.role, 'user');
    const p = parts(m[0]!);
    assert.deepEqual(p.map((x) => x.type), ['text', 'image']);
    const text = textOf(m[0]!);
    for (const s of ['<type>X</type>', '<question>Y</question>', '<answer>Z</answer>', 'multiple choice', 'numerical', 'regression', 'without units']) {
      assert.ok(text.includes(s), `mentions ${s}`);
    }
  });

  it('generation: a system turn with the instructions, then the image and a short request', () => {
    const m = questionerMessages('qwen2.5-vl', undefined, 'generate');
    assert.deepEqual(m.map((x) => x.role), ['system', 'user']);
    assert.equal(textOf(m[0]!), textOf(questionerMessages('qwen2.5-vl')[0]!));
    assert.deepEqual(parts(m[1]!).map((x) => x.type), ['image', 'text']);
    assert.match(textOf(m[1]!), /one new, challenging reasoning question/);
  });

  it('renders through the Qwen2.5-VL template with the image marker at the end of the user turn', () => {
    const prompt = CHAT_FORMATS['qwen2.5-vl'].render(questionerMessages('qwen2.5-vl'), { marker: '<IMG>', addGenerationPrompt: true });
    assert.ok(prompt.startsWith('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n'));
    assert.ok(prompt.endsWith('<answer>4</answer><IMG><|im_end|>\n<|im_start|>assistant\n'));
  });

  it('is defined for every family (the official code uses one set for all)', () => {
    for (const family of PROMPT_FAMILIES) assert.deepEqual(questionerMessages(family), questionerMessages('qwen2.5-vl'));
  });
});

describe('reasonerMessages', () => {
  it('solve: the question then the image, step by step, the final answer only in \\boxed{}', () => {
    const m = reasonerMessages('mimo-vl', 'How many cats?', 'numerical');
    assert.equal(m.length, 1);
    assert.deepEqual(parts(m[0]!).map((x) => x.type), ['text', 'image']);
    const text = textOf(m[0]!);
    assert.ok(text.startsWith('Question: How many cats?\n'));
    assert.match(text, /step by step/);
    assert.match(text, /inside \\boxed\{\}/);
  });

  it('answer-only: the reward server form, with the type and the image first', () => {
    const m = reasonerMessages('default', 'How many cats?', 'numerical', undefined, 'answer-only');
    assert.deepEqual(m.map((x) => x.role), ['system', 'user']);
    assert.deepEqual(parts(m[1]!).map((x) => x.type), ['image', 'text']);
    assert.match(textOf(m[1]!), /Question: How many cats\?\nQuestion type: numerical\n/);
  });
});

describe('overrides', () => {
  it('replace a role in every phase, keeping the phase image placement', () => {
    const overrides = { questioner: { user: 'Ask something hard.' } };
    assert.deepEqual(questionerMessages('qwen2.5-vl', overrides),
      [{ role: 'user', content: [{ type: 'text', text: 'Ask something hard.' }, { type: 'image' }] }]);
    assert.deepEqual(questionerMessages('qwen2.5-vl', overrides, 'generate'),
      [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Ask something hard.' }] }]);
  });

  it('fill {question} and {type} once, leaving other braces and placeholder text inside the question alone', () => {
    const overrides = { reasoner: { system: 'Type: {type}.', user: 'Q: {question} Answer in \\boxed{answer}.' } };
    const m = reasonerMessages('qwen2.5-vl', 'Is {type} a word?', 'multiple choice', overrides);
    assert.deepEqual(m, [
      { role: 'system', content: 'Type: multiple choice.' },
      { role: 'user', content: [{ type: 'text', text: 'Q: Is {type} a word? Answer in \\boxed{answer}.' }, { type: 'image' }] },
    ]);
  });
});

describe('resolvePromptFamily', () => {
  it("maps 'auto' to the chat family ('native' models get 'default') and accepts the names", () => {
    assert.equal(resolvePromptFamily('auto', 'qwen2.5-vl'), 'qwen2.5-vl');
    assert.equal(resolvePromptFamily('auto', 'mimo-vl'), 'mimo-vl');
    assert.equal(resolvePromptFamily('auto', 'native'), 'default');
    assert.equal(resolvePromptFamily('mimo-vl', 'native'), 'mimo-vl');
  });
  it('rejects other names', () => {
    throwsWith(() => resolvePromptFamily('llama', 'native'), 'ERR_INVALID_ARG',
      'Expected one of auto, qwen2.5-vl, mimo-vl, default for promptFamily but received llama of type string');
  });
});

describe('loadPromptOverrides', () => {
  const dir = mkdtempSync(join(tmpdir(), 'visplay-prompts-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let counter = 0;
  const file = (content: string): string => {
    const path = join(dir, `p${counter++}.json`);
    writeFileSync(path, content);
    return path;
  };

  it('reads both roles', () => {
    const path = file(JSON.stringify({ questioner: { system: 'S', user: 'U' }, reasoner: { user: '{question} ({type})' } }));
    assert.deepEqual(loadPromptOverrides(path), { questioner: { system: 'S', user: 'U' }, reasoner: { user: '{question} ({type})' } });
  });

  it('reads one role', () => {
    assert.deepEqual(loadPromptOverrides(file('{"reasoner": {"user": "Q: {question}"}}')), { reasoner: { user: 'Q: {question}' } });
  });

  it('names a missing file', () => {
    const path = join(dir, 'missing.json');
    throwsWith(() => loadPromptOverrides(path), 'ERR_FILE_NOT_FOUND', `prompt file ${path} does not exist`);
  });

  it('rejects what is not JSON, not an object, or unknown keys', () => {
    const bad = file('{ questioner: ');
    assert.throws(() => loadPromptOverrides(bad), (e: unknown) =>
      e instanceof VisplayError && e.code === 'ERR_INVALID_ARG' && e.message.startsWith(`prompt file ${bad} is not valid JSON: `));
    const arr = file('[1]');
    throwsWith(() => loadPromptOverrides(arr), 'ERR_INVALID_ARG',
      `Expected an object with "questioner" and/or "reasoner" for prompt file ${arr} but received [1] of type object`);
    const unknown = file('{"solver": {"user": "x"}}');
    throwsWith(() => loadPromptOverrides(unknown), 'ERR_INVALID_ARG',
      `prompt file ${unknown}: unknown key "solver" (expected "questioner" and/or "reasoner")`);
    const inner = file('{"reasoner": {"user": "{question}", "assistant": "x"}}');
    throwsWith(() => loadPromptOverrides(inner), 'ERR_INVALID_ARG',
      `prompt file ${inner}: unknown key "reasoner.assistant" (expected "system" and/or "user")`);
    const empty = file('{}');
    throwsWith(() => loadPromptOverrides(empty), 'ERR_INVALID_ARG', `prompt file ${empty} sets neither "questioner" nor "reasoner"`);
  });

  it('rejects missing or empty texts', () => {
    const num = file('{"reasoner": {"user": 5}}');
    throwsWith(() => loadPromptOverrides(num), 'ERR_INVALID_ARG',
      `Expected non-empty string for reasoner.user in prompt file ${num} but received 5 of type number`);
    const sys = file('{"questioner": {"system": "", "user": "Ask."}}');
    throwsWith(() => loadPromptOverrides(sys), 'ERR_INVALID_ARG',
      `Expected non-empty string for questioner.system in prompt file ${sys} but received  of type string`);
    const role = file('{"questioner": "Ask."}');
    throwsWith(() => loadPromptOverrides(role), 'ERR_INVALID_ARG',
      `Expected an object with "user" and optionally "system" for questioner in prompt file ${role} but received Ask. of type string`);
  });

  it('checks the placeholders: the reasoner needs {question}, the questioner has none to fill', () => {
    const noQuestion = file('{"reasoner": {"user": "Answer in \\\\boxed{}."}}');
    throwsWith(() => loadPromptOverrides(noQuestion), 'ERR_INVALID_ARG',
      `prompt file ${noQuestion}: the reasoner prompt must contain {question}, where the question goes`);
    const inSystem = file('{"reasoner": {"system": "About: {question}", "user": "Answer."}}');
    assert.equal(loadPromptOverrides(inSystem).reasoner?.system, 'About: {question}');
    const qWithPlaceholder = file('{"questioner": {"user": "Ask a {type} question."}}');
    throwsWith(() => loadPromptOverrides(qWithPlaceholder), 'ERR_INVALID_ARG',
      `prompt file ${qWithPlaceholder}: the questioner prompt cannot use {question} or {type} (there is no question yet)`);
  });
});
