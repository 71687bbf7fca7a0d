// Sentence BLEU and the BLEU distance matrix of the Questioner's diversity penalty (VISPLAY.md §3),
// computed as the official code does with NLTK:
//
//   sentence_bleu([ref.split()], hyp.split(), smoothing_function=SmoothingFunction().method1)
//
// i.e. BLEU-4 with uniform weights 1/4 over one reference:
//   p_k  = clipped k-gram matches / max(1, number of k-grams of hyp)        (modified_precision)
//          a zero numerator becomes 0.1 / that denominator                   (method1, epsilon 0.1)
//   BP   = 1 if |hyp| > |ref| else exp(1 - |ref| / |hyp|)                    (brevity_penalty)
//   BLEU = BP * exp(sum_k 1/4 * log p_k)
// Edge cases, as NLTK has them:
//   - no unigram match (which includes an empty hypothesis or an empty reference): BLEU = 0;
//   - a hypothesis shorter than k: p_k = 0.1 / 1 (its denominator is max(1, 0) = 1), so identical
//     one-word texts score 0.1^(3/4) = 0.178, not 1;
//   - NLTK keeps numerator and denominator unreduced (its Fraction(..., _normalize=False)), so a
//     smoothed p_k is 0.1 / (number of k-grams of hyp), which is what is computed here.
// Values agree with NLTK to rounding (NLTK sums the four logs with math.fsum; we add them in order).

/** Python's str.isspace() characters: tokens split exactly as the official code's `text.split()`. */
const PYTHON_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

const MAX_ORDER = 4;
/** SmoothingFunction's default epsilon, added to zero numerators by method1. */
const EPSILON = 0.1;

/** Python's `text.split()`: runs of whitespace separate tokens; no empty tokens. */
export function whitespaceTokens(text: string): string[] {
  return text.split(PYTHON_WHITESPACE).filter((t) => t !== '');
}

/** NLTK's sentence_bleu([reference], hypothesis, smoothing method1), BLEU-4, uniform weights. */
export function sentenceBleu(hypothesis: readonly string[], reference: readonly string[]): number {
  const matches = [0, 0, 0, 0];
  for (let k = 1; k <= MAX_ORDER; k++) {
    const refCounts = new Map<string, number>();
    for (const g of ngrams(reference, k)) refCounts.set(g, (refCounts.get(g) ?? 0) + 1);
    const hypCounts = new Map<string, number>();
    for (const g of ngrams(hypothesis, k)) hypCounts.set(g, (hypCounts.get(g) ?? 0) + 1);
    for (const [g, c] of hypCounts) matches[k - 1] += Math.min(c, refCounts.get(g) ?? 0);
  }
  return bleuFromMatches(matches[0]!, matches[1]!, matches[2]!, matches[3]!, hypothesis.length, reference.length);
}

/**
 * The official code's distance matrix (cot_val.py `_bleu_distance_matrix`), n x n row-major:
 * for i < j, d = 1 - BLEU(hyp = texts[i], ref = texts[j]), written to both [i, j] and [j, i];
 * the diagonal is 0. So the matrix is symmetric although BLEU is not: the lower triangle is never
 * computed with hyp = texts[j]. (scikit-learn reads only the upper triangle of a precomputed matrix
 * anyway: linkage_tree passes X[triu_indices(n, k=1)] to scipy.) Texts are split as Python's
 * str.split(); an empty text is at distance 1 from everything, including other empty texts.
 *
 * Cost: the clipped match counts are symmetric (sum of min(count in i, count in j)), so they are
 * accumulated from an inverted index of interned k-grams: for each text i, each distinct k-gram
 * visits only the later texts that contain it. Pairs sharing no word keep distance 1 without being
 * looked at; each other pair costs O(shared k-grams) plus one BLEU formula.
 */
export function bleuDistanceMatrix(texts: readonly string[]): Float64Array {
  const n = texts.length;
  const dist = new Float64Array(n * n).fill(1);
  for (let i = 0; i < n; i++) dist[i * n + i] = 0;
  if (n < 2) return dist;

  const index = new NgramIndex(texts);
  const lengths = index.lengths;
  // matches[k][j]: clipped (k+1)-gram matches between the current text i and text j > i.
  const matches = Array.from({ length: MAX_ORDER }, () => new Int32Array(n));
  const touched = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let touchedCount = 0;
    for (let k = 0; k < MAX_ORDER; k++) {
      const order = index.orders[k]!;
      const acc = matches[k]!;
      for (let e = order.textStart[i]!; e < order.textStart[i + 1]!; e++) {
        const g = order.gram[e]!;
        const c = order.count[e]!;
        const end = order.postStart[g + 1]!;
        // Postings are in text order and i's own entry is at selfPos: later texts follow it.
        for (let p = order.selfPos[e]! + 1; p < end; p++) {
          const j = order.postText[p]!;
          // Every pair with a k-gram match has a unigram match, so unigrams list the pairs.
          if (k === 0 && acc[j] === 0) touched[touchedCount++] = j;
          const d = order.postCount[p]!;
          acc[j]! += c < d ? c : d;
        }
      }
    }
    const [m1, m2, m3, m4] = matches as [Int32Array, Int32Array, Int32Array, Int32Array];
    for (let t = 0; t < touchedCount; t++) {
      const j = touched[t]!;
      const d = 1 - bleuFromMatches(m1[j]!, m2[j]!, m3[j]!, m4[j]!, lengths[i]!, lengths[j]!);
      dist[i * n + j] = d;
      dist[j * n + i] = d;
      m1[j] = 0; m2[j] = 0; m3[j] = 0; m4[j] = 0;
    }
  }
  return dist;
}

