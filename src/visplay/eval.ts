// Evaluation on a benchmark the user brings as JSONL (docs/benchmarks.md): greedy Reasoner answers,
// the last \boxed{} as the prediction, scored per answer type; free-form answers are judged by an
// OpenAI-compatible chat endpoint (the official code judges every answer with GLM-4-Flash; we judge
// only what rules cannot: VISPLAY.md §6).
//
//   loadBench / parseBench   the JSONL, bad lines skipped and reported by line number
//   scoreAnswer              rule-based scoring per type (pure)
//   askJudge                 one yes/no question to the judge, with clear errors (ERR_JUDGE)
//   evaluate                 all of it through the rollout engine, optionally with a LoRA policy
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import sharp from 'sharp';
import { VisplayError } from '../errors.js';
import type { Model } from '../model.js';
import type { Policy } from '../policy.js';
import type { RolloutEngine, RolloutRequest } from '../rollout.js';
import * as check from '../validate.js';
import { answersEquivalent, lastBoxed, numbersClose, parseAnswer } from './answers.js';
import { reasonerMessages, resolvePromptFamily, type PromptFamily, type PromptOverrides } from './prompts.js';
import type { EvalItemResult, EvalSummary } from './records.js';

// ---- the benchmark file -------------------------------------------------------------------------

export const BENCH_TYPES = ['multiple choice', 'yes/no', 'numeric', 'short', 'free-form'] as const;
export type BenchType = (typeof BENCH_TYPES)[number];

export interface BenchItem {
  /** Position among the usable items (0-based). */
  index: number;
  /** Line of the JSONL file (1-based). */
  line: number;
  id?: string;
  /** Absolute path. */
  image: string;
  question: string;
  options?: string[];
  /** As written; for multiple choice with options, `choice` is the option it names. */
  answer: string;
  /** Index of the correct option (multiple choice with options). */
  choice?: number;
  type: BenchType;
  /** Relative tolerance of numeric answers (default: numbersClose's own). */
  tolerance?: number;
}

export interface BenchProblem {
  line: number;
  message: string;
}

export interface Bench {
  /** The JSONL file, absolute ('' when parsed from text). */
  path: string;
  items: BenchItem[];
  /** Lines that were skipped, and why. */
  skipped: BenchProblem[];
}

/**
 * Parses a benchmark's JSONL text; image paths are resolved against `baseDir` (the file's folder).
 * Bad lines are skipped and listed; no usable line at all is an error (ERR_INVALID_ARG).
 */
export function parseBench(text: string, options: { baseDir: string; path?: string }): Bench {
  const items: BenchItem[] = [];
  const skipped: BenchProblem[] = [];
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    if (raw.trim() === '') continue;
    const line = i + 1;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      skipped.push({ line, message: 'not valid JSON' });
      continue;
    }
    const item = parseBenchItem(value, options.baseDir);
    if (typeof item === 'string') skipped.push({ line, message: item });
    else items.push({ ...item, index: items.length, line });
  }
  const path = options.path ?? '';
  if (items.length === 0) {
    const where = path ? `benchmark ${path}` : 'the benchmark';
    const why = skipped.length === 0 ? 'it is empty' : `${describeProblems(skipped)}`;
    throw new VisplayError('ERR_INVALID_ARG', `${where} has no usable line: ${why} (see docs/benchmarks.md for the format)`);
  }
  return { path, items, skipped };
}

/** "line 2: not valid JSON; line 5: ..." (the first few). */
export function describeProblems(problems: readonly BenchProblem[], limit = 3): string {
  const shown = problems.slice(0, limit).map((p) => `line ${p.line}: ${p.message}`);
  if (problems.length > limit) shown.push(`${problems.length - limit} more`);
  return shown.join('; ');
}

