// The prompts of the two roles (VISPLAY.md §5), paraphrased from the official code, and the user's
// overrides. Placement follows the code: in training, one user turn with the image after the text
// (verl's dataset appends the image token); in candidate generation and the reward server, the image
// first in the user turn after a system turn.
//
// The code uses the same prompts for Qwen2.5-VL and MiMo-VL (and renders MiMo's labelling prompts
// with Qwen's ChatML system line), so every family maps to the same set today; the registry is keyed
// by family so that one can diverge without touching callers. The tags <type>, <question>, <answer>
// and \boxed{} are literal: parseQuestion and lastBoxed read them.
import { readFileSync } from 'node:fs';
import type { ChatFamily, ChatMessage, ChatPart } from '../chat.js';
import { VisplayError } from '../errors.js';
import { describeFile, fileError } from '../files.js';
import { invalidArg } from '../validate.js';

export type PromptFamily = 'qwen2.5-vl' | 'mimo-vl' | 'default';
export const PROMPT_FAMILIES: readonly PromptFamily[] = ['qwen2.5-vl', 'mimo-vl', 'default'];

/** One role's prompt: an optional system turn and the user text; {question} and {type} are filled in. */
export interface PromptTemplate {
  system?: string;
  user: string;
}

/** A user's replacements (loadPromptOverrides): each role's template replaces that role's defaults. */
export interface PromptOverrides {
  questioner?: PromptTemplate;
  reasoner?: PromptTemplate;
}

/** When the Questioner is prompted: GRPO training (the default), or generating candidates. */
export type QuestionerPhase = 'train' | 'generate';
/** 'solve': reason step by step (labelling, training, eval); 'answer-only': the reward server's short form. */
export type ReasonerPhase = 'solve' | 'answer-only';

interface PhasePrompt extends PromptTemplate {
  /** The image goes before the user text (else after it). */
  imageFirst: boolean;
}

interface PromptSet {
  questioner: Record<QuestionerPhase, PhasePrompt>;
  reasoner: Record<ReasonerPhase, PhasePrompt>;
}

const QUESTIONER_INSTRUCTIONS = `You write questions about images. Study the image closely, then write exactly one question about it that takes reasoning to answer, not just a description of what is shown.

Pick exactly one question type:
- multiple choice: a Yes/No question, or four options labelled A, B, C and D with exactly one correct
- numerical: the answer is one specific number
- regression: the answer is a continuous value to estimate, such as a length, an amount or a coordinate

Then give the correct answer as a bare number or option, without units.

Reply with these three blocks and nothing else: no explanation, no other labels, no extra formatting.
<type>X</type>
<question>Y</question>
<answer>Z</answer>
X is exactly one of: multiple choice, numerical, regression.

For example:
<type>numerical</type>
<question>How many birds are sitting on the fence?</question>
<answer>4</answer>`;

/** The prompts of the official code, paraphrased. */
const CODE_PROMPTS: PromptSet = {
  questioner: {
    train: { user: QUESTIONER_INSTRUCTIONS, imageFirst: false },
    generate: {
      system: QUESTIONER_INSTRUCTIONS,
      user: 'Write one new, challenging reasoning question about this image, in exactly the format described.',
      imageFirst: true,
    },
  },
  reasoner: {
    solve: {
      user: 'Question: {question}\n\nUse the image and reason step by step. When you are done, write the final answer, short and clean, ' +
        'inside \\boxed{}. The final answer must appear inside \\boxed{} and nowhere else; a response without a boxed answer counts as wrong.',
      imageFirst: false,
    },
    'answer-only': {
      system: 'You answer questions about images from what the image shows. Reply with the final answer inside \\boxed{} ' +
        'and nothing else: no explanation, no other text.',
      user: 'Question: {question}\nQuestion type: {type}\nReply only with \\boxed{answer}, without units: just the number or the option.',
      imageFirst: true,
    },
  },
};

const PROMPTS: Readonly<Record<PromptFamily, PromptSet>> = {
  'qwen2.5-vl': CODE_PROMPTS,
  'mimo-vl': CODE_PROMPTS,
  default: CODE_PROMPTS,
};

/**
 * The prompt family to use: `name` as given ('qwen2.5-vl', 'mimo-vl', 'default'), or 'auto' for the
 * model's chat family (a model rendered with its own GGUF template gets 'default').
 */
export function resolvePromptFamily(name: string, chatFamily: ChatFamily): PromptFamily {
  if (name === 'auto') return chatFamily === 'native' ? 'default' : chatFamily;
  if ((PROMPT_FAMILIES as readonly string[]).includes(name)) return name as PromptFamily;
  throw invalidArg('promptFamily', `one of auto, ${PROMPT_FAMILIES.join(', ')}`, name);
}

