// What the world model is taught to say (issue 7): the two roles' prompts, and the supervised
// targets of a labelled item.
//
// The world's prompts are short overrides of the VisPlay prompts (prompts.ts): the official
// Questioner instructions run to ~250 tokens, which would make every pre-training and Questioner
// step pay for a long prompt that a 4-layer model cannot read anyway. The tags (<type>, <question>,
// <answer>, \boxed{}) are the same, so the loop parses both roles' outputs unchanged; `evolve` gets
// these prompts through its --prompt-file, written next to the world.
import type { PromptOverrides } from '../visplay/prompts.js';
import type { BenchType } from '../visplay/eval.js';
import { benchQuestion, optionIndex } from '../visplay/eval.js';

export const WORLD_PROMPTS: Required<Pick<PromptOverrides, 'questioner' | 'reasoner'>> = {
  questioner: {
    user: 'Write one question about this image that takes a careful look to answer, then its answer, as ' +
      '<type>numerical or multiple choice</type><question>the question</question><answer>the answer</answer>.',
  },
  reasoner: {
    user: 'Question: {question}\nLook at the image, reason briefly inside <think></think>, then give the final answer inside \\boxed{}.',
  },
};

/** A labelled item as pretrain.jsonl / test.jsonl hold it (eval bench fields). */
export interface LabelledItem {
  question: string;
  options?: string[];
  answer: string;
  type: Extract<BenchType, 'numeric' | 'multiple choice' | 'yes/no'>;
}

/**
 * The Reasoner's target: one short step of reasoning in <think></think> (the official format
 * reward asks for it) that names what was seen, then the boxed answer. For options, the step names the option's text before its letter, so the model reads the
 * image for a colour or shape and then finds that word among the options (a copy, not a recall).
 */
export function reasonerTarget(item: LabelledItem): string {
  if (item.type === 'numeric') return `<think>I count ${item.answer}.</think>\n\\boxed{${item.answer}}`;
  if (item.options) {
    const index = optionIndex(item.answer, item.options);
    if (index === null) throw new Error(`answer ${item.answer} is not one of the options of "${item.question}"`);
    return `<think>It is ${item.options[index]}, option ${item.answer}.</think>\n\\boxed{${item.answer}}`;
  }
  return `<think>Looking at the image: ${item.answer.toLowerCase()}.</think>\n\\boxed{${item.answer}}`;
}

/** The Questioner's target: the item's question (options on their own lines) in the three tags. */
export function questionerTarget(item: LabelledItem): string {
  const type = item.type === 'numeric' ? 'numerical' : 'multiple choice';
  return `<type>${type}</type>\n<question>${benchQuestion(item)}</question>\n<answer>${item.answer}</answer>`;
}