/** One line's item, or why it cannot be used. */
export function parseBenchItem(value: unknown, baseDir: string): Omit<BenchItem, 'index' | 'line'> | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected a JSON object';
  const o = value as Record<string, unknown>;
  if (typeof o.image !== 'string' || o.image.trim() === '') return 'needs "image": the path of the image';
  if (typeof o.question !== 'string' || o.question.trim() === '') return 'needs "question": a non-empty string';
  const answer = typeof o.answer === 'number' && Number.isFinite(o.answer) ? String(o.answer) : o.answer;
  if (typeof answer !== 'string' || answer.trim() === '') return 'needs "answer": a non-empty string (or a number)';

  let options: string[] | undefined;
  if (o.options !== undefined) {
    if (!Array.isArray(o.options) || o.options.length < 2 || o.options.length > 26) return '"options" must be a list of 2 to 26 answers';
    options = [];
    for (const option of o.options) {
      if (typeof option === 'number' && Number.isFinite(option)) options.push(String(option));
      else if (typeof option === 'string' && option.trim() !== '') options.push(option);
      else return '"options" must hold non-empty strings';
    }
  }
  let type: BenchType;
  if (o.type === undefined) type = inferType(answer, options);
  else if (typeof o.type === 'string' && (BENCH_TYPES as readonly string[]).includes(o.type)) type = o.type as BenchType;
  else return `"type" must be one of ${BENCH_TYPES.map((t) => `"${t}"`).join(', ')}`;
  let tolerance: number | undefined;
  if (o.tolerance !== undefined) {
    if (typeof o.tolerance !== 'number' || !Number.isFinite(o.tolerance) || o.tolerance < 0) return '"tolerance" must be a non-negative number';
    if (type !== 'numeric') return '"tolerance" applies to numeric items only';
    tolerance = o.tolerance;
  }
  let id: string | undefined;
  if (o.id !== undefined) {
    if (typeof o.id !== 'string' && typeof o.id !== 'number') return '"id" must be a string';
    id = String(o.id);
  }

  let choice: number | undefined;
  if (type === 'multiple choice' && options) {
    const c = optionIndex(answer, options);
    if (c === null) return `"answer" ${JSON.stringify(answer)} names none of the options (give a letter A-${letter(options.length - 1)} or an option's text)`;
    choice = c;
  } else if (options && type !== 'multiple choice') {
    return `"options" belong to multiple-choice items, not ${type}`;
  }
  if (type === 'yes/no' && yesNo(answer) === null) return `"answer" of a yes/no item must be yes or no, not ${JSON.stringify(answer)}`;
  if (type === 'numeric' && parseAnswer(answer).kind !== 'number') return `"answer" of a numeric item must be a number, not ${JSON.stringify(answer)}`;

  const image = isAbsolute(o.image) ? o.image : resolve(baseDir, o.image);
  return {
    ...(id === undefined ? {} : { id }), image, question: o.question, ...(options ? { options } : {}), answer,
    ...(choice === undefined ? {} : { choice }), type, ...(tolerance === undefined ? {} : { tolerance }),
  };
}

/** A type from the answer's form (answers.ts's classes): an option letter, yes/no, a number, else short. */
function inferType(answer: string, options: string[] | undefined): BenchType {
  if (options) return 'multiple choice';
  switch (parseAnswer(answer).kind) {
    case 'option': return 'multiple choice';
    case 'yesno': return 'yes/no';
    case 'number': return 'numeric';
    default: return 'short';
  }
}

/**
 * Reads a benchmark file; lines whose image is missing or is not an image are skipped too (checked
 * from the file header only, so this stays quick for thousands of items).
 */
