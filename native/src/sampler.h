// Token sampling with the old-policy log-prob GRPO needs.
//
// For logits l (n_vocab), the returned log-prob is that of the chosen token under the unmodified
// model distribution: log softmax(l)[tok] = l[tok] - logsumexp(l), i.e. temperature 1 before any
// top-k / top-p truncation. The token itself is drawn from softmax(l / T) restricted to the top-k
// tokens and then to the smallest top-p nucleus (T <= 0: argmax). Every sample owns its RNG, so a
// sample's draws depend only on (seed, sample index), not on batching or scheduling.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

namespace visplay {

class SampleRng {  // xoshiro256** seeded by splitmix64
  public:
    explicit SampleRng(uint64_t seed = 0) {
        for (auto & s : s_) {
            uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            s = z ^ (z >> 31);
        }
    }
    uint64_t next() {
        const uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
        s_[2] ^= t; s_[3] = rotl(s_[3], 45);
        return result;
    }
    double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t s_[4];
};

struct SamplingParams {
    float temperature = 1.0f;  // <= 0: greedy
    float top_p = 1.0f;        // 1: off
    int top_k = 0;             // 0: off
};

struct SampledToken {
    int32_t token;
    float logprob;  // under the unmodified distribution (T = 1, no truncation)
};

// Scratch buffers reused across calls so the hot loop does not allocate.
struct SamplerScratch {
    std::vector<int32_t> ids;
    std::vector<int32_t> boundary;
    std::vector<float> probs;
};

// exp(x) for x <= 0 within ~2 ulp: Cephes' range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6
// polynomial for e^r, and 2^n through the exponent bits. Written without branches so the compiler
// vectorizes the loops below; the vocabulary-wide passes are the sampler's whole cost.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);
    // n = round(x / ln2) for x <= 0, by truncation (vectorizes on every x86 level, unlike nearbyint).
    const float n = static_cast<float>(static_cast<int32_t>(x * 1.44269504088896341f - 0.5f));
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
    return p * __builtin_bit_cast(float, e);
}

// The two vocabulary-wide loops carry `omp simd` (compiled with -fopenmp-simd: no OpenMP runtime)
// so the reductions vectorize without -ffast-math.
inline float max_of(const float * x, int32_t n) {
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int32_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m;
}

// sum_i exp((x_i - max) * scale), optionally storing each term in out.
inline double sum_exp(const float * x, int32_t n, float max, float scale, float * out) {
    float acc = 0.0f;
    if (out) {
#pragma omp simd reduction(+ : acc)
        for (int32_t i = 0; i < n; ++i) {
            const float e = exp_nonpositive((x[i] - max) * scale);
            out[i] = e;
            acc += e;
        }
    } else {
#pragma omp simd reduction(+ : acc)
        for (int32_t i = 0; i < n; ++i) acc += exp_nonpositive((x[i] - max) * scale);
    }
    return acc;
}

// log sum_i exp(x_i): the normalizer of the model's distribution at temperature 1.
inline double logsumexp(const float * logits, int32_t n_vocab, float * max_out) {
    const float m = max_of(logits, n_vocab);
    if (max_out) *max_out = m;
    return m + std::log(sum_exp(logits, n_vocab, m, 1.0f, nullptr));
}

inline float min_of(const float * x, int32_t n) {
    float m = x[0];
#pragma omp simd reduction(min : m)
    for (int32_t i = 0; i < n; ++i) m = x[i] < m ? x[i] : m;
    return m;
}

// Index i with u falling in [cum(i-1), cum(i)) of the weights w, walking blocks of 512 whose sums
// vectorize, then one block element by element. u must be in [0, sum(w)).
inline int32_t pick_weighted(const float * w, int32_t n, double u) {
    constexpr int32_t kBlock = 512;
    int32_t i = 0;
    for (; i + kBlock <= n; i += kBlock) {
        float block = 0.0f;
#pragma omp simd reduction(+ : block)
        for (int32_t j = 0; j < kBlock; ++j) block += w[i + j];
        if (u < block) break;
        u -= block;
    }
    for (; i < n; ++i) {
        u -= w[i];
        if (u < 0.0) return i;
    }
    return n - 1;
}