/** The Questioner's conversation for one image (the image is the conversation's only image part). */
export function questionerMessages(family: PromptFamily, overrides?: PromptOverrides, phase: QuestionerPhase = 'train'): ChatMessage[] {
  const base = PROMPTS[family].questioner[phase];
  return messages(overrides?.questioner ?? base, base.imageFirst, {});
}

/** The Reasoner's conversation for one question about one image. */
export function reasonerMessages(
  family: PromptFamily,
  question: string,
  type: string,
  overrides?: PromptOverrides,
  phase: ReasonerPhase = 'solve',
): ChatMessage[] {
  const base = PROMPTS[family].reasoner[phase];
  return messages(overrides?.reasoner ?? base, base.imageFirst, { question, type });
}

/**
 * Reads a prompt override file, JSON of the form
 *   { "questioner": { "system"?: "...", "user": "..." }, "reasoner": { "system"?: "...", "user": "..." } }
 * (either role may be left out). A role's template replaces that role's defaults in every phase
 * (the phase keeps its image placement). The reasoner's text must contain {question}, and may
 * contain {type}; the questioner's may contain neither (there is no question yet). Other braces are
 * literal, so "\\boxed{}" and "\\boxed{answer}" are fine.
 */
export function loadPromptOverrides(file: string): PromptOverrides {
  const subject = describeFile(file, 'prompt file');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fileError(e, subject);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new VisplayError('ERR_INVALID_ARG', `${subject} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!isPlainObject(value)) throw invalidArg(subject, 'an object with "questioner" and/or "reasoner"', value);
  for (const key of Object.keys(value)) {
    if (key !== 'questioner' && key !== 'reasoner') {
      throw new VisplayError('ERR_INVALID_ARG', `${subject}: unknown key "${key}" (expected "questioner" and/or "reasoner")`);
    }
  }
  if (value.questioner === undefined && value.reasoner === undefined) {
    throw new VisplayError('ERR_INVALID_ARG', `${subject} sets neither "questioner" nor "reasoner"`);
  }
  const overrides: PromptOverrides = {};
  if (value.questioner !== undefined) overrides.questioner = readTemplate(subject, 'questioner', value.questioner);
  if (value.reasoner !== undefined) overrides.reasoner = readTemplate(subject, 'reasoner', value.reasoner);

  const q = overrides.questioner;
  if (q && /\{(?:question|type)\}/.test(`${q.system ?? ''}${q.user}`)) {
    throw new VisplayError('ERR_INVALID_ARG', `${subject}: the questioner prompt cannot use {question} or {type} (there is no question yet)`);
  }
  const r = overrides.reasoner;
  if (r && !`${r.system ?? ''}${r.user}`.includes('{question}')) {
    throw new VisplayError('ERR_INVALID_ARG', `${subject}: the reasoner prompt must contain {question}, where the question goes`);
  }
  return overrides;
}

// ---- internals ----------------------------------------------------------------------------------

function messages(template: PromptTemplate, imageFirst: boolean, values: { question?: string; type?: string }): ChatMessage[] {
  const image: ChatPart = { type: 'image' };
  const text: ChatPart = { type: 'text', text: fill(template.user, values) };
  const out: ChatMessage[] = [];
  if (template.system !== undefined) out.push({ role: 'system', content: fill(template.system, values) });
  out.push({ role: 'user', content: imageFirst ? [image, text] : [text, image] });
  return out;
}

/** Fills {question} and {type} in one pass, so a question that itself contains "{type}" stays as written. */
function fill(template: string, values: { question?: string; type?: string }): string {
  return template.replace(/\{(question|type)\}/g, (whole, key: 'question' | 'type') => values[key] ?? whole);
}

function readTemplate(subject: string, role: string, value: unknown): PromptTemplate {
  if (!isPlainObject(value)) throw invalidArg(`${role} in ${subject}`, 'an object with "user" and optionally "system"', value);
  for (const key of Object.keys(value)) {
    if (key !== 'system' && key !== 'user') {
      throw new VisplayError('ERR_INVALID_ARG', `${subject}: unknown key "${role}.${key}" (expected "system" and/or "user")`);
    }
  }
  if (typeof value.user !== 'string' || value.user.trim() === '') {
    throw invalidArg(`${role}.user in ${subject}`, 'non-empty string', value.user);
  }
  if (value.system !== undefined && (typeof value.system !== 'string' || value.system.trim() === '')) {
    throw invalidArg(`${role}.system in ${subject}`, 'non-empty string', value.system);
  }
  return value.system === undefined ? { user: value.user } : { system: value.system, user: value.user };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
