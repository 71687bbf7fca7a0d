// Average-linkage agglomerative clustering over a precomputed distance matrix, with the semantics of
// the official code's scikit-learn call (cot_val.py):
//
//   AgglomerativeClustering(n_clusters=None, distance_threshold=0.5, metric='precomputed', linkage='average')
//
// What scikit-learn does there: linkage_tree takes the upper triangle X[i, j], i < j, as scipy's
// condensed matrix; scipy.cluster.hierarchy.linkage(method='average') builds the tree with its
// nearest-neighbour chain (_hierarchy.nn_chain); n_clusters_ = count(merge distance >= threshold) + 1,
// and _hc_cut undoes the last n_clusters_ - 1 merges in distance order. The clusters are therefore
// the connected components of the merges at distance strictly below the threshold: a merge at
// exactly 0.5 is not made. This file runs the same nearest-neighbour chain with scipy's tie rules
// and the same update arithmetic, so ties and rounding fall as they do there.
//
// Not ml-hclust: its agnes() is O(n^3) (a smallest-pair search over a fresh matrix per merge), and
// its cut(threshold) keeps merges with height <= threshold, the opposite boundary.
import { VisplayError } from '../errors.js';
import * as check from '../validate.js';

/** The official code's distance threshold. */
export const DEFAULT_DISTANCE_THRESHOLD = 0.5;

/**
 * Cluster labels of n items from their n x n row-major distance matrix (only the upper triangle is
 * read, as scikit-learn does). Labels are 0, 1, ... in order of each cluster's first item; cluster
 * membership (not the numbering) is scikit-learn's. n = 1 gives one cluster (scikit-learn refuses
 * fewer than 2 samples). O(n^2) memory (one working copy of the matrix) and time, for n in the
 * thousands.
 */
export function clusterLabels(dist: Float64Array, n: number, threshold = DEFAULT_DISTANCE_THRESHOLD): Int32Array {
  check.nonNegativeInteger('n', n);
  check.nonNegativeNumber('threshold', threshold);
  if (!(dist instanceof Float64Array) || dist.length !== n * n) {
    throw new VisplayError('ERR_INVALID_ARG',
      `Expected a Float64Array of n * n = ${n * n} distances but received ${dist instanceof Float64Array ? `${dist.length} values` : typeof dist}`);
  }
  const parent = Int32Array.from({ length: n }, (_, i) => i);
  for (const merge of averageLinkage(dist, n)) {
    if (merge.distance < threshold) union(parent, merge.a, merge.b);
  }
  const labels = new Int32Array(n);
  const labelOfRoot = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const root = find(parent, i);
    let label = labelOfRoot.get(root);
    if (label === undefined) labelOfRoot.set(root, (label = labelOfRoot.size));
    labels[i] = label;
  }
  return labels;
}

/** The diversity penalty of each item: the size of its cluster over the number of items. */
export function clusterSharePenalty(labels: Int32Array): Float64Array {
  const sizes = new Map<number, number>();
  for (const label of labels) sizes.set(label, (sizes.get(label) ?? 0) + 1);
  return Float64Array.from(labels, (label) => sizes.get(label)! / labels.length);
}

// ---- scipy's nearest-neighbour chain for average linkage ------------------------------------------

interface Merge {
  /** The two clusters merged, each named by an item it contains. */
  a: number;
  b: number;
  distance: number;
}

/**
 * The n - 1 merges of average linkage, in the order the chain finds them (scipy sorts them by
 * distance afterwards; the components below a threshold do not depend on the order).
 *
 * As in scipy's nn_chain: a cluster lives in the slot of one of its items; the chain starts at the
 * first live slot; each step looks for the strictly nearest live slot, starting from the previous
 * chain element so that ties keep the chain from cycling; two mutual nearest neighbours x < y are
 * merged into slot y, and d(i, y) = (|x| d(i, x) + |y| d(i, y)) / (|x| + |y|).
 */
function averageLinkage(dist: Float64Array, n: number): Merge[] {
  // A full symmetric working copy (not scipy's condensed one) so that each row scan is contiguous.
  const d = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = dist[i * n + j]!;
      if (!Number.isFinite(v)) {
        throw new VisplayError('ERR_INVALID_ARG', `Expected finite distances but received ${v} at [${i}, ${j}]`);
      }
      d[i * n + j] = v;
      d[j * n + i] = v;
    }
  }
  const size = new Int32Array(n).fill(1);
  const chain = new Int32Array(n);
  let chainLength = 0;
  const merges: Merge[] = [];
  for (let k = 0; k < n - 1; k++) {
    if (chainLength === 0) {
      let first = 0;
      while (size[first] === 0) first++;
      chain[0] = first;
      chainLength = 1;
    }
    let x: number;
    let y = 0;
    let currentMin: number;
    for (;;) {
      x = chain[chainLength - 1]!;
      if (chainLength > 1) {
        y = chain[chainLength - 2]!;
        currentMin = d[x * n + y]!;
      } else {
        currentMin = Infinity;
      }
      const row = x * n;
      for (let i = 0; i < n; i++) {
        if (size[i] === 0 || i === x) continue;
        const v = d[row + i]!;
        if (v < currentMin) {
          currentMin = v;
          y = i;
        }
      }
      if (chainLength > 1 && y === chain[chainLength - 2]) break;
      chain[chainLength++] = y;
    }
    chainLength -= 2;
    if (x > y) [x, y] = [y, x];
    const nx = size[x]!;
    const ny = size[y]!;
    merges.push({ a: x, b: y, distance: currentMin });
    size[x] = 0;
    size[y] = nx + ny;
    for (let i = 0; i < n; i++) {
      const ni = size[i]!;
      if (ni === 0 || i === y) continue;
      const v = (nx * d[i * n + x]! + ny * d[i * n + y]!) / (nx + ny);
      d[i * n + y] = v;
      d[y * n + i] = v;
    }
  }
  return merges;
}

function find(parent: Int32Array, i: number): number {
  while (parent[i] !== i) {
    parent[i] = parent[parent[i]!]!; // path halving
    i = parent[i]!;
  }
  return i;
}

function union(parent: Int32Array, a: number, b: number): void {
  const ra = find(parent, a);
  const rb = find(parent, b);
  if (ra !== rb) parent[Math.max(ra, rb)] = Math.min(ra, rb);
}
