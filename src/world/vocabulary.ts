// The world model's vocabulary (issue 7): the texts whose Qwen2 tokens it keeps.
//
// The world's prompts, questions and answers use a few hundred distinct Qwen2 tokens, but the tiny
// model's head has a row for each of 151,936: in pre-training that head is ~98 % of a step's
// arithmetic (per trained token, forward and backward, ~0.12 GFLOP through the head against ~2.4
// MFLOP through four 128-wide blocks). makeTinyModel({ vocabularyTexts }) keeps only the tokens
// these texts need (plus the 256 byte tokens and Qwen2.5-VL's special tokens), with a merge list that
// tokenizes every one of these texts exactly as the full Qwen2 vocabulary does; other text still
// tokenizes, one token per byte where no merge applies.
//
// The texts are what the model is ever shown or taught to say, cut at the chat template's special
// tokens (each piece between them is tokenized on its own, so the pieces are exact):
//   the template's own text ("system\nYou are a helpful assistant.", "user\n", ...),
//   both roles' prompts as the world pipeline renders them (WORLD_PROMPTS), with the questions of
//   a sample of items of every family, and both roles' pre-training targets for those items.
import type { ChatMessage } from '../chat.js';
import { benchQuestion } from '../visplay/eval.js';
import { questionerMessages, reasonerMessages } from '../visplay/prompts.js';
import { deriveSeed } from './generator.js';
import { WORLD_PROMPTS, questionerTarget, reasonerTarget } from './prompts.js';
import { FAMILIES, benchType, makeItem, planFor } from './questions.js';

/** Items drawn per family: 240 = 10 cycles of every family's plans (counts 1-6, slots A-D, Yes/No). */
const ITEMS_PER_FAMILY = 240;

/** The text pieces of a conversation between the chat template's special tokens. */
function messageTexts(messages: readonly ChatMessage[]): string[] {
  const out: string[] = [];
  for (const m of messages) {
    out.push(`${m.role}\n`);
    if (typeof m.content === 'string') out.push(m.content);
    else for (const part of m.content) if (part.type === 'text') out.push(part.text);
  }
  return out;
}

/** Every text piece the world model is shown or taught (deduplicated, in a fixed order). */
export function worldVocabularyTexts(): string[] {
  const texts = new Set<string>(['system\nYou are a helpful assistant.', '\n', 'user\n', 'assistant\n']);
  const add = (list: Iterable<string>) => { for (const t of list) if (t !== '') texts.add(t); };
  add(messageTexts(questionerMessages('default', WORLD_PROMPTS, 'train')));
  add(messageTexts(questionerMessages('default', WORLD_PROMPTS, 'generate')));
  for (const family of FAMILIES) {
    for (let k = 0; k < ITEMS_PER_FAMILY; k++) {
      const world = makeItem(deriveSeed('vocabulary', family, k), planFor(family, k));
      const item = { question: world.question, options: world.options, answer: world.answer, type: benchType(world) };
      add(messageTexts(reasonerMessages('default', benchQuestion(item), world.type, WORLD_PROMPTS, 'solve')));
      add(messageTexts(reasonerMessages('default', benchQuestion(item), world.type, WORLD_PROMPTS, 'answer-only')));
      add([reasonerTarget(item), questionerTarget(item)]);
    }
  }
  return [...texts];
}