export async function loadBench(path: string): Promise<Bench> {
  const file = resolve(check.nonEmptyString('bench', path));
  if (!existsSync(file)) throw new VisplayError('ERR_FILE_NOT_FOUND', `benchmark file ${file} does not exist`);
  if (statSync(file).isDirectory()) throw new VisplayError('ERR_INVALID_ARG', `benchmark ${file} is a folder; expected a JSONL file`);
  const bench = parseBench(readFileSync(file, 'utf8'), { baseDir: dirname(file), path: file });

  const verdicts = new Map<string, Promise<string | null>>();
  const verdict = (image: string) => {
    let v = verdicts.get(image);
    if (!v) {
      v = imageProblem(image);
      verdicts.set(image, v);
    }
    return v;
  };
  const problems = await mapLimit(bench.items, 16, (item) => verdict(item.image));
  const items: BenchItem[] = [];
  const skipped = [...bench.skipped];
  bench.items.forEach((item, i) => {
    const problem = problems[i];
    if (problem) skipped.push({ line: item.line, message: problem });
    else items.push({ ...item, index: items.length });
  });
  skipped.sort((a, b) => a.line - b.line);
  if (items.length === 0) {
    throw new VisplayError('ERR_INVALID_ARG', `benchmark ${file} has no usable line: ${describeProblems(skipped)}`);
  }
  return { path: file, items, skipped };
}

async function imageProblem(path: string): Promise<string | null> {
  if (!existsSync(path)) return `image ${path} does not exist`;
  try {
    const meta = await sharp(path).metadata();
    if (!meta.width || !meta.height) return `image ${path} has no pixels`;
    return null;
  } catch (e) {
    return `image ${path} does not decode: ${(e as Error).message}`;
  }
}

// ---- prompts and scoring --------------------------------------------------------------------------

function letter(i: number): string {
  return String.fromCharCode(65 + i);
}

/** The question as the Reasoner sees it: multiple-choice options follow as "A. ...\nB. ...". */
export function benchQuestion(item: Pick<BenchItem, 'question' | 'options'>): string {
  if (!item.options) return item.question;
  return `${item.question}\n${item.options.map((o, i) => `${letter(i)}. ${o}`).join('\n')}`;
}

/** The VisPlay question type (VISPLAY.md §5) whose answer format a benchmark type asks for. */
export function visplayType(type: BenchType): string {
  switch (type) {
    case 'multiple choice':
    case 'yes/no':
      return 'multiple choice';
    case 'numeric':
      return 'numerical';
    default:
      return type;
  }
}

/**
 * The option an answer names: a letter in its usual spellings ("B", "(B)", "B.", "B) text",
 * "option B"; answers.ts reads A-J, letters beyond J are read here), else the one option whose text
 * it equals or is equivalent to (answersEquivalent: "60" names "60 degrees"). Null if none or several.
 */
export function optionIndex(answer: string, options: readonly string[]): number | null {
  const s = answer.trim();
  const parsed = parseAnswer(s);
  const m = parsed.kind === 'option' ? [s, parsed.canonical] : /^\(?([A-Z])\)?(?:[.):]\s|[.):]?$)/.exec(s);
  if (m) {
    const i = m[1]!.toUpperCase().charCodeAt(0) - 65;
    return i >= 0 && i < options.length ? i : null;
  }
  const exact = options.findIndex((o) => o.trim().toLowerCase() === s.toLowerCase());
  if (exact !== -1) return exact;
  const matching = options.map((o, i) => (answersEquivalent(s, o) ? i : -1)).filter((i) => i !== -1);
  return matching.length === 1 ? matching[0]! : null;
}

/** "yes"/"no" from an answer ("Yes.", "no, because ...", "True"); null if it is neither. */
export function yesNo(answer: string): 'yes' | 'no' | null {
  const s = answer.trim().toLowerCase().replace(/^[^a-z]+/, '');
  if (/^(yes|true|correct)\b/.test(s)) return 'yes';
  if (/^(no|false|incorrect)\b/.test(s)) return 'no';
  return null;
}

/**
 * Whether `prediction` (the last boxed answer) is right, for every type but free-form (which needs
 * the judge): multiple choice by the option named (letter or text), yes/no by its first word,
 * numeric by value (within the item's relative tolerance when it has one), short answers by
 * answer equivalence.
 *
 * answersEquivalent, not answersMatch: answersMatch adds the official code's vote-grouping rule that
 * any two answers containing "no " match, which would grade "no cars" right for "no people".
 */
