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
    std::vector<float> probs;
};

inline double logsumexp(const float * logits, int32_t n_vocab, float * max_out) {
    float m = logits[0];
    for (int32_t i = 1; i < n_vocab; ++i) m = std::max(m, logits[i]);
    double s = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) s += std::exp(static_cast<double>(logits[i] - m));
    if (max_out) *max_out = m;
    return m + std::log(s);
}

inline SampledToken sample_token(const float * logits, int32_t n_vocab, const SamplingParams & p, SampleRng & rng,
                                 SamplerScratch & scratch) {
    float max_logit = 0.0f;
    const double log_z = logsumexp(logits, n_vocab, &max_logit);
    auto logprob_of = [&](int32_t t) { return static_cast<float>(logits[t] - log_z); };

    if (p.temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n_vocab; ++i) if (logits[i] > logits[best]) best = i;
        return {best, logprob_of(best)};
    }

    const double inv_t = 1.0 / p.temperature;
    const bool truncate_k = p.top_k > 0 && p.top_k < n_vocab;
    const bool truncate_p = p.top_p < 1.0f;

    if (!truncate_k && !truncate_p) {
        // Full distribution: one pass for the mass, one to find u's token.
        double total = 0.0;
        for (int32_t i = 0; i < n_vocab; ++i) total += std::exp((logits[i] - max_logit) * inv_t);
        double u = rng.uniform() * total;
        for (int32_t i = 0; i < n_vocab; ++i) {
            u -= std::exp((logits[i] - max_logit) * inv_t);
            if (u < 0.0) return {i, logprob_of(i)};
        }
        int32_t last = n_vocab - 1;
        return {last, logprob_of(last)};
    }

    // Candidates: the k largest logits, sorted descending. For top-p alone, grow k until the
    // nucleus fits (exact, and usually a few hundred tokens).
    auto & ids = scratch.ids;
    if (ids.size() != static_cast<size_t>(n_vocab)) ids.resize(n_vocab);
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };

    int32_t k = truncate_k ? p.top_k : std::min<int32_t>(n_vocab, 256);
    double full_mass = 0.0;
    if (truncate_p && !truncate_k) {
        for (int32_t i = 0; i < n_vocab; ++i) full_mass += std::exp((logits[i] - max_logit) * inv_t);
    }
    for (;;) {
        std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
        if (truncate_k || !truncate_p || k == n_vocab) break;
        double mass = 0.0;
        for (int32_t i = 0; i < k; ++i) mass += std::exp((logits[ids[i]] - max_logit) * inv_t);
        if (mass >= p.top_p * full_mass) break;
        k = std::min<int32_t>(n_vocab, k * 4);
    }

    auto & probs = scratch.probs;
    probs.resize(k);
    double mass = 0.0;
    for (int32_t i = 0; i < k; ++i) {
        probs[i] = static_cast<float>(std::exp((logits[ids[i]] - max_logit) * inv_t));
        mass += probs[i];
    }
    int32_t keep = k;
    if (truncate_p) {
        // Smallest prefix whose share of the (top-k) mass reaches top_p; at least one token.
        const double target = p.top_p * (truncate_k ? mass : full_mass);
        double cum = 0.0;
        for (int32_t i = 0; i < k; ++i) {
            cum += probs[i];
            if (cum >= target) { keep = i + 1; break; }
        }
        mass = 0.0;
        for (int32_t i = 0; i < keep; ++i) mass += probs[i];
    }
    double u = rng.uniform() * mass;
    for (int32_t i = 0; i < keep; ++i) {
        u -= probs[i];
        if (u < 0.0) return {ids[i], logprob_of(ids[i])};
    }
    return {ids[keep - 1], logprob_of(ids[keep - 1])};
}

}  // namespace visplay
