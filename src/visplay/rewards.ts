// The two rewards of VisPlay (VISPLAY.md §3) and the labelling confidence (§2 step 3, §8 point 2).
import { answersEquivalent, lastBoxed, majorityVote } from './answers.js';
import { bleuDistanceMatrix } from './bleu.js';
import { clusterLabels, clusterSharePenalty, DEFAULT_DISTANCE_THRESHOLD } from './cluster.js';
import type { ImageRef } from './records.js';

// ---- the Questioner ------------------------------------------------------------------------------

/**
 * The uncertainty term of a confidence c: 'min' is the official code's min(c, 1 - c) (peak 0.5 at
 * c = 0.5); 'r-zero' is R-Zero's 1 - 2|c - 1/2| (the same shape at twice the scale, peak 1).
 */
export type UncertaintyReward = 'min' | 'r-zero';

export function uncertainty(confidence: number, kind: UncertaintyReward = 'min'): number {
  return kind === 'min' ? Math.min(confidence, 1 - confidence) : 1 - 2 * Math.abs(confidence - 0.5);
}

export interface QuestionerItem {
  /** parseQuestion's verdict; only valid questions are answered by the Reasoner. */
  valid: boolean;
  /** The parsed question ('' when the output did not parse): what the diversity penalty compares. */
  question: string;
  /** The last \boxed{} of each of the m Reasoner samples, '' where a sample has none ([] if invalid). */
  answers: readonly string[];
}

export interface QuestionerRewardOptions {
  /** Default 'min' (the official code). */
  uncertaintyReward?: UncertaintyReward;
  /**
   * Whether invalid questions join the BLEU clustering (default true, the official code: an
   * unparsed output enters as '' and, at BLEU distance 1 from everything, forms its own cluster,
   * so it adds 1/N to its own penalty and 1 to N). False clusters the valid questions alone
   * (N = their number) and gives invalid ones no penalty.
   */
  invalidInClustering?: boolean;
  /** Clustering threshold on 1 - BLEU (default 0.5). */
  distanceThreshold?: number;
}

export interface QuestionerReward {
  /** Majority answer of the Reasoner ('' when no sample boxed an answer, or invalid). */
  silver: string;
  /** Votes for the silver answer. */
  count: number;
  /** count / m, with all m samples in the denominator (unboxed ones too), as the reward code. */
  confidence: number;
  /** The first term: the uncertainty reward if valid, -1 if invalid. */
  uncertainty: number;
  /** |cluster| / N (0 for an invalid question left out of the clustering). */
  penalty: number;
  /** uncertainty - penalty. */
  total: number;
  /** The question's cluster (-1 when left out of the clustering). */
  cluster: number;
}

/**
 * The Questioner's rewards over one rollout batch (the official code: all 512 x 8 questions at once):
 *   r_j = U(c_j) - pen_j if question j is valid, else -1 - pen_j
 * with c_j = majority count / m and pen_j = |cluster(j)| / N from average-linkage clustering of
 * d(a, b) = 1 - BLEU(a, b) at threshold 0.5 over the batch's questions.
 */
export function questionerRewards(items: readonly QuestionerItem[], options: QuestionerRewardOptions = {}): QuestionerReward[] {
  const kind = options.uncertaintyReward ?? 'min';
  const clustered = (options.invalidInClustering ?? true)
    ? items.map((_, i) => i)
    : items.flatMap((item, i) => (item.valid ? [i] : []));
  const texts = clustered.map((i) => items[i]!.question);
  const labels = clusterLabels(bleuDistanceMatrix(texts), texts.length, options.distanceThreshold ?? DEFAULT_DISTANCE_THRESHOLD);
  const shares = clusterSharePenalty(labels);
  const penalty = new Float64Array(items.length);
  const cluster = new Int32Array(items.length).fill(-1);
  clustered.forEach((i, k) => {
    penalty[i] = shares[k]!;
    cluster[i] = labels[k]!;
  });

  return items.map((item, i) => {
    const pen = penalty[i]!;
    if (!item.valid) {
      return { silver: '', count: 0, confidence: 0, uncertainty: -1, penalty: pen, total: -1 - pen, cluster: cluster[i]! };
    }
    const { silver, count } = majorityVote(item.answers);
    const confidence = item.answers.length > 0 ? count / item.answers.length : 0;
    const u = uncertainty(confidence, kind);
    return { silver, count, confidence, uncertainty: u, penalty: pen, total: u - pen, cluster: cluster[i]! };
  });
}

// ---- labelling -----------------------------------------------------------------------------------

/**
 * The silver label of a candidate from the Reasoner's boxed answers ('' = no box), with the
 * labelling confidence: majority count / number of boxed answers (VISPLAY.md §8 point 2), 0 when
 * none is boxed. This is the confidence the selection band applies to.
 */
export function labelCandidate(answers: readonly string[]): { silver: string; count: number; confidence: number } {
  const boxed = answers.filter((a) => a.trim() !== '').length;
  const { silver, count } = majorityVote(answers);
  return { silver, count, confidence: boxed > 0 ? count / boxed : 0 };
}

// ---- the Reasoner --------------------------------------------------------------------------------

export interface ReasonerRewardOptions {
  /**
   * Require `<think>...</think>` before the boxed answer for the format point (default true, the
   * official code's regex, although no prompt asks for it). False gives the point to any response
   * that ends in a boxed answer.
   */
  requireThink?: boolean;
}

export interface ReasonerReward {
  /** 0.9 * correct + 0.1 * formatOk. */
  total: number;
  correct: boolean;
  formatOk: boolean;
  /** The last boxed answer ('' when none). */
  boxed: string;
}

/** cot_val_solver.py's format: the whole cleaned response, DOTALL. */
const THINK_FORMAT = /^<think>[\s\S]*?<\/think>\s*\\boxed\{[\s\S]*?\}\s*$/;
const BOXED_AT_END = /\\boxed\{[\s\S]*?\}\s*$/;

/**
 * The Reasoner's reward for one response against the silver answer (cot_val_solver.py):
 * 0.9 * acc + 0.1 * fmt. As there, the response is first cleaned of whitespace around '<', '>' and
 * '/', and both the format check and the boxed answer read the cleaned text; acc is grade_answer's
 * equivalence (answersEquivalent: the vote's "both say no " shortcut is not part of grading).
 */
export function reasonerReward(response: string, silver: string, options: ReasonerRewardOptions = {}): ReasonerReward {
  const cleaned = response.replace(/\s*([<>/])\s*/g, '$1');
  const formatOk = ((options.requireThink ?? true) ? THINK_FORMAT : BOXED_AT_END).test(cleaned);
  const boxed = lastBoxed(cleaned) ?? '';
  const correct = boxed !== '' && answersEquivalent(boxed, silver);
  return { total: 0.9 * (correct ? 1 : 0) + 0.1 * (formatOk ? 1 : 0), correct, formatOk, boxed };
}

// ---- custom rewards ------------------------------------------------------------------------------

/** One Reasoner sample as a custom reward function sees it. */
export interface RewardItem {
  image: ImageRef;
  question: string;
  type: string;
  response: string;
  /** The silver answer, when the question has one. */
  silver?: string;
}

/** A user's reward for a batch of samples: one finite number per item, in order. */
export type RewardFunction = (batch: RewardItem[]) => Promise<number[]>;
