// The VisPlay self-evolution loop (VISPLAY.md §2) over one copy of the base model:
//
//   for iteration i = 1..N:
//     1. questioner: train Q_i from Q_{i-1}; per step, G questions per image from Q, m votes per
//        valid question from the frozen S_{i-1}, reward min(c, 1-c) - diversity penalty, GRPO step;
//     2. candidates: Q_i writes questions for the candidate images; S_{i-1} labels each (majority
//        of its boxed answers = silver label, share = confidence); keep the band and the code's rules;
//     3. reasoner: train S_i from S_{i-1} on the kept questions, reward 0.9 · agreement with the
//        silver label + 0.1 · format;
//     4. save questioner-i/ and reasoner-i/ (llama.cpp adapters), the summary, and evaluate.
//
// Each role is a LoRA Policy over the same loaded model, sampled through its own rollout engine
// with the policy's live adapter. The loop checkpoints after every optimizer step and every
// candidate chunk (run-store.ts rules); every random choice is a function of (seed, iteration,
// phase, step, index), so a resumed run writes exactly the records and adapters an uninterrupted
// run writes.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { groupAdvantages } from '../advantages.js';
import { VisplayError } from '../errors.js';
import { Model } from '../model.js';
import { PACKAGE_ROOT } from '../native.js';
import { groupsFromRollout, type Policy, type StepResult } from '../policy.js';
import type { RolloutEngine, RolloutRequest } from '../rollout.js';
import { makeTinyModel } from '../tiny-model.js';
import { lastBoxed } from './answers.js';
import { resolveConfig, type EvolveConfig } from './config.js';
import { loadImageSet, type RunImage } from './image-set.js';
import { loadPromptOverrides, questionerMessages, reasonerMessages, resolvePromptFamily, type PromptFamily, type PromptOverrides } from './prompts.js';
import { candidateDropReason, parseQuestion } from './questions.js';
import type { EvalSummary, IterationSummary, QuestionRecord, ReasonerRecord, RunManifest, StepMetrics } from './records.js';
import { labelCandidate, questionerRewards, reasonerReward, type RewardFunction } from './rewards.js';
import { JsonlLog, readJson, writeJsonAtomic } from './run-store.js';

export type Phase = 'questioner' | 'candidates' | 'reasoner' | 'finish';

export type EvolveEvent =
  | { type: 'phase'; iteration: number; phase: Phase; total: number; done: number }
  | { type: 'progress'; iteration: number; phase: Phase; done: number; total: number; tokens: number }
  | { type: 'step'; metrics: StepMetrics }
  | { type: 'candidates'; iteration: number; done: number; total: number; kept: number }
  | { type: 'iteration'; summary: IterationSummary }
  | { type: 'log'; message: string };

export interface EvolveHooks {
  onEvent?: (event: EvolveEvent) => void;
  /** Stops the run after the next checkpoint (Ctrl-C). */
  signal?: AbortSignal;
  /** Replaces the Reasoner's reward (default 0.9 · agreement + 0.1 · format). Batched, async. */
  reasonerReward?: RewardFunction;
  /**
   * Evaluates a Reasoner: once before training (iteration 0, reasonerDir null = the base model)
   * and after every iteration with its adapter folder. The summary goes to eval.jsonl.
   */
  evaluate?: (iteration: number, reasonerDir: string | null, model: Model) => Promise<EvalSummary>;
}

export interface EvolveOptions {
  /** Language-model and projector GGUF; both undefined: the embedded tiny model. */
  model?: string;
  mmproj?: string;
  /** Folder of images (recursive) or a JSONL manifest. */
  images: string;
  out: string;
  config?: Partial<EvolveConfig>;
}

export interface EvolveResult {
  out: string;
  /** False when stopped by the signal: `resume` continues it. */
  completed: boolean;
  iterations: IterationSummary[];
}