// Splits the vocabulary for a truncated distribution with a 1024-bucket histogram of the logits:
// `above` gets every token of the top buckets that hold fewer than `min_count` tokens (top-k) or
// less than `min_mass` of the weights (top-p), `boundary` the tokens of the bucket that crosses the
// limit, sorted by logit descending (ties by id, a total order). Only the boundary is sorted, so a
// flat distribution whose nucleus is most of the vocabulary costs a few passes, not a full sort.
inline void split_top(const float * logits, const float * weights, int32_t n, float max_logit, int32_t min_count,
                      double min_mass, std::vector<int32_t> & above, std::vector<int32_t> & boundary) {
    constexpr int kBuckets = 1024;
    above.clear();
    boundary.clear();
    const float span = max_logit - min_of(logits, n);
    const float per = span > 0.0f ? (kBuckets - 1) / span : 0.0f;
    auto bucket = [&](int32_t i) { return static_cast<int>((max_logit - logits[i]) * per); };  // 0 = top
    int32_t count[kBuckets] = {};
    double mass[kBuckets] = {};
    for (int32_t i = 0; i < n; ++i) {
        const int b = bucket(i);
        count[b]++;
        if (weights) mass[b] += weights[i];
    }
    int32_t have = 0;
    double have_mass = 0.0;
    int last = 0;
    for (; last < kBuckets - 1; ++last) {
        if (have + count[last] >= min_count && have_mass + mass[last] >= min_mass) break;
        have += count[last];
        have_mass += mass[last];
    }
    above.reserve(have);
    boundary.reserve(count[last]);
    for (int32_t i = 0; i < n; ++i) {
        const int b = bucket(i);
        if (b < last) above.push_back(i);
        else if (b == last) boundary.push_back(i);
    }
    std::sort(boundary.begin(), boundary.end(),
              [logits](int32_t x, int32_t y) { return logits[x] > logits[y] || (logits[x] == logits[y] && x < y); });
}

inline SampledToken sample_token(const float * logits, int32_t n_vocab, const SamplingParams & p, SampleRng & rng,
                                 SamplerScratch & scratch) {
    const float max_logit = max_of(logits, n_vocab);
    const bool greedy = p.temperature <= 0.0f;
    const bool truncate_k = p.top_k > 0 && p.top_k < n_vocab;
    const bool truncate_p = p.top_p < 1.0f;
    const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;
    auto & probs = scratch.probs;
    if (probs.size() < static_cast<size_t>(n_vocab)) probs.resize(n_vocab);
    // At T = 1 the normalizer's terms are the sampling weights as well: one pass serves both.
    const bool t_is_one = inv_t == 1.0f;
    const double z = sum_exp(logits, n_vocab, max_logit, 1.0f, t_is_one ? probs.data() : nullptr);
    const double log_z = max_logit + std::log(z);
    auto logprob_of = [&](int32_t t) { return static_cast<float>(logits[t] - log_z); };

    if (greedy) {
        const int32_t best = static_cast<int32_t>(std::find(logits, logits + n_vocab, max_logit) - logits);
        return {best, logprob_of(best)};
    }
    // probs[i] = exp((l_i - max) / T): unnormalized sampling weights.
    const double total = t_is_one ? z : sum_exp(logits, n_vocab, max_logit, inv_t, probs.data());
    if (!truncate_k && !truncate_p) {
        const int32_t t = pick_weighted(probs.data(), n_vocab, rng.uniform() * total);
        return {t, logprob_of(t)};
    }

    auto & above = scratch.ids;
    auto & boundary = scratch.boundary;
    split_top(logits, probs.data(), n_vocab, max_logit, truncate_k ? p.top_k : 1,
              truncate_p && !truncate_k ? p.top_p * total : 0.0, above, boundary);
    auto by_logit = [logits](int32_t x, int32_t y) { return logits[x] > logits[y] || (logits[x] == logits[y] && x < y); };
    if (truncate_k) {
        // Exactly the k best, sorted; then, with top-p too, the nucleus within them.
        boundary.resize(std::min<size_t>(boundary.size(), static_cast<size_t>(p.top_k) - above.size()));
        std::sort(above.begin(), above.end(), by_logit);
        above.insert(above.end(), boundary.begin(), boundary.end());
        boundary.clear();
        if (truncate_p) {
            double mass = 0.0;
            for (int32_t t : above) mass += probs[t];
            const double target = p.top_p * mass;
            double cum = 0.0;
            size_t keep = above.size();
            for (size_t i = 0; i < above.size(); ++i) {
                cum += probs[above[i]];
                if (cum >= target) { keep = i + 1; break; }
            }
            above.resize(keep);
        }
    } else {
        // Top-p alone: every token above the boundary bucket is in; the boundary's best ones
        // complete the smallest set whose mass reaches top_p (at least one token).
        double cum = 0.0;
        for (int32_t t : above) cum += probs[t];
        const double target = p.top_p * total;
        size_t keep = 0;
        while (keep < boundary.size() && (cum < target || (above.empty() && keep == 0))) cum += probs[boundary[keep++]];
        above.insert(above.end(), boundary.begin(), boundary.begin() + keep);
    }
    double mass = 0.0;
    for (int32_t t : above) mass += probs[t];
    double u = rng.uniform() * mass;
    for (int32_t t : above) {
        u -= probs[t];
        if (u < 0.0) return {t, logprob_of(t)};
    }
    return {above.back(), logprob_of(above.back())};
}

}  // namespace visplay
