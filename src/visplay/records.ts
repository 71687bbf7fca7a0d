// The on-disk records of a VisPlay run (`evolve --out DIR`): what a person inspects and what the
// report is built from. Every file is JSONL (one JSON object per line) or JSON, written atomically
// (temporary file, fsync, rename) or appended line by line with the run's checkpoint naming the
// number of complete lines, so a reader never sees a half-written record.
//
// DIR/
//   run.json                       RunManifest
//   checkpoint.json                the resume point (owned by the loop; not for readers)
//   metrics.jsonl                  StepMetrics, one per optimizer step of either role
//   iter-<i>/questioner.jsonl      QuestionRecord per question the Questioner wrote while training
//   iter-<i>/candidates.jsonl      QuestionRecord per generated candidate, labelled by the Reasoner
//   iter-<i>/reasoner.jsonl        ReasonerRecord per Reasoner training sample
//   iter-<i>/summary.json          IterationSummary
//   questioner-<i>/, reasoner-<i>/ saved policies (adapter.gguf for llama.cpp --lora, optimizer.gguf)
//   eval.jsonl                     EvalSummary per evaluated iteration (iteration 0 = the base model)
//   report/                        index.html, report.json, *.svg, *.png

/** The VisPlay question types (VISPLAY.md §5). */
export type QuestionType = 'multiple choice' | 'numerical' | 'regression';

export interface ImageRef {
  /** sha256 of the decoded pixels (the rollout engine's image key), hex. */
  hash: string;
  /** Path as given (folder scan or manifest), relative to the image root when there is one. */
  path: string;
}

export interface RunManifest {
  version: 1;
  createdAt: string;
  model: string;
  mmproj: string;
  images: { root?: string; manifest?: string; usable: number; skipped: Array<{ path: string; reason: string }> };
  /** Every option of the run, defaults filled in (what `--resume` restores). */
  config: Record<string, unknown>;
  /** llama.cpp commit, package version: a resume with other code is refused. */
  software: { package: string; llamaCpp: string };
}

export interface QuestionRecord {
  iteration: number;
  phase: 'questioner' | 'candidates';
  /** Optimizer step within the phase (questioner phase), or the candidate's index. */
  step: number;
  image: ImageRef;
  /** The Questioner's raw output. */
  raw: string;
  /** Parsed fields; question '' when the output does not parse (invalid). */
  valid: boolean;
  type: string;
  question: string;
  /** The Questioner's own answer (never used as a label). */
  questionerAnswer: string;
  /** The last \boxed{} of each Reasoner sample ('' when a sample has none). */
  reasonerAnswers: string[];
  /** Majority answer among the Reasoner's boxed answers ('' when none). */
  silver: string;
  /** Majority count / denominator (all samples for the questioner reward, boxed ones for labelling). */
  confidence: number;
  rewards?: { uncertainty: number; diversityPenalty: number; total: number };
  /** Candidates only: whether it passed the band and the code's rules, and why not. */
  kept?: boolean;
  dropReason?: string;
}

export interface ReasonerRecord {
  iteration: number;
  step: number;
  image: ImageRef;
  question: string;
  type: string;
  silver: string;
  confidence: number;
  answers: Array<{ text: string; boxed: string; correct: boolean; formatOk: boolean; reward: number }>;
}

export interface StepMetrics {
  iteration: number;
  role: 'questioner' | 'reasoner';
  /** Optimizer step within this iteration's role phase, from 1. */
  step: number;
  /** Global optimizer step of that role's policy. */
  policyStep: number;
  loss: number;
  pgLoss: number;
  kl: number;
  clipFraction: number;
  gradNorm: number;
  lr: number;
  meanReward: number;
  /** Questioner: share of valid questions; Reasoner: share of answers matching the silver label. */
  validRate?: number;
  accuracy?: number;
  meanConfidence?: number;
  tokensPerSecond: number;
  seconds: number;
  applied: boolean;
}

export interface IterationSummary {
  iteration: number;
  questioner: { steps: number; questions: number; validRate: number; meanConfidence: number; meanReward: number; meanPenalty: number };
  candidates: { total: number; valid: number; inBand: number; kept: number; meanConfidence: number; confidenceHistogram: number[] };
  reasoner: { steps: number; samples: number; meanReward: number; accuracy: number };
  seconds: { questioner: number; candidates: number; reasoner: number; total: number };
}

export interface EvalItemResult {
  index: number;
  type: string;
  correct: boolean;
  prediction: string;
  answer: string;
}

export interface EvalSummary {
  iteration: number;
  bench: string;
  /** The Reasoner adapter evaluated ('' for the base model). */
  adapter: string;
  overall: { accuracy: number; correct: number; total: number };
  byType: Record<string, { accuracy: number; correct: number; total: number }>;
  judge?: string;
}