interface Checkpoint {
  version: 1;
  iteration: number;
  phase: Phase;
  /** Completed units of the phase: optimizer steps, or candidate chunks. */
  step: number;
  /** Folders (under state/) holding each policy as of this checkpoint; null: not trained yet. */
  questionerState: string | null;
  reasonerState: string | null;
  records: Record<string, number>;
  /** Seconds spent per phase of the current iteration (for the summary across resumes). */
  seconds: Record<string, number>;
  stateCounter: number;
}

const SOFTWARE_VERSION = 'visplay-native/evolve-1';

/** Starts a new run in `options.out` (which must not hold a run already). */
export async function evolve(options: EvolveOptions, hooks: EvolveHooks = {}): Promise<EvolveResult> {
  const out = resolve(options.out);
  if (existsSync(join(out, 'run.json'))) {
    throw new VisplayError('ERR_INVALID_ARG', `${out} already holds a run; continue it with --resume ${options.out} or choose another --out`);
  }
  const config = resolveConfig(options.config ?? {});
  const files = options.model === undefined && options.mmproj === undefined
    ? await makeTinyModel({ seed: 1 }).then((f) => ({ model: f.modelPath, mmproj: f.mmprojPath, tiny: true }))
    : { model: resolve(must('model', options.model)), mmproj: resolve(must('mmproj', options.mmproj)), tiny: false };
  hooks.onEvent?.({ type: 'log', message: `checking images in ${options.images}` });
  const set = await loadImageSet(options.images, { maxPixels: config.maxImagePixels });
  try {
    mkdirSync(out, { recursive: true });
  } catch (e) {
    throw new VisplayError('ERR_OUTPUT', `cannot create the run folder ${out}: ${(e as Error).message}`);
  }
  const manifest: RunManifest = {
    version: 1, createdAt: new Date().toISOString(), model: files.model, mmproj: files.mmproj,
    images: { root: set.root, manifest: set.manifest, usable: set.images.length, skipped: set.skipped },
    config: { ...config, tinyModel: files.tiny }, software: { package: SOFTWARE_VERSION, llamaCpp: llamaCommit() },
  };
  writeJsonAtomic(join(out, 'images.json'), set.images);
  writeJsonAtomic(join(out, 'run.json'), manifest);
  if (set.skipped.length > 0) hooks.onEvent?.({ type: 'log', message: `${set.skipped.length} images skipped (listed in run.json)` });
  return run(out, hooks);
}

/** Continues the run in `out` from its last checkpoint. */
export async function resumeEvolve(outDir: string, hooks: EvolveHooks = {}): Promise<EvolveResult> {
  const out = resolve(outDir);
  if (!existsSync(join(out, 'run.json'))) throw new VisplayError('ERR_FILE_NOT_FOUND', `${out} holds no VisPlay run (no run.json)`);
  const manifest = readJson<RunManifest>(join(out, 'run.json'));
  if (manifest.software?.package !== SOFTWARE_VERSION || manifest.software?.llamaCpp !== llamaCommit()) {
    throw new VisplayError('ERR_CHECKPOINT', `${out} was written by ${manifest.software?.package} with llama.cpp ${manifest.software?.llamaCpp}; ` +
      `this is ${SOFTWARE_VERSION} with llama.cpp ${llamaCommit()}: a resume would not reproduce the run`);
  }
  return run(out, hooks);
}

function must(name: string, v: string | undefined): string {
  if (v === undefined) throw new VisplayError('ERR_INVALID_ARG', `give both --model and --mmproj (or neither, for the tiny model); ${name} is missing`);
  return v;
}

function llamaCommit(): string {
  try {
    return readFileSync(join(PACKAGE_ROOT, 'native', 'vendor', 'llama.cpp', '.visplay-stamp'), 'utf8').trim().slice(0, 64);
  } catch {
    return 'unknown';
  }
}

/** A 47-bit seed from the run's seed and the parts naming one random choice. */
function seedOf(...parts: Array<string | number>): number {
  const h = createHash('sha256').update(parts.join('/')).digest();
  return h.readUIntBE(0, 6) % 2 ** 47;
}

