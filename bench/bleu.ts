// The Questioner's diversity penalty at the official batch size: BLEU distances over 4096 questions
// (512 images x 8, VISPLAY.md §3), then average-linkage clustering. The questions are synthetic
// (seeded), about 20 whitespace tokens each: per image a base question (a common opening and words
// from a Zipf-like vocabulary, so most pairs share a few words), and 8 variants of it with about a
// fifth of the words replaced, as a Questioner's group of 8 often is.
//
import { parseArgs } from 'node:util';
import { bleuDistanceMatrix } from '../src/visplay/bleu.js';
import { clusterLabels } from '../src/visplay/cluster.js';
import { rng } from '../test/unit/helpers/rng.js';

const { values } = parseArgs({ options: { n: { type: 'string', default: '4096' }, repeats: { type: 'string', default: '3' } } });
const n = Number(values.n);
const repeats = Number(values.repeats);


function syntheticQuestions(count: number, perImage: number, seed: number): string[] {
  const random = rng(seed);
  const openings = ['How many', 'What is the', 'Which of the', 'Is the', 'Estimate the', 'What fraction of the', 'In the image, how many'];
  const vocabulary = Array.from({ length: 2000 }, (_, i) => `w${i.toString(36)}`);
  // Zipf-like: index ~ 2000^u - 1 puts most draws on the first few hundred words.
  const word = () => vocabulary[Math.min(vocabulary.length - 1, Math.floor(Math.exp(random() * Math.log(vocabulary.length)) - 1))]!;
  const out: string[] = [];
  while (out.length < count) {
    const base = [openings[Math.floor(random() * openings.length)]!, ...Array.from({ length: 12 + Math.floor(random() * 12) }, word)];
    for (let v = 0; v < perImage && out.length < count; v++) {
      out.push(`${base.map((w, i) => (i > 0 && random() < 0.2 ? word() : w)).join(' ')} ?`);
    }
  }
  return out;
}

const texts = syntheticQuestions(n, 8, 1);
const tokens = texts.reduce((a, t) => a + t.split(' ').length, 0);
console.log(`${n} questions, ${(tokens / n).toFixed(1)} tokens each on average`);

let best = Infinity;
let dist: Float64Array = new Float64Array(0);
for (let r = 0; r < repeats; r++) {
  const t0 = performance.now();
  dist = bleuDistanceMatrix(texts);
  best = Math.min(best, performance.now() - t0);
}
let below = 0;
for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) if (dist[i * n + j]! < 0.5) below++;
console.log(`bleuDistanceMatrix: ${(best / 1000).toFixed(2)} s (best of ${repeats}); ${below} of ${(n * (n - 1)) / 2} pairs closer than 0.5`);

const t1 = performance.now();
const labels = clusterLabels(dist, n);
const clusters = new Set(labels).size;
console.log(`clusterLabels: ${((performance.now() - t1) / 1000).toFixed(2)} s; ${clusters} clusters`);
