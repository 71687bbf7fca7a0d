// Held-out accuracy on a world's test split (issue 7): greedy, and the mean over `samples` answers
// sampled at T = 1, overall and per question family (count, colour, shape, spatial, compare).
// Scoring is eval.ts's (exact for these answer types: a number, a letter A-D, Yes/No).
import { join } from 'node:path';
import type { Model } from '../model.js';
import { evaluate, loadBench, type Bench, type EvalResult } from '../visplay/eval.js';
import { WORLD_PROMPTS } from './prompts.js';
import { readLabelled } from './pretrain.js';

export interface Accuracy {
  accuracy: number;
  correct: number;
  total: number;
}

export interface WorldScore {
  /** 'greedy' (temperature 0) or 'mean@N' (N samples at T = 1, each scored). */
  mode: string;
  overall: Accuracy;
  byFamily: Record<string, Accuracy>;
}

export interface WorldEvalOptions {
  /** A Reasoner policy folder (adapter.gguf + optimizer.gguf) over `model`. */
  lora?: string;
  /** Answers sampled per item for the mean@N score (default 8; 0 skips it). */
  samples?: number;
  /** Evaluate the first `limit` test items only. */
  limit?: number;
  /** Seed of the sampled answers (default 0: every model is sampled with the same seeds). */
  seed?: number;
  parallel?: number;
  /** Most tokens per answer (default 64: the world's answers take ~20). */
  maxTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Per-family accuracy of an evaluation whose items carry their bench ids. */
export function scoreByFamily(result: EvalResult, familyOf: ReadonlyMap<string, string>, mode: string): WorldScore {
  const byFamily: Record<string, Accuracy> = {};
  let correct = 0;
  for (const item of result.items) {
    const family = familyOf.get(item.id ?? '') ?? 'unknown';
    const f = (byFamily[family] ??= { accuracy: 0, correct: 0, total: 0 });
    f.total++;
    if (item.correct) {
      f.correct++;
      correct++;
    }
  }
  for (const f of Object.values(byFamily)) f.accuracy = f.correct / f.total;
  const total = result.items.length;
  return { mode, overall: { accuracy: total > 0 ? correct / total : 0, correct, total }, byFamily };
}

/** Greedy and (samples > 0) mean@samples accuracy of `model` (+ `lora`) on WORLD/test.jsonl. */
export async function evaluateWorld(model: Model, world: string, options: WorldEvalOptions = {}): Promise<WorldScore[]> {
  const bench: Bench = await loadBench(join(world, 'test.jsonl'));
  const familyOf = new Map(readLabelled(world, 'test.jsonl').map((item) => [item.id, item.family]));
  const samples = options.samples ?? 8;
  const common = {
    lora: options.lora, limit: options.limit, maxTokens: options.maxTokens ?? 64, promptOverrides: WORLD_PROMPTS, promptFamily: 'default' as const,
  };
  const total = Math.min(bench.items.length, options.limit ?? Infinity) * (1 + samples);
  const greedy = await evaluate(model, bench, {
    ...common, parallel: options.parallel ?? 32, onProgress: (p) => options.onProgress?.(p.done, total),
  });
  const scores = [scoreByFamily(greedy, familyOf, 'greedy')];
  if (samples > 0) {
    const n = greedy.items.length;
    const sampled = await evaluate(model, bench, {
      ...common, parallel: options.parallel ?? 64, samples, temperature: 1, seed: options.seed ?? 0,
      onProgress: (p) => options.onProgress?.(n + p.done, total),
    });
    scores.push(scoreByFamily(sampled, familyOf, `mean@${samples}`));
  }
  return scores;
}