export function scoreAnswer(item: Pick<BenchItem, 'type' | 'answer' | 'options' | 'choice' | 'tolerance'>, prediction: string): boolean {
  const p = prediction.trim();
  if (p === '') return false;
  switch (item.type) {
    case 'multiple choice':
      if (item.options && item.choice !== undefined) return optionIndex(p, item.options) === item.choice;
      // The options are written into the question: letters compare as letters, anything else as answers.
      return answersEquivalent(p, item.answer);
    case 'yes/no':
      return yesNo(p) !== null && yesNo(p) === yesNo(item.answer);
    case 'numeric':
      // Without a tolerance: integers exactly, other numbers within answers.ts's 1e-6.
      return item.tolerance === undefined ? parseAnswer(p).kind === 'number' && answersEquivalent(p, item.answer) : numbersClose(p, item.answer, item.tolerance);
    case 'short':
      return answersEquivalent(p, item.answer);
    case 'free-form':
      throw new VisplayError('ERR_INTERNAL', 'free-form answers are scored by the judge');
  }
}

// ---- the judge ----------------------------------------------------------------------------------

export interface JudgeOptions {
  /** An OpenAI-compatible server: its base URL, or the full URL ending in /chat/completions. */
  url: string;
  /** The "model" field of the request (needed by servers that host several models, and by OpenAI). */
  model?: string;
  /** Per request (default 60 000). */
  timeoutMs?: number;
  /** Sent as "Authorization: Bearer <key>". */
  apiKey?: string;
  /** Attempts after an HTTP 429 or 5xx answer (default 2); other failures are not retried. */
  retries?: number;
}

export interface JudgeVerdict {
  /** Whether the judge said the prediction matches. */
  match: boolean;
  /** False when its reply had neither yes nor no (counted as no match). */
  clear: boolean;
  reply: string;
}

const DEFAULT_JUDGE_TIMEOUT_MS = 60_000;

/** POST target of a judge URL: as given when it ends in /chat/completions, else <url>/v1/chat/completions. */
export function judgeEndpoint(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new VisplayError('ERR_INVALID_ARG', `judge URL ${JSON.stringify(url)} is not a URL (expected e.g. http://localhost:8080)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new VisplayError('ERR_INVALID_ARG', `judge URL ${url} must start with http:// or https://`);
  }
  const path = parsed.pathname.replace(/\/+$/, '');
  if (path.endsWith('/chat/completions')) parsed.pathname = path;
  else if (path.endsWith('/v1')) parsed.pathname = `${path}/chat/completions`;
  else parsed.pathname = `${path}/v1/chat/completions`;
  return parsed.toString();
}

/** The judge's messages: the question, the reference and the prediction; it must answer yes or no. */
export function judgeMessages(question: string, reference: string, prediction: string): Array<{ role: 'system' | 'user'; content: string }> {
  return [
    { role: 'system', content: 'You grade answers to questions about images. Reply with one word: yes or no.' },
    {
      role: 'user',
      content: `Question: ${question}\n\nReference answer: ${reference}\n\nModel answer: ${prediction}\n\n` +
        'Does the model answer mean the same as the reference answer? Reply with exactly one word: yes or no.',
    },
  ];
}

/** Asks the judge whether `prediction` matches `reference`. Network failures throw ERR_JUDGE naming the URL. */
export async function askJudge(options: JudgeOptions, item: { question: string; reference: string; prediction: string }): Promise<JudgeVerdict> {
  const endpoint = judgeEndpoint(options.url);
  const timeoutMs = options.timeoutMs ?? DEFAULT_JUDGE_TIMEOUT_MS;
  const retries = options.retries ?? 2;
  const body = JSON.stringify({
    ...(options.model ? { model: options.model } : {}),
    messages: judgeMessages(item.question, item.reference, item.prediction),
    temperature: 0,
    max_tokens: 16,
    stream: false,
  });
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;

  for (let attempt = 0; ; attempt++) {
    let status: number;
    let text: string;
    try {
      const response = await fetch(endpoint, { method: 'POST', headers, body, signal: AbortSignal.timeout(timeoutMs) });
      status = response.status;
      text = await response.text();
    } catch (e) {
      throw judgeNetworkError(endpoint, e, timeoutMs);
    }
    if ((status === 429 || status >= 500) && attempt < retries) {
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
      continue;
    }
    if (status < 200 || status >= 300) {
      throw new VisplayError('ERR_JUDGE', `the judge at ${endpoint} answered HTTP ${status}: ${oneLine(text, 200)}`);
    }
    const reply = completionText(text);
    if (reply === null) {
      throw new VisplayError('ERR_JUDGE', `the judge at ${endpoint} did not answer with a chat completion: ${oneLine(text, 200)}`);
    }
    return parseVerdict(reply);
  }
}