// ---- internals ----------------------------------------------------------------------------------

/** BLEU-4 (method1) from clipped match counts per order and the two lengths. */
function bleuFromMatches(m1: number, m2: number, m3: number, m4: number, hypLen: number, refLen: number): number {
  if (m1 === 0) return 0; // NLTK: no unigram match (also an empty hypothesis or reference) scores 0
  const logSum = 0.25 * Math.log(precision(m1, hypLen, 1)) + 0.25 * Math.log(precision(m2, hypLen, 2)) +
    0.25 * Math.log(precision(m3, hypLen, 3)) + 0.25 * Math.log(precision(m4, hypLen, 4));
  const bp = hypLen > refLen ? 1 : Math.exp(1 - refLen / hypLen);
  return bp * Math.exp(logSum);
}

function precision(matches: number, hypLen: number, order: number): number {
  const denominator = Math.max(1, hypLen - order + 1);
  return (matches === 0 ? EPSILON : matches) / denominator;
}

/** The k-grams of a token list as keys; JSON keeps tokens that contain spaces apart. */
function ngrams(tokens: readonly string[], k: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + k <= tokens.length; i++) out.push(JSON.stringify(tokens.slice(i, i + k)));
  return out;
}

/** The distinct k-grams of each text with their counts, and for each k-gram the texts having it. */
interface OrderIndex {
  /** Entries of text i are [textStart[i], textStart[i + 1]). */
  textStart: Int32Array;
  /** Per entry: the interned k-gram, its count in the text, its position in the k-gram's postings. */
  gram: Int32Array;
  count: Int32Array;
  selfPos: Int32Array;
  /** Postings of k-gram g are [postStart[g], postStart[g + 1]), in increasing text order. */
  postStart: Int32Array;
  postText: Int32Array;
  postCount: Int32Array;
}

class NgramIndex {
  readonly lengths: Int32Array;
  readonly orders: OrderIndex[] = [];

  constructor(texts: readonly string[]) {
    const n = texts.length;
    const vocabulary = new Map<string, number>();
    const tokenIds = texts.map((text) => Int32Array.from(whitespaceTokens(text), (t) => {
      let id = vocabulary.get(t);
      if (id === undefined) vocabulary.set(t, (id = vocabulary.size));
      return id;
    }));
    this.lengths = Int32Array.from(tokenIds, (ids) => ids.length);

    // k-gram ids per text and position: the k-gram at p is (the (k-1)-gram at p, token p+k-1),
    // interned from prefixId * vocabularySize + tokenId (exact, below 2^53 for any realistic input).
    let previous: Int32Array[] = tokenIds;
    for (let k = 1; k <= MAX_ORDER; k++) {
      let gramsPerText: Int32Array[];
      let gramCount: number;
      if (k === 1) {
        gramsPerText = tokenIds;
        gramCount = vocabulary.size;
      } else {
        const interned = new Map<number, number>();
        const base = vocabulary.size;
        gramsPerText = tokenIds.map((ids, t) => {
          const prefix = previous[t]!;
          const out = new Int32Array(Math.max(0, ids.length - k + 1));
          for (let p = 0; p < out.length; p++) {
            const key = prefix[p]! * base + ids[p + k - 1]!;
            let id = interned.get(key);
            if (id === undefined) interned.set(key, (id = interned.size));
            out[p] = id;
          }
          return out;
        });
        gramCount = interned.size;
      }
      this.orders.push(buildOrder(gramsPerText, gramCount, n));
      previous = gramsPerText;
    }
  }
}

function buildOrder(gramsPerText: Int32Array[], gramCount: number, n: number): OrderIndex {
  // Distinct k-grams of each text with counts: sort the text's ids and count runs.
  const textStart = new Int32Array(n + 1);
  const distinct: Array<{ gram: Int32Array; count: Int32Array }> = gramsPerText.map((grams) => {
    const sorted = Int32Array.from(grams).sort();
    const gram: number[] = [];
    const count: number[] = [];
    for (let p = 0; p < sorted.length; p++) {
      if (p > 0 && sorted[p] === sorted[p - 1]) count[count.length - 1]!++;
      else { gram.push(sorted[p]!); count.push(1); }
    }
    return { gram: Int32Array.from(gram), count: Int32Array.from(count) };
  });
  for (let i = 0; i < n; i++) textStart[i + 1] = textStart[i]! + distinct[i]!.gram.length;
  const entries = textStart[n]!;
  const gram = new Int32Array(entries);
  const count = new Int32Array(entries);
  const selfPos = new Int32Array(entries);
  const postStart = new Int32Array(gramCount + 1);
  for (const d of distinct) for (const g of d.gram) postStart[g + 1]!++;
  for (let g = 0; g < gramCount; g++) postStart[g + 1]! += postStart[g]!;
  const fill = postStart.slice(0, gramCount);
  const postText = new Int32Array(entries);
  const postCount = new Int32Array(entries);
  // Texts in increasing order, so every posting list comes out sorted by text.
  for (let i = 0; i < n; i++) {
    const d = distinct[i]!;
    for (let e = 0; e < d.gram.length; e++) {
      const g = d.gram[e]!;
      const at = textStart[i]! + e;
      const p = fill[g]!++;
      gram[at] = g;
      count[at] = d.count[e]!;
      selfPos[at] = p;
      postText[p] = i;
      postCount[p] = d.count[e]!;
    }
  }
  return { textStart, gram, count, selfPos, postStart, postText, postCount };
}