/** A permutation of [0, n) drawn from seed (Fisher-Yates with a hash-based generator). */
function permutation(n: number, seed: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = seedOf(seed, i) % (i + 1);
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

class Run {
  readonly out: string;
  readonly config: EvolveConfig;
  readonly manifest: RunManifest;
  readonly images: RunImage[];
  readonly hooks: EvolveHooks;
  model!: Model;
  questioner!: Policy;
  reasoner!: Policy;
  qEngine!: RolloutEngine;
  sEngine!: RolloutEngine;
  family!: PromptFamily;
  overrides: PromptOverrides | undefined;
  log!: JsonlLog;
  cp!: Checkpoint;

  constructor(out: string, hooks: EvolveHooks) {
    this.out = out;
    this.hooks = hooks;
    this.manifest = readJson<RunManifest>(join(out, 'run.json'));
    this.config = resolveConfig(Object.fromEntries(Object.entries(this.manifest.config).filter(([k]) => k !== 'tinyModel')) as Partial<EvolveConfig>);
    this.images = readJson<RunImage[]>(join(out, 'images.json'));
  }

  emit(e: EvolveEvent): void {
    this.hooks.onEvent?.(e);
  }

  async open(): Promise<void> {
    const c = this.config;
    const threads = c.threads > 0 ? c.threads : undefined;
    // On a CUDA build the rollouts and the trainer run where the layers are: every layer on the GPU
    // by default (gpuLayers -1), all on the CPU with 0; a split model cannot train (ERR_GPU_WEIGHTS).
    // repackWeights false: the CPU trainer reads the weights in place.
    this.model = await Model.load({
      model: this.manifest.model, mmproj: this.manifest.mmproj, threads, repackWeights: false, gpuLayers: c.gpuLayers < 0 ? undefined : c.gpuLayers,
    });
    this.family = resolvePromptFamily(c.promptFamily, this.model.info.chatFamily);
    this.overrides = c.promptFile ? loadPromptOverrides(c.promptFile) : undefined;
    const cpPath = join(this.out, 'checkpoint.json');
    this.cp = existsSync(cpPath) ? readJson<Checkpoint>(cpPath) : {
      version: 1, iteration: 1, phase: 'questioner', step: 0, questionerState: null, reasonerState: null, records: {}, seconds: {}, stateCounter: 0,
    };
    this.log = new JsonlLog(this.out, this.cp.records);
    this.log.truncateToCommitted(existingJsonl(this.out));
    removeTemporaries(this.out);
    const policyOptions = {
      rank: c.loraRank, alpha: c.loraAlpha, threads, microBatchTokens: c.microBatchTokens, releaseBuffers: c.releaseBuffers,
      loss: { klCoef: c.klCoef, clipLow: c.clipLow, clipHigh: c.clipHigh },
      optimizer: { lr: c.lr, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm },
    };
    const load = (state: string | null, seed: number) => state
      ? this.model.loadPolicy(join(this.out, 'state', state), {
        threads, microBatchTokens: c.microBatchTokens, releaseBuffers: c.releaseBuffers, loss: policyOptions.loss, optimizer: policyOptions.optimizer,
      })
      : this.model.createPolicy({ ...policyOptions, seed });
    this.questioner = await load(this.cp.questionerState, seedOf(c.seed, 'questioner-init'));
    this.reasoner = await load(this.cp.reasonerState, seedOf(c.seed, 'reasoner-init'));
    const contextSize = Math.min(c.contextSize, this.model.info.trainContextSize);
    const engineOptions = { parallel: c.parallel, contextSize, threads, maxImagePixels: c.maxImagePixels };
    this.qEngine = await this.model.createRollout(engineOptions);
    this.sEngine = await this.model.createRollout(engineOptions);
    await this.questioner.attach(this.qEngine);
    await this.reasoner.attach(this.sEngine);
    // Files of states no checkpoint points to (a crash between saving and checkpointing).
    this.pruneStates();
  }

  close(): void {
    this.model?.dispose();
  }

  /** Saves whichever policies changed and writes the checkpoint: the run's commit point. */
  async commit(update: Partial<Checkpoint>, changed: Array<'questioner' | 'reasoner'>): Promise<void> {
    const next: Checkpoint = { ...this.cp, ...update };
    for (const role of changed) {
      next.stateCounter++;
      const name = `${role}-${next.stateCounter}`;
      await (role === 'questioner' ? this.questioner : this.reasoner).save(join(this.out, 'state', name));
      if (role === 'questioner') next.questionerState = name;
      else next.reasonerState = name;
    }
    next.records = this.log.committed();
    writeJsonAtomic(join(this.out, 'checkpoint.json'), next);
    this.cp = next;
    this.pruneStates();
  }

  pruneStates(): void {
    const dir = join(this.out, 'state');
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      if (name !== this.cp.questionerState && name !== this.cp.reasonerState) rmSync(join(dir, name), { recursive: true, force: true });
    }
  }

  stopRequested(): boolean {
    return this.hooks.signal?.aborted === true;
  }

  request(image: RunImage, messages: RolloutRequest['messages'], n: number, maxTokens: number, seed: number, extra: Partial<RolloutRequest> = {}): RolloutRequest {
    return { messages, images: [image.file], n, maxTokens, temperature: this.config.temperature, seed, ...extra };
  }

  async generate(engine: RolloutEngine, phase: Phase, requests: RolloutRequest[]) {
    const total = requests.reduce((a, r) => a + (r.n ?? 1), 0);
    return engine.generate(requests, {
      onProgress: (p) => this.emit({ type: 'progress', iteration: this.cp.iteration, phase, done: p.done, total, tokens: p.tokens }),
    });
  }

  /** The Reasoner's boxed answers for each valid question (m samples each); [] for invalid ones. */
  async votes(items: Array<{ image: RunImage; valid: boolean; question: string; type: string }>, m: number, phase: Phase, seedParts: Array<string | number>,
    extra: Partial<RolloutRequest>): Promise<string[][]> {
    const asked = items.map((q, i) => ({ q, i })).filter(({ q }) => q.valid);
    const requests = asked.map(({ q, i }) => this.request(q.image, reasonerMessages(this.family, q.question, q.type, this.overrides), m,
      this.config.reasonerMaxTokens, seedOf(this.config.seed, ...seedParts, 'vote', i), extra));
    const result = requests.length ? await this.generate(this.sEngine, phase, requests) : { samples: [] as Array<Array<{ text: string }>> };
    const answers: string[][] = items.map(() => []);
    asked.forEach(({ i }, k) => { answers[i] = result.samples[k]!.map((s) => lastBoxed(s.text) ?? ''); });
    return answers;
  }

  questionerImages(step: number): RunImage[] {
    const c = this.config;
    const order = permutation(this.images.length, seedOf(c.seed, 'questioner-images', this.cp.iteration));
    return Array.from({ length: c.imagesPerStep }, (_, k) => this.images[order[((step - 1) * c.imagesPerStep + k) % order.length]!]!);
  }

  candidateImages(): RunImage[] {
    const c = this.config;
    const n = Math.min(c.candidateImages, this.images.length);
    if (c.candidateSelection === 'first') return this.images.slice(0, n);
    const order = permutation(this.images.length, seedOf(c.seed, 'candidate-images', this.cp.iteration));
    return order.slice(0, n).map((i) => this.images[i]!);
  }

  /** The rewards as given, or (shuffleRewards, a control run) permuted across the step's samples. */
  maybeShuffled(rewards: number[], phase: 'questioner' | 'reasoner', step: number): number[] {
    if (!this.config.shuffleRewards) return rewards;
    return permutation(rewards.length, seedOf(this.config.seed, 'shuffle-rewards', this.cp.iteration, phase, step)).map((i) => rewards[i]!);
  }

  async questionerStep(step: number): Promise<void> {
    const c = this.config;
    const it = this.cp.iteration;
    const images = this.questionerImages(step);
    const requests = images.map((img, j) => this.request(img, questionerMessages(this.family, this.overrides), c.groupSize, c.questionerMaxTokens,
      seedOf(c.seed, it, 'questioner', step, j), { topP: c.trainTopP }));
    const qr = await this.generate(this.qEngine, 'questioner', requests);
    const items = qr.samples.flatMap((samples, j) => samples.map((s) => ({ image: images[j]!, raw: s.text, ...parseQuestion(s.text) })));
    const answers = await this.votes(items, c.votes, 'questioner', [it, 'questioner', step], { topP: 1 });
    const rewards = questionerRewards(items.map((q, i) => ({ valid: q.valid, question: q.question, answers: answers[i]! })),
      { uncertaintyReward: c.uncertaintyReward });
    const totals = this.maybeShuffled(rewards.map((r) => r.total), 'questioner', step);
    const adv = groupAdvantages(totals, images.map(() => c.groupSize));
    const advantages = images.map((_, j) => Array.from(adv.subarray(j * c.groupSize, (j + 1) * c.groupSize)));
    const result = await this.questioner.step(groupsFromRollout(requests, qr.samples, advantages));
    const records: QuestionRecord[] = items.map((q, i) => ({
      iteration: it, phase: 'questioner', step, image: { hash: q.image.hash, path: q.image.path }, raw: q.raw, valid: q.valid, type: q.type,
      question: q.question, questionerAnswer: q.answer, reasonerAnswers: answers[i]!, silver: rewards[i]!.silver, confidence: rewards[i]!.confidence,
      rewards: { uncertainty: rewards[i]!.uncertainty, diversityPenalty: rewards[i]!.penalty, total: rewards[i]!.total },
    }));
    this.log.append(`iter-${it}/questioner.jsonl`, records);
    const valid = items.filter((q) => q.valid).length;
    const metrics = this.metrics('questioner', step, this.questioner, result, mean(totals), {
      validRate: valid / items.length, meanConfidence: mean(rewards.filter((_, i) => items[i]!.valid).map((r) => r.confidence)),
    });
    this.log.append('metrics.jsonl', [metrics]);
    this.emit({ type: 'step', metrics });
  }

  metrics(role: 'questioner' | 'reasoner', step: number, policy: Policy, r: StepResult, meanReward: number, extra: Partial<StepMetrics>): StepMetrics {
    return {
      iteration: this.cp.iteration, role, step, policyStep: r.step, loss: r.loss, pgLoss: r.pgLoss, kl: r.kl, clipFraction: r.clipFraction,
      gradNorm: r.gradNorm, lr: r.lr, meanReward, tokensPerSecond: r.tokensPerSecond, seconds: r.seconds, applied: r.applied, ...extra,
    };
  }

  candidateChunks(): RunImage[][] {
    const images = this.candidateImages();
    const size = Math.max(1, this.config.imagesPerStep);
    const chunks: RunImage[][] = [];
    for (let i = 0; i < images.length; i += size) chunks.push(images.slice(i, i + size));
    return chunks;
  }

  async candidateChunk(chunk: number, images: RunImage[], offset: number): Promise<number> {
    const c = this.config;
    const it = this.cp.iteration;
    const requests = images.map((img, j) => this.request(img, questionerMessages(this.family, this.overrides, 'generate'), c.candidatesPerImage, c.questionerMaxTokens,
      seedOf(c.seed, it, 'candidates', offset + j), { topP: c.candidateTopP }));
    const qr = await this.generate(this.qEngine, 'candidates', requests);
    const items = qr.samples.flatMap((samples, j) => samples.map((s) => ({ image: images[j]!, raw: s.text, ...parseQuestion(s.text) })));
    const answers = await this.votes(items, c.labelVotes, 'candidates', [it, 'candidates', chunk], { topP: 1, topK: c.labelTopK });
    let kept = 0;
    const records: QuestionRecord[] = items.map((q, i) => {
      // Labelling confidence: majority count over the boxed answers (VISPLAY.md §8.2).
      const vote = labelCandidate(answers[i]!);
      const confidence = vote.confidence;
      const drop = q.valid ? candidateDropReason({ question: q.question, silver: vote.silver, confidence }, c.band) : 'the question does not parse';
      if (drop === null) kept++;
      return {
        iteration: it, phase: 'candidates', step: offset * c.candidatesPerImage + i, image: { hash: q.image.hash, path: q.image.path }, raw: q.raw,
        valid: q.valid, type: q.type, question: q.question, questionerAnswer: q.answer, reasonerAnswers: answers[i]!, silver: vote.silver,
        confidence, kept: drop === null, ...(drop === null ? {} : { dropReason: drop }),
      };
    });
    this.log.append(`iter-${it}/candidates.jsonl`, records);
    return kept;
  }

  keptCandidates(): QuestionRecord[] {
    const path = join(this.out, `iter-${this.cp.iteration}`, 'candidates.jsonl');
    if (!existsSync(path)) return [];
    return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as QuestionRecord).filter((r) => r.kept);
  }

  async reasonerStep(step: number, kept: QuestionRecord[]): Promise<void> {
    const c = this.config;
    const it = this.cp.iteration;
    const order = permutation(kept.length, seedOf(c.seed, 'reasoner-order', it));
    const batch = Array.from({ length: Math.min(c.imagesPerStep, kept.length) }, (_, k) => kept[order[((step - 1) * c.imagesPerStep + k) % kept.length]!]!);
    const byHash = new Map(this.images.map((im) => [im.hash, im]));
    const requests = batch.map((q, j) => this.request(byHash.get(q.image.hash)!, reasonerMessages(this.family, q.question, q.type, this.overrides), c.groupSize,
      c.reasonerMaxTokens, seedOf(c.seed, it, 'reasoner', step, j), { topP: c.trainTopP }));
    const sr = await this.generate(this.sEngine, 'reasoner', requests);
    let rewards: number[][];
    if (this.hooks.reasonerReward) {
      const flat = await this.hooks.reasonerReward(batch.flatMap((q, j) => sr.samples[j]!.map((s) => ({
        image: q.image, question: q.question, type: q.type, response: s.text, silver: q.silver,
      }))));
      if (!Array.isArray(flat) || flat.length !== batch.length * c.groupSize || flat.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
        throw new VisplayError('ERR_INVALID_ARG', `the custom reward function must return ${batch.length * c.groupSize} finite numbers`);
      }
      rewards = batch.map((_, j) => flat.slice(j * c.groupSize, (j + 1) * c.groupSize));
    } else {
      rewards = batch.map((q, j) => sr.samples[j]!.map((s) => reasonerReward(s.text, q.silver, { requireThink: c.requireThink }).total));
    }
    const adv = groupAdvantages(this.maybeShuffled(rewards.flat(), 'reasoner', step), batch.map(() => c.groupSize));
    const advantages = batch.map((_, j) => Array.from(adv.subarray(j * c.groupSize, (j + 1) * c.groupSize)));
    const result = await this.reasoner.step(groupsFromRollout(requests, sr.samples, advantages));
    let correct = 0;
    const records: ReasonerRecord[] = batch.map((q, j) => ({
      iteration: it, step, image: q.image, question: q.question, type: q.type, silver: q.silver, confidence: q.confidence,
      answers: sr.samples[j]!.map((s, k) => {
        const r = reasonerReward(s.text, q.silver, { requireThink: c.requireThink });
        if (r.correct) correct++;
        return { text: s.text, boxed: r.boxed, correct: r.correct, formatOk: r.formatOk, reward: rewards[j]![k]! };
      }),
    }));
    this.log.append(`iter-${it}/reasoner.jsonl`, records);
    const metrics = this.metrics('reasoner', step, this.reasoner, result, mean(rewards.flat()), { accuracy: correct / (batch.length * c.groupSize) });
    this.log.append('metrics.jsonl', [metrics]);
    this.emit({ type: 'step', metrics });
  }

  summary(): IterationSummary {
    const it = this.cp.iteration;
    const read = <T>(name: string): T[] => {
      const p = join(this.out, `iter-${it}`, name);
      return existsSync(p) ? readFileSync(p, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T) : [];
    };
    const qs = read<QuestionRecord>('questioner.jsonl');
    const cands = read<QuestionRecord>('candidates.jsonl');
    const rs = read<ReasonerRecord>('reasoner.jsonl');
    const validC = cands.filter((q) => q.valid);
    const hist = Array.from({ length: 10 }, () => 0);
    for (const q of validC) hist[Math.min(9, Math.floor(q.confidence * 10))]!++;
    const answers = rs.flatMap((r) => r.answers);
    const secs = this.cp.seconds;
    return {
      iteration: it,
      questioner: {
        steps: new Set(qs.map((q) => q.step)).size, questions: qs.length, validRate: qs.length ? qs.filter((q) => q.valid).length / qs.length : 0,
        meanConfidence: mean(qs.filter((q) => q.valid).map((q) => q.confidence)), meanReward: mean(qs.map((q) => q.rewards?.total ?? 0)),
        meanPenalty: mean(qs.map((q) => q.rewards?.diversityPenalty ?? 0)),
      },
      candidates: {
        total: cands.length, valid: validC.length,
        inBand: validC.filter((q) => q.confidence >= this.config.band[0] && q.confidence <= this.config.band[1]).length,
        kept: cands.filter((q) => q.kept).length, meanConfidence: mean(validC.map((q) => q.confidence)), confidenceHistogram: hist,
      },
      reasoner: { steps: new Set(rs.map((r) => r.step)).size, samples: answers.length, meanReward: mean(answers.map((a) => a.reward)), accuracy: mean(answers.map((a) => (a.correct ? 1 : 0))) },
      seconds: {
        questioner: secs.questioner ?? 0, candidates: secs.candidates ?? 0, reasoner: secs.reasoner ?? 0,
        total: (secs.questioner ?? 0) + (secs.candidates ?? 0) + (secs.reasoner ?? 0),
      },
    };
  }
}