/** yes/no from the judge's reply; reasoning models' <think>...</think> is skipped. */
export function parseVerdict(reply: string): JudgeVerdict {
  const text = reply.replace(/<think>[\s\S]*?<\/think>/g, '').trim().toLowerCase();
  const first = /^[^a-z]*(yes|no)\b/.exec(text) ?? /\b(yes|no)\b/.exec(text);
  if (!first) return { match: false, clear: false, reply };
  return { match: first[1] === 'yes', clear: true, reply };
}

function completionText(text: string): string | null {
  try {
    const json = JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown }; text?: unknown }> };
    const choice = json.choices?.[0];
    const content = choice?.message?.content ?? choice?.text;
    return typeof content === 'string' ? content : null;
  } catch {
    return null;
  }
}

function judgeNetworkError(endpoint: string, e: unknown, timeoutMs: number): VisplayError {
  const err = e as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (err?.name === 'TimeoutError' || err?.name === 'AbortError') {
    return new VisplayError('ERR_JUDGE', `the judge at ${endpoint} did not answer within ${formatSeconds(timeoutMs)} (--judge-timeout)`, { cause: e });
  }
  const code = err?.cause?.code;
  const why = code === 'ECONNREFUSED' ? 'connection refused'
    : code === 'ENOTFOUND' ? 'no such host'
      : err?.cause?.message ?? err?.message ?? String(e);
  return new VisplayError('ERR_JUDGE', `cannot reach the judge at ${endpoint}: ${why}${code && !why.includes(code) ? ` (${code})` : ''}`, { cause: e });
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

function oneLine(s: string, max: number): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t || '(empty body)';
}

// ---- evaluation ---------------------------------------------------------------------------------

export interface EvaluateOptions {
  /** A LoRA policy: its folder (adapter.gguf + optimizer.gguf, as policy.save writes) or its adapter.gguf. */
  lora?: string;
  /** Judge for free-form items (required when the bench has any). */
  judge?: string;
  judgeModel?: string;
  judgeTimeoutMs?: number;
  judgeApiKey?: string;
  /** Evaluate the first `limit` usable items only. */
  limit?: number;
  /** Sequences decoded together (default 8). */
  parallel?: number;
  /** KV cells of the rollout engine (default: the engine's). */
  contextSize?: number;
  /** Most tokens per answer (default 2048). */
  maxTokens?: number;
  /**
   * Answers per item (default 1). With 1 the answer is greedy (temperature 0); with more, each is
   * sampled at `temperature` and every sample is scored on its own, so accuracy is the mean over
   * samples (mean@n); items then hold one entry per sample, in item-major order.
   */
  samples?: number;
  /** Sampling temperature when samples > 1 (default 1). */
  temperature?: number;
  /** Seed of the sampled answers (default 0). */
  seed?: number;
  /** Downscale larger images to at most this many pixels (default: as the projector takes them). */
  maxImagePixels?: number;
  /** Recorded in the summary (0 = the base model). */
  iteration?: number;
  /** Keep each item's whole response in the result (default false: long, and the prediction is what counts). */
  keepResponses?: boolean;
  /** The Reasoner prompt's family (default: the model's chat family) and a run's overrides. */
  promptFamily?: PromptFamily;
  promptOverrides?: PromptOverrides;
  /** Answers done of total (items x samples), tokens generated so far. */
  onProgress?: (progress: { done: number; total: number; tokens: number }) => void;
}

