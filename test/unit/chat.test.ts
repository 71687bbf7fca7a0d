import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  CHAT_FORMATS, QWEN25VL_CHAT_TEMPLATE, detectChatFamily, renderWith, splitThinking, userTurn, type ChatMessage,
} from '../../src/chat.js';

const MARKER = '<__media__>';
const opts = { marker: MARKER, addGenerationPrompt: true };
const qwen = CHAT_FORMATS['qwen2.5-vl'];
const mimo = CHAT_FORMATS['mimo-vl'];

describe('Qwen2.5-VL format', () => {
  it('prepends the default system turn when the conversation has none', () => {
    assert.equal(qwen.render([{ role: 'user', content: 'Hi' }], opts),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
      '<|im_start|>user\nHi<|im_end|>\n' +
      '<|im_start|>assistant\n');
  });

  it('uses the given system turn instead', () => {
    assert.equal(qwen.render([{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'Hi' }], opts),
      '<|im_start|>system\nBe terse.<|im_end|>\n' +
      '<|im_start|>user\nHi<|im_end|>\n' +
      '<|im_start|>assistant\n');
  });

  it('renders image parts as the marker, in place, several per turn', () => {
    const messages: ChatMessage[] = [{
      role: 'user',
      content: [{ type: 'image' }, { type: 'text', text: 'Compare ' }, { type: 'image' }, { type: 'text', text: 'with the first.' }],
    }];
    assert.equal(qwen.render(messages, opts),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
      `<|im_start|>user\n${MARKER}Compare ${MARKER}with the first.<|im_end|>\n` +
      '<|im_start|>assistant\n');
  });

  it('renders earlier turns verbatim and omits the generation prompt on request', () => {
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Q1' }, { role: 'assistant', content: 'A1' }, { role: 'user', content: 'Q2' },
    ];
    assert.equal(qwen.render(messages, { marker: MARKER, addGenerationPrompt: false }),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
      '<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n');
  });

  it('a system message after the first turn is an ordinary turn, and the default still opens', () => {
    const out = qwen.render([{ role: 'user', content: 'a' }, { role: 'system', content: 'b' }], opts);
    assert.equal(out,
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\na<|im_end|>\n' +
      '<|im_start|>system\nb<|im_end|>\n<|im_start|>assistant\n');
  });

  it('exports the real template text', () => {
    assert.ok(QWEN25VL_CHAT_TEMPLATE.startsWith('{% set image_count = namespace(value=0) %}'));
    assert.ok(QWEN25VL_CHAT_TEMPLATE.includes("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"));
    assert.ok(QWEN25VL_CHAT_TEMPLATE.includes('<|vision_start|><|image_pad|><|vision_end|>'));
    assert.ok(QWEN25VL_CHAT_TEMPLATE.endsWith('{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}'));
  });
});

describe('userTurn', () => {
  it('puts the images first, then the text', () => {
    assert.deepEqual(userTurn('What is this?', 2), {
      role: 'user', content: [{ type: 'image' }, { type: 'image' }, { type: 'text', text: 'What is this?' }],
    });
    assert.equal(qwen.render([userTurn('Describe.', 1)], opts),
      `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${MARKER}Describe.<|im_end|>\n<|im_start|>assistant\n`);
  });
});

describe('MiMo-VL format', () => {
  it('renders ChatML with MiMo\'s default system prompt', () => {
    assert.equal(mimo.render([userTurn('Solve it.', 1)], opts),
      '<|im_start|>system\nYou are MiMo, an AI assistant developed by Xiaomi.<|im_end|>\n' +
      `<|im_start|>user\n${MARKER}Solve it.<|im_end|>\n<|im_start|>assistant\n`);
    assert.deepEqual(mimo.thinking, { open: '<think>', close: '</think>' });
    assert.equal(qwen.thinking, null);
  });

  it('splits reasoning from the answer', () => {
    assert.deepEqual(splitThinking('<think>\nThe sum is 4.\n</think>\n\nThe answer is \\boxed{4}.'),
      { thinking: 'The sum is 4.', answer: 'The answer is \\boxed{4}.' });
  });

  it('handles a missing opening marker, a cut-off reasoning, and no reasoning at all', () => {
    assert.deepEqual(splitThinking('counting...</think>5'), { thinking: 'counting...', answer: '5' });
    assert.deepEqual(splitThinking('<think>still counting'), { thinking: 'still counting', answer: '' });
    assert.deepEqual(splitThinking(' just 5 '), { thinking: null, answer: 'just 5' });
    assert.deepEqual(splitThinking('<think></think>5'), { thinking: '', answer: '5' });
  });
});

describe('detectChatFamily', () => {
  it('knows MiMo-VL by name or template before Qwen by architecture', () => {
    assert.equal(detectChatFamily({ architecture: 'qwen2vl', name: 'MiMo-VL-7B-RL', chatTemplate: null }), 'mimo-vl');
    assert.equal(detectChatFamily({ architecture: 'qwen2vl', name: 'model', chatTemplate: "{{- 'You are MiMo, ...' }}" }), 'mimo-vl');
    assert.equal(detectChatFamily({ architecture: 'qwen2vl', name: 'Qwen2.5-VL-7B-Instruct', chatTemplate: QWEN25VL_CHAT_TEMPLATE }), 'qwen2.5-vl');
    assert.equal(detectChatFamily({ architecture: 'qwen2vl', name: 'visplay tiny', chatTemplate: null }), 'qwen2.5-vl');
    assert.equal(detectChatFamily({ architecture: 'gemma3', name: 'Gemma 3', chatTemplate: '{{ bos_token }}' }), 'native');
  });
});

describe('renderWith', () => {
  it('uses the registry for known families and never calls the binding', () => {
    const out = renderWith('qwen2.5-vl', [userTurn('x')], opts, () => assert.fail('native template called'));
    assert.ok(out.endsWith('<|im_start|>assistant\n'));
  });

  it('flattens parts to strings with markers for the binding\'s template', () => {
    const seen: unknown[] = [];
    const out = renderWith('native', [{ role: 'system', content: 'S' }, userTurn('Look.', 1)], opts, (messages, addAssistant) => {
      seen.push(messages, addAssistant);
      return 'rendered';
    });
    assert.equal(out, 'rendered');
    assert.deepEqual(seen, [[{ role: 'system', content: 'S' }, { role: 'user', content: `${MARKER}Look.` }], true]);
  });
});