/**
 * Removes the temporary files of writes a crash cut short (run-store's and the native saves'
 * NAME.tmp-PID, the report's NAME.tmp-PID-RANDOM): nothing reads them, and each crash would leave more.
 */
function removeTemporaries(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) removeTemporaries(path);
    else if (/\.tmp-\d+(-[0-9a-z]+)?$/.test(entry.name)) rmSync(path, { force: true });
  }
}

function existingJsonl(out: string): string[] {
  const names = ['metrics.jsonl', 'eval.jsonl'];
  for (const d of existsSync(out) ? readdirSync(out) : []) {
    if (!/^iter-\d+$/.test(d)) continue;
    for (const f of readdirSync(join(out, d))) if (f.endsWith('.jsonl')) names.push(`${d}/${f}`);
  }
  return names;
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

async function run(out: string, hooks: EvolveHooks): Promise<EvolveResult> {
  const r = new Run(out, hooks);
  const c = r.config;
  const summaries: IterationSummary[] = [];
  try {
    await r.open();
    if (hooks.evaluate && r.cp.iteration === 1 && r.cp.phase === 'questioner' && r.cp.step === 0 && !r.log.committed()['eval.jsonl']) {
      r.log.append('eval.jsonl', [await hooks.evaluate(0, null, r.model)]);
      await r.commit({}, []);
    }
    while (r.cp.iteration <= c.iterations) {
      const it = r.cp.iteration;
      const timed = async (phase: Phase, body: () => Promise<void>) => {
        const t0 = performance.now();
        await body();
        return (performance.now() - t0) / 1000;
      };
      if (r.cp.phase === 'questioner') {
        r.emit({ type: 'phase', iteration: it, phase: 'questioner', total: c.questionerSteps, done: r.cp.step });
        while (r.cp.step < c.questionerSteps) {
          const s = await timed('questioner', () => r.questionerStep(r.cp.step + 1));
          await r.commit({ step: r.cp.step + 1, seconds: { ...r.cp.seconds, questioner: (r.cp.seconds.questioner ?? 0) + s } }, ['questioner']);
          if (r.stopRequested()) return { out, completed: false, iterations: summaries };
        }
        await r.commit({ phase: 'candidates', step: 0 }, []);
      }
      if (r.cp.phase === 'candidates') {
        const chunks = r.candidateChunks();
        r.emit({ type: 'phase', iteration: it, phase: 'candidates', total: chunks.length, done: r.cp.step });
        let offset = chunks.slice(0, r.cp.step).reduce((a, ch) => a + ch.length, 0);
        while (r.cp.step < chunks.length) {
          const chunk = chunks[r.cp.step]!;
          let kept = 0;
          const s = await timed('candidates', async () => { kept = await r.candidateChunk(r.cp.step, chunk, offset); });
          offset += chunk.length;
          await r.commit({ step: r.cp.step + 1, seconds: { ...r.cp.seconds, candidates: (r.cp.seconds.candidates ?? 0) + s } }, []);
          r.emit({ type: 'candidates', iteration: it, done: r.cp.step, total: chunks.length, kept });
          if (r.stopRequested()) return { out, completed: false, iterations: summaries };
        }
        await r.commit({ phase: 'reasoner', step: 0 }, []);
      }
      if (r.cp.phase === 'reasoner') {
        const kept = r.keptCandidates();
        if (kept.length === 0) {
          r.emit({ type: 'log', message: `iteration ${it}: no candidate passed the filter (band ${c.band.join('-')}); the Reasoner is not trained this iteration` });
        } else {
          r.emit({ type: 'phase', iteration: it, phase: 'reasoner', total: c.reasonerSteps, done: r.cp.step });
          while (r.cp.step < c.reasonerSteps) {
            const s = await timed('reasoner', () => r.reasonerStep(r.cp.step + 1, kept));
            await r.commit({ step: r.cp.step + 1, seconds: { ...r.cp.seconds, reasoner: (r.cp.seconds.reasoner ?? 0) + s } }, ['reasoner']);
            if (r.stopRequested()) return { out, completed: false, iterations: summaries };
          }
        }
        await r.commit({ phase: 'finish', step: 0 }, []);
      }
      if (r.cp.phase === 'finish') {
        // Adapters of this iteration, then the summary; both idempotent, so a crash here repeats them.
        await r.questioner.save(join(out, `questioner-${it}`));
        await r.reasoner.save(join(out, `reasoner-${it}`));
        const summary = r.summary();
        writeJsonAtomic(join(out, `iter-${it}`, 'summary.json'), summary);
        if (hooks.evaluate) r.log.append('eval.jsonl', [await hooks.evaluate(it, join(out, `reasoner-${it}`), r.model)]);
        summaries.push(summary);
        r.emit({ type: 'iteration', summary });
        await r.commit({ iteration: it + 1, phase: 'questioner', step: 0, seconds: {} }, []);
        if (r.stopRequested() && it < c.iterations) return { out, completed: false, iterations: summaries };
      }
    }
    for (let i = 1; i <= c.iterations; i++) {
      if (!summaries.some((s) => s.iteration === i)) summaries.push(readJson<IterationSummary>(join(out, `iter-${i}`, 'summary.json')));
    }
    summaries.sort((a, b) => a.iteration - b.iteration);
    return { out, completed: true, iterations: summaries };
  } finally {
    r.close();
  }
}