export interface EvalItem extends EvalItemResult {
  line: number;
  /** Which sample of the item (only when more than one answer per item was drawn). */
  sample?: number;
  id?: string;
  /** False when the judge's reply was neither yes nor no (scored as wrong). */
  judgeClear?: boolean;
  /** The model's whole response (with keepResponses). */
  response?: string;
}

export interface EvalResult extends EvalSummary {
  items: EvalItem[];
  /** Bench lines that were skipped, and why. */
  skipped: BenchProblem[];
  seconds: number;
}

const DEFAULT_MAX_TOKENS = 2048;

/**
 * Greedy answers (temperature 0; or `samples` sampled answers) to every item with the Reasoner
 * prompt, the last \boxed{} as the prediction, per-type and overall accuracy. Creates (and disposes) its own rollout engine; the
 * model stays the caller's.
 */
export async function evaluate(model: Model, bench: string | Bench, options: EvaluateOptions = {}): Promise<EvalResult> {
  const started = performance.now();
  const limit = check.optional(options.limit, (v) => check.positiveInteger('limit', v));
  const parallel = check.optional(options.parallel, (v) => check.integer('parallel', v, 1, 128)) ?? 8;
  const maxTokens = check.optional(options.maxTokens, (v) => check.integer('maxTokens', v, 1, 1 << 20)) ?? DEFAULT_MAX_TOKENS;
  const contextSize = check.optional(options.contextSize, (v) => check.integer('contextSize', v, 64, 1 << 20));
  const maxImagePixels = check.optional(options.maxImagePixels, (v) => check.integer('maxImagePixels', v, 64, 1 << 28));
  const iteration = check.optional(options.iteration, (v) => check.nonNegativeInteger('iteration', v)) ?? 0;
  const n = check.optional(options.samples, (v) => check.integer('samples', v, 1, 1024)) ?? 1;
  const temperature = n === 1 ? 0 : check.optional(options.temperature, (v) => check.number('temperature', v, 0, 100)) ?? 1;
  const seed = check.optional(options.seed, (v) => check.integer('seed', v, 0, 0xffffffff)) ?? 0;
  const judgeTimeoutMs = check.optional(options.judgeTimeoutMs, (v) => check.integer('judgeTimeoutMs', v, 1, 24 * 3600 * 1000));
  const judge: JudgeOptions | undefined = options.judge === undefined ? undefined
    : { url: check.nonEmptyString('judge', options.judge), model: options.judgeModel, timeoutMs: judgeTimeoutMs, apiKey: options.judgeApiKey };
  if (judge) judgeEndpoint(judge.url);  // a malformed URL fails now, not after decoding
  const loraDir = options.lora === undefined ? undefined : policyFolder(check.nonEmptyString('lora', options.lora));

  const b = typeof bench === 'string' ? await loadBench(bench) : bench;
  const items = limit === undefined ? b.items : b.items.slice(0, limit);
  const freeForm = items.filter((i) => i.type === 'free-form');
  if (freeForm.length > 0 && !judge) {
    throw new VisplayError('ERR_INVALID_ARG',
      `${freeForm.length} free-form item${freeForm.length === 1 ? '' : 's'} (line${freeForm.length === 1 ? '' : 's'} ` +
      `${freeForm.slice(0, 5).map((i) => i.line).join(', ')}${freeForm.length > 5 ? ', ...' : ''}) need${freeForm.length === 1 ? 's' : ''} a judge: pass --judge URL ` +
      '(an OpenAI-compatible chat endpoint) or drop those items');
  }

  const family = options.promptFamily ?? resolvePromptFamily('auto', model.info.chatFamily);
  let engine: RolloutEngine | undefined;
  let policy: Policy | undefined;
  const results: EvalItem[] = [];
  try {
    engine = await model.createRollout({ parallel, contextSize, maxImagePixels });
    if (loraDir !== undefined) {
      policy = await model.loadPolicy(loraDir);
      await policy.attach(engine);
    }
    // A few engine-fulls per call: the engine keeps every slot busy within a call, and progress
    // and judging advance between calls.
    const chunk = parallel * 4;
    let tokensBefore = 0;
    for (let start = 0; start < items.length; start += chunk) {
      const batch = items.slice(start, start + chunk);
      const requests: RolloutRequest[] = batch.map((item) => ({
        messages: reasonerMessages(family, benchQuestion(item), visplayType(item.type), options.promptOverrides),
        images: [item.image],
        n,
        maxTokens,
        temperature,
        seed: n === 1 ? 0 : (seed * 1_000_003 + item.index) >>> 0,
      }));
      const { samples, stats } = await engine.generate(requests, {
        onProgress: options.onProgress ? (p) => options.onProgress!({ done: start * n + p.done, total: items.length * n, tokens: tokensBefore + p.tokens }) : undefined,
      });
      tokensBefore += stats.generatedTokens;
      // One entry per (item, sample), item-major.
      const entries = batch.flatMap((item, k) => Array.from({ length: n }, (_, j) => ({ item, j, text: samples[k]?.[j]?.text ?? '' })));
      const scored = await mapLimit(entries, 4, async ({ item, j, text }): Promise<EvalItem> => {
        const prediction = lastBoxed(text) ?? '';
        const base = {
          index: item.index, line: item.line, ...(item.id === undefined ? {} : { id: item.id }), ...(n === 1 ? {} : { sample: j }),
          type: item.type, prediction, answer: item.answer, ...(options.keepResponses ? { response: text } : {}),
        };
        if (item.type !== 'free-form') return { ...base, correct: scoreAnswer(item, prediction) };
        if (prediction.trim() === '') return { ...base, correct: false };
        const verdict = await askJudge(judge!, { question: benchQuestion(item), reference: item.answer, prediction });
        return { ...base, correct: verdict.match, judgeClear: verdict.clear };
      });
      results.push(...scored);
    }
  } finally {
    policy?.dispose();
    engine?.dispose();
  }

  return {
    ...summarise(results, { iteration, bench: b.path, adapter: loraDir ?? '', judge: judge ? judgeEndpoint(judge.url) : undefined }),
    items: results,
    skipped: b.skipped,
    seconds: (performance.now() - started) / 1000,
  };
}

