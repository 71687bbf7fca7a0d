// Average-linkage clustering with scikit-learn's distance_threshold semantics: hand-made matrices
// (expected partitions printed by scikit-learn's AgglomerativeClustering(n_clusters=None,
// distance_threshold=0.5, metric='precomputed', linkage='average')), the boundary at exactly 0.5,
// scipy's tie rule, and a brute-force average-linkage reference on random matrices.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VisplayError } from '../../src/errors.js';
import { clusterLabels, clusterSharePenalty } from '../../src/visplay/cluster.js';
import { rng } from './helpers/rng.js';

function matrix(rows: number[][]): Float64Array {
  return Float64Array.from(rows.flat());
}

/** Labels as a partition (sets of indices) so that numbering does not matter. */
function partition(labels: ArrayLike<number>): number[][] {
  const groups = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) groups.set(labels[i]!, [...(groups.get(labels[i]!) ?? []), i]);
  return [...groups.values()].sort((a, b) => a[0]! - b[0]!);
}


/**
 * Textbook average linkage, O(n^3): merge the two clusters with the smallest mean pairwise distance
 * between their members while it is below the threshold. Independent of the chain algorithm; equal to
 * it when no two candidate merges tie.
 */
function bruteForce(dist: Float64Array, n: number, threshold: number): number[][] {
  let clusters = Array.from({ length: n }, (_, i) => [i]);
  for (;;) {
    let best = Infinity;
    let pair: [number, number] = [0, 0];
    for (let a = 0; a < clusters.length; a++) {
      for (let b = a + 1; b < clusters.length; b++) {
        let sum = 0;
        for (const i of clusters[a]!) for (const j of clusters[b]!) sum += dist[Math.min(i, j) * n + Math.max(i, j)]!;
        const mean = sum / (clusters[a]!.length * clusters[b]!.length);
        if (mean < best) { best = mean; pair = [a, b]; }
      }
    }
    if (!(best < threshold)) break;
    const merged = [...clusters[pair[0]]!, ...clusters[pair[1]]!].sort((x, y) => x - y);
    clusters = clusters.filter((_, k) => k !== pair[0] && k !== pair[1]).concat([merged]);
  }
  return clusters.sort((a, b) => a[0]! - b[0]!);
}

describe('clusterLabels', () => {
  it('finds two well separated groups, numbered by first item', () => {
    const d = matrix([
      [0, 0.1, 0.1, 0.9, 0.9],
      [0.1, 0, 0.1, 0.9, 0.9],
      [0.1, 0.1, 0, 0.9, 0.9],
      [0.9, 0.9, 0.9, 0, 0.2],
      [0.9, 0.9, 0.9, 0.2, 0],
    ]);
    assert.deepEqual(Array.from(clusterLabels(d, 5)), [0, 0, 0, 1, 1]);
  });

  it('does not merge at exactly the threshold, merges just below it', () => {
    assert.deepEqual(Array.from(clusterLabels(matrix([[0, 0.5], [0.5, 0]]), 2)), [0, 1]);
    assert.deepEqual(Array.from(clusterLabels(matrix([[0, 0.49999], [0.49999, 0]]), 2)), [0, 0]);
    assert.deepEqual(Array.from(clusterLabels(matrix([[0, 0.5], [0.5, 0]]), 2, 0.50001)), [0, 0]);
  });

  it('uses average linkage: a chain of close pairs does not join ends that are far apart', () => {
    // A-B 0.4, B-C 0.4, A-C 0.9: after A+B, d(AB, C) = (0.9 + 0.4) / 2 = 0.65 >= 0.5.
    assert.deepEqual(partition(clusterLabels(matrix([[0, 0.4, 0.9], [0.4, 0, 0.4], [0.9, 0.4, 0]]), 3)), [[0, 1], [2]]);
    // A-C 0.45 instead: d(AB, C) = (0.45 + 0.4) / 2 = 0.425 < 0.5, so all three join.
    assert.deepEqual(partition(clusterLabels(matrix([[0, 0.4, 0.45], [0.4, 0, 0.4], [0.45, 0.4, 0]]), 3)), [[0, 1, 2]]);
  });

  it('breaks ties as scipy does (the chain starts at item 0 and keeps its previous element)', () => {
    // Ties where the first merge decides the result; scikit-learn gives [0, 0, 1] and [0, 1, 0].
    assert.deepEqual(Array.from(clusterLabels(matrix([[0, 0.4, 0.7], [0.4, 0, 0.4], [0.7, 0.4, 0]]), 3)), [0, 0, 1]);
    assert.deepEqual(Array.from(clusterLabels(matrix([[0, 0.7, 0.4], [0.7, 0, 0.4], [0.4, 0.4, 0]]), 3)), [0, 1, 0]);
  });

  it('reads only the upper triangle, as scikit-learn does', () => {
    const d = matrix([[0, 0.1, 0.9], [7, 0, 0.9], [7, 7, 0]]);
    assert.deepEqual(Array.from(clusterLabels(d, 3)), [0, 0, 1]);
  });

  it('gives one cluster for n = 1 and none for n = 0', () => {
    assert.deepEqual(Array.from(clusterLabels(new Float64Array([0]), 1)), [0]);
    assert.deepEqual(Array.from(clusterLabels(new Float64Array(0), 0)), []);
  });

  it('agrees with brute-force average linkage on random matrices', () => {
    const random = rng(11);
    const clusterCounts = new Set<number>();
    for (const n of [2, 3, 7, 20, 45]) {
      for (let trial = 0; trial < 5; trial++) {
        // Planted groups, with overlapping distance ranges so that merges cross groups too.
        const group = Array.from({ length: n }, () => Math.floor(random() * 4));
        const d = new Float64Array(n * n);
        for (let i = 0; i < n; i++) {
          for (let j = i + 1; j < n; j++) d[i * n + j] = d[j * n + i] = group[i] === group[j] ? 0.6 * random() : 0.3 + 0.7 * random();
        }
        const expected = bruteForce(d, n, 0.5);
        if (n >= 20) clusterCounts.add(expected.length);
        assert.deepEqual(partition(clusterLabels(d, n)), expected, `n = ${n}, trial ${trial}`);
      }
    }
    assert.ok([...clusterCounts].some((k) => k > 1), 'the larger matrices have several clusters');
  });

  it('rejects a matrix of the wrong size and non-finite distances', () => {
    assert.throws(() => clusterLabels(new Float64Array(3), 2), (e: unknown) =>
      e instanceof VisplayError && e.code === 'ERR_INVALID_ARG' && e.message === 'Expected a Float64Array of n * n = 4 distances but received 3 values');
    assert.throws(() => clusterLabels(matrix([[0, NaN], [NaN, 0]]), 2), (e: unknown) =>
      e instanceof VisplayError && e.message === 'Expected finite distances but received NaN at [0, 1]');
    assert.throws(() => clusterLabels(matrix([[0, 1], [1, 0]]), 2, -1), (e: unknown) =>
      e instanceof VisplayError && e.message === 'Expected non-negative number for threshold but received -1 of type number');
  });
});

describe('clusterSharePenalty', () => {
  it('is the size of the cluster over the number of items', () => {
    assert.deepEqual(Array.from(clusterSharePenalty(Int32Array.from([0, 0, 0, 1, 1]))), [0.6, 0.6, 0.6, 0.4, 0.4]);
    assert.deepEqual(Array.from(clusterSharePenalty(Int32Array.from([0]))), [1]);
    assert.deepEqual(Array.from(clusterSharePenalty(new Int32Array(0))), []);
  });
});