/** The EvalSummary record of a result (what eval.jsonl holds: no items, no skipped lines). */
export function evalSummaryOf(result: EvalSummary): EvalSummary {
  const { iteration, bench, adapter, overall, byType, judge } = result;
  return { iteration, bench, adapter, overall, byType, ...(judge === undefined ? {} : { judge }) };
}

/** Overall and per-type accuracy of scored items. */
export function summarise(items: ReadonlyArray<Pick<EvalItemResult, 'type' | 'correct'>>,
  meta: { iteration: number; bench: string; adapter: string; judge?: string }): EvalSummary {
  const byType: EvalSummary['byType'] = {};
  let correct = 0;
  for (const item of items) {
    const t = (byType[item.type] ??= { accuracy: 0, correct: 0, total: 0 });
    t.total++;
    if (item.correct) {
      t.correct++;
      correct++;
    }
  }
  for (const t of Object.values(byType)) t.accuracy = t.correct / t.total;
  return {
    iteration: meta.iteration,
    bench: meta.bench,
    adapter: meta.adapter,
    overall: { accuracy: items.length > 0 ? correct / items.length : 0, correct, total: items.length },
    byType,
    ...(meta.judge === undefined ? {} : { judge: meta.judge }),
  };
}

/** The policy folder of --lora: the folder itself, or the folder of an adapter.gguf. */
export function policyFolder(path: string): string {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new VisplayError('ERR_FILE_NOT_FOUND', `LoRA ${abs} does not exist (expected a policy folder or its adapter.gguf)`);
  return statSync(abs).isDirectory() ? abs : dirname(abs);
}

/** Maps with at most `limit` calls in flight; results in input order. */
async function mapLimit<T, R>(list: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(list.length);
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      out[i] = await fn(list[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, list.length) }, worker));
  return out;
}
