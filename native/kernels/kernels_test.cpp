// visplay_kernels_test: the GRPO kernels against independent references, as llm.c checks its kernels.
//
//   CPU reference  vs a straightforward long-double evaluation of the formula in grpo_kernels.h
//   CUDA kernels   vs the CPU reference, on the same inputs (when built with VISPLAY_CUDA and a
//                  device exists; otherwise one "SKIP cuda: ..." line, still exit 0)
//
// usage: visplay_kernels_test [--require-cuda] [--dump-adamw FILE] [--verbose]
//   --require-cuda      fail (exit 1) when the CUDA checks cannot run (used by test/gpu on a GPU machine)
//   --dump-adamw FILE   also write a small AdamW run (inputs, CPU result, CUDA result) for a
//                       cross-check against torch.optim.AdamW (see the format at dump_adamw)
//
// Tolerances, each |got - ref| <= atol + rtol |ref| per element (llm.c's validate_result):
//   advantages, CPU vs long double            atol 1e-5,  rtol 1e-6   (outputs are O(1)..O(sqrt n))
//   AdamW p/m/v, CPU vs long double, 10 steps  rtol 1e-6,  atol 1e-6 * max|ref| of the tensor
//   sum of squares, CPU vs long double         rtol 1e-12
//   advantages, CUDA vs CPU                    atol 1e-6,  rtol 1e-6   (both accumulate in double)
//   AdamW p/m/v, CUDA vs CPU, 10 steps         rtol 1e-5,  atol 1e-6 * max|ref|, and then bitwise equal
//                                              (both are built without FMA contraction)
//   sum of squares, CUDA vs CPU                rtol 1e-9; and bitwise equal from run to run
//   head lse, CPU vs long double               atol 1e-12 (1 + |lse|)
//   head d logits, CPU vs central differences  atol 1e-6 of d logp / d logits (h = 1e-4, in long double)
//   head lse and target logit, CUDA vs CPU     atol 1e-5 (1 + |lse|): float accumulation per thread
//   head d logits, CUDA vs CPU                 atol 1e-6 |w|, rtol 1e-5
// Exit code: 0 when every check passed, 1 otherwise.
#include "grpo_kernels.h"

#ifdef VISPLAY_CUDA
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using visplay::AdamWConfig;
using visplay::AdamWTensor;

// ---- bookkeeping -----------------------------------------------------------------------------

int g_failures = 0;
int g_checks = 0;
bool g_verbose = false;

void expect(bool ok, const std::string & what) {
    ++g_checks;
    if (!ok) {
        ++g_failures;
        std::printf("FAIL %s\n", what.c_str());
    } else if (g_verbose) {
        std::printf("ok   %s\n", what.c_str());
    }
}

// Every element within atol + rtol |ref|; NaN never passes. Prints the worst element on failure.
template <typename Ref>
bool close_enough(const std::string & what, const float * got, const Ref * ref, size_t n, double atol, double rtol) {
    size_t bad = 0, worst = 0;
    double worst_excess = -1.0, max_err = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const double r = static_cast<double>(ref[i]);
        const double err = std::fabs(static_cast<double>(got[i]) - r);
        const double tol = atol + rtol * std::fabs(r);
        const bool ok = err <= tol;  // false for NaN
        if (!ok) ++bad;
        if (!(err <= max_err)) max_err = err;
        const double excess = ok ? err - tol : std::numeric_limits<double>::infinity();
        if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    char line[512];
    std::snprintf(line, sizeof line, "%s: %zu elements, max |err| %.3g (atol %.3g, rtol %.3g)", what.c_str(), n, max_err, atol, rtol);
    if (bad) {
        char more[256];
        std::snprintf(more, sizeof more, "; %zu outside, e.g. [%zu] got %.9g ref %.9g", bad, worst,
                      static_cast<double>(got[worst]), static_cast<double>(ref[worst]));
        expect(false, std::string(line) + more);
        return false;
    }
    expect(true, line);
    return true;
}

double max_abs(const std::vector<long double> & x) {
    long double m = 0;
    for (long double v : x) m = std::max(m, std::fabs(v));
    return static_cast<double>(m);
}

template <typename Fn>
bool throws_invalid(Fn fn) {
    try {
        fn();
    } catch (const std::invalid_argument &) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

// ---- (a) advantages: cases and the long-double reference -----------------------------------------

struct GroupCase {
    std::string name;
    std::vector<float> rewards;
    std::vector<int32_t> offsets;  // CSR, offsets.size() = n_groups + 1
    float eps = visplay::kDefaultAdvantageEps;
    GroupCase() = default;
    GroupCase(std::string name_, std::vector<float> rewards_, std::vector<int32_t> offsets_)
        : name(std::move(name_)), rewards(std::move(rewards_)), offsets(std::move(offsets_)) {}
    int n_groups() const { return static_cast<int>(offsets.size()) - 1; }
};

std::vector<long double> advantages_reference(const GroupCase & c) {
    std::vector<long double> out(c.rewards.size(), 0.0L);
    for (int g = 0; g < c.n_groups(); ++g) {
        const int b = c.offsets[g], e = c.offsets[g + 1], n = e - b;
        if (n <= 1) continue;
        long double mean = 0;
        for (int i = b; i < e; ++i) mean += c.rewards[i];
        mean /= n;
        long double var = 0;
        for (int i = b; i < e; ++i) var += (c.rewards[i] - mean) * (c.rewards[i] - mean);
        var /= (n - 1);
        if (var == 0) continue;
        const long double denom = std::sqrt(var) + static_cast<long double>(c.eps);
        for (int i = b; i < e; ++i) out[i] = (c.rewards[i] - mean) / denom;
    }
    return out;
}

GroupCase make_groups(const std::string & name, const std::vector<int> & sizes, const std::function<float(std::mt19937_64 &, int)> & draw,
                      uint64_t seed) {
    GroupCase c;
    c.name = name;
    std::mt19937_64 rng(seed);
    c.offsets.push_back(0);
    for (size_t g = 0; g < sizes.size(); ++g) {
        for (int i = 0; i < sizes[g]; ++i) c.rewards.push_back(draw(rng, static_cast<int>(g)));
        c.offsets.push_back(static_cast<int32_t>(c.rewards.size()));
    }
    return c;
}

std::vector<GroupCase> group_cases() {
    std::vector<GroupCase> cases;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto gauss = [normal](std::mt19937_64 & rng, int) mutable { return normal(rng); };
    auto binary = [](std::mt19937_64 & rng, int) { return static_cast<float>(rng() & 1); };  // pass/fail rewards

    cases.push_back({"known values [1,2,3]", {1, 2, 3}, {0, 3}});
    cases.push_back({"a group of 1", {42.5f}, {0, 1}});
    cases.push_back({"equal rewards", {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, -3.5e37f, -3.5e37f, -3.5e37f, 1e-30f, 1e-30f}, {0, 7, 10, 12}});
    cases.push_back({"empty group list", {}, {0}});
    cases.push_back({"empty groups between", {1, 2, 5, 7, 7, 1}, {0, 0, 3, 3, 3, 6, 6}});
    {
        GroupCase c{"eps = 0", {1, 4, 2, 8}, {0, 4}};
        c.eps = 0.0f;
        cases.push_back(c);
    }
    // GRPO's usual shape: many groups of 8 with pass/fail rewards (some all-pass, some all-fail).
    cases.push_back(make_groups("4096 x 8 binary", std::vector<int>(4096, 8), binary, 1));
    // Every size 1..5000 in a shuffled order, including the CUDA path thresholds (256, 1024).
    {
        std::vector<int> sizes;
        for (int s = 1; s <= 40; ++s) sizes.push_back(s);
        for (int s : {255, 256, 257, 1023, 1024, 1025, 2048, 4999, 5000}) sizes.push_back(s);
        std::mt19937_64 rng(7);
        for (int i = 0; i < 200; ++i) sizes.push_back(1 + static_cast<int>(rng() % 5000));
        std::shuffle(sizes.begin(), sizes.end(), rng);
        cases.push_back(make_groups("249 groups of 1..5000", sizes, gauss, 2));
    }
    cases.push_back(make_groups("huge rewards (|r| ~ 1e30..3e38)", {5, 64, 300, 2000},
        [](std::mt19937_64 & rng, int g) {
            const float scale[] = {1e30f, 1e36f, 3e37f, 1e38f};
            return scale[g] * (static_cast<float>(rng() % 2001) / 1000.0f - 1.0f) * (g == 3 ? 3.0f : 1.0f);
        }, 3));
    cases.push_back(make_groups("negative rewards", {8, 8, 100}, [](std::mt19937_64 & rng, int) { return -1000.0f - static_cast<float>(rng() % 1000); }, 4));
    cases.push_back(make_groups("tiny rewards (~1e-30)", {16, 500}, [](std::mt19937_64 & rng, int) { return 1e-30f * static_cast<float>(rng() % 100); }, 5));
    cases.push_back(make_groups("offset rewards (1e6 + noise)", {8, 1000}, [normal](std::mt19937_64 & rng, int) mutable { return 1e6f + normal(rng); }, 6));
    cases.push_back(make_groups("one group of 100000", {100000}, gauss, 8));
    return cases;
}

void test_advantages_cpu(const std::vector<GroupCase> & cases) {
    for (const GroupCase & c : cases) {
        std::vector<float> out(c.rewards.size(), std::numeric_limits<float>::quiet_NaN());  // poison: every element must be written
        visplay::group_advantages_cpu(c.rewards.data(), c.offsets.data(), c.n_groups(), c.eps, out.data());
        const std::vector<long double> ref = advantages_reference(c);
        close_enough("advantages cpu, " + c.name, out.data(), ref.data(), out.size(), 1e-5, 1e-6);
    }
    // Exact expectations, beyond tolerances.
    {
        const float r[] = {1, 2, 3};
        const int32_t off[] = {0, 3};
        float out[3];
        visplay::group_advantages_cpu(r, off, 1, 1e-6f, out);
        const float e = static_cast<float>(1.0 / (1.0 + 1e-6));
        expect(out[0] == -e && out[1] == 0.0f && out[2] == e, "advantages cpu: [1,2,3] gives exactly [-1,0,1]/(1+eps)");
    }
    {
        const float r[] = {7.25f, 0.1f, 0.1f, 0.1f, 3e38f, 3e38f};
        const int32_t off[] = {0, 1, 4, 6};
        float out[6] = {1, 1, 1, 1, 1, 1};
        visplay::group_advantages_cpu(r, off, 3, 0.0f, out);
        bool zeros = true;
        for (float x : out) zeros = zeros && x == 0.0f;
        expect(zeros, "advantages cpu: a group of 1 and equal rewards give exact zeros, also with eps = 0");
    }
    {
        float sentinel = 123.0f;
        const int32_t off[] = {0};
        visplay::group_advantages_cpu(nullptr, off, 0, 1e-6f, &sentinel);
        expect(sentinel == 123.0f, "advantages cpu: an empty group list writes nothing");
    }
    {
        const float r[] = {1, 2, 3};
        const int32_t off[] = {0, 2, 1};
        float out[3];
        expect(throws_invalid([&] { visplay::group_advantages_cpu(r, off, 2, 1e-6f, out); }), "advantages cpu: decreasing offsets throw invalid_argument");
        expect(throws_invalid([&] { visplay::group_advantages_cpu(r, off, -1, 1e-6f, out); }), "advantages cpu: negative n_groups throws invalid_argument");
    }
}

// ---- (b) AdamW: the long-double reference and the state of a run --------------------------------

// The brief's textbook form, not torch's order: p *= 1 - lr wd; m = b1 m + (1 - b1) g;
// v = b2 v + (1 - b2) g^2; p -= lr (m / bc1) / (sqrt(v / bc2) + eps).
struct RefState {
    std::vector<long double> p, m, v;
};

void adamw_reference_step(RefState & s, const std::vector<float> & grad, const AdamWConfig & cfg) {
    const long double lr = cfg.lr, b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps, wd = cfg.weight_decay;
    const long double bc1 = 1 - std::pow(b1, static_cast<long double>(cfg.step));
    const long double bc2 = 1 - std::pow(b2, static_cast<long double>(cfg.step));
    for (size_t i = 0; i < grad.size(); ++i) {
        const long double g = static_cast<long double>(grad[i]) * cfg.grad_scale;
        s.p[i] *= 1 - lr * wd;
        s.m[i] = b1 * s.m[i] + (1 - b1) * g;
        s.v[i] = b2 * s.v[i] + (1 - b2) * g * g;
        s.p[i] -= lr * (s.m[i] / bc1) / (std::sqrt(s.v[i] / bc2) + eps);
    }
}

// One tensor of a run, float state plus the reference in long double.
struct RunTensor {
    std::vector<float> p, m, v;
    std::vector<std::vector<float>> grads;  // one per step
    RefState ref;
};

struct AdamWCase {
    std::string name;
    std::vector<int64_t> sizes;
    AdamWConfig cfg;        // cfg.step is the first step; steps follow it
    int steps = 10;
    bool nonzero_state = false;  // start from random m, v (a run resumed at cfg.step)
    bool zero_grads_first = false;  // tensor 0 gets all-zero grads (LoRA A while B is still zero)
    std::vector<float> scales;   // grad_scale per step (empty: cfg.grad_scale)
    AdamWCase(std::string name_, std::vector<int64_t> sizes_, AdamWConfig cfg_)
        : name(std::move(name_)), sizes(std::move(sizes_)), cfg(cfg_) {}
};

std::vector<RunTensor> make_run(const AdamWCase & c, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<RunTensor> run(c.sizes.size());
    for (size_t t = 0; t < c.sizes.size(); ++t) {
        RunTensor & r = run[t];
        const size_t n = static_cast<size_t>(c.sizes[t]);
        r.p.resize(n), r.m.assign(n, 0.0f), r.v.assign(n, 0.0f);
        for (auto & x : r.p) x = 0.02f * normal(rng);
        if (c.nonzero_state) {
            for (auto & x : r.m) x = 1e-3f * normal(rng);
            for (auto & x : r.v) x = 1e-6f * std::fabs(normal(rng)) + 1e-8f;
        }
        // Grads of mixed scales (1e-6 .. 1e-1), some exactly zero.
        r.grads.assign(c.steps, std::vector<float>(n));
        for (auto & step : r.grads) {
            for (auto & x : step) {
                const int k = static_cast<int>(rng() % 16);
                x = k == 0 ? 0.0f : std::pow(10.0f, -1.0f - static_cast<float>(k % 6)) * normal(rng);
            }
            if (t == 0 && c.zero_grads_first) std::fill(step.begin(), step.end(), 0.0f);
        }
        r.ref.p.assign(r.p.begin(), r.p.end());
        r.ref.m.assign(r.m.begin(), r.m.end());
        r.ref.v.assign(r.v.begin(), r.v.end());
    }
    return run;
}

AdamWConfig step_config(const AdamWCase & c, int k) {
    AdamWConfig cfg = c.cfg;
    cfg.step = c.cfg.step + k;
    if (!c.scales.empty()) cfg.grad_scale = c.scales[k % c.scales.size()];
    return cfg;
}

std::vector<AdamWCase> adamw_cases() {
    std::vector<AdamWCase> cases;
    AdamWConfig base;  // torch defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2
    {
        AdamWCase c{"defaults, 3 tensors", {4096, 4097, 1}, base};
        c.zero_grads_first = true;
        cases.push_back(c);
    }
    {
        AdamWCase c{"no weight decay, lr 1e-2", {1000, 33}, base};
        c.cfg.weight_decay = 0.0;
        c.cfg.lr = 1e-2;
        cases.push_back(c);
    }
    {
        AdamWCase c{"grad_scale < 1 (clipped), wd 0.1", {5000, 3}, base};
        c.cfg.weight_decay = 0.1;
        c.scales = {0.37f, 1.0f, 0.05f};
        cases.push_back(c);
    }
    {
        AdamWCase c{"resumed at step 1000, nonzero state", {2048, 7}, base};
        c.cfg.step = 1000;
        c.nonzero_state = true;
        cases.push_back(c);
    }
    {
        AdamWCase c{"beta1 0.4 (torch's other lerp form), beta2 0.9, eps 1e-6", {777}, base};
        c.cfg.beta1 = 0.4;
        c.cfg.beta2 = 0.9;
        c.cfg.eps = 1e-6;
        cases.push_back(c);
    }
    {
        AdamWCase c{"large, 2 tensors (threads)", {300000, 700001}, base};
        c.steps = 3;
        cases.push_back(c);
    }
    return cases;
}

std::vector<AdamWTensor> views(std::vector<RunTensor> & run, int step) {
    std::vector<AdamWTensor> ts;
    for (auto & r : run) ts.push_back({r.p.data(), r.grads[step].data(), r.m.data(), r.v.data(), static_cast<int64_t>(r.p.size())});
    return ts;
}

void test_adamw_cpu() {
    uint64_t seed = 100;
    for (const AdamWCase & c : adamw_cases()) {
        std::vector<RunTensor> run = make_run(c, seed++);
        for (int k = 0; k < c.steps; ++k) {
            const AdamWConfig cfg = step_config(c, k);
            std::vector<AdamWTensor> ts = views(run, k);
            visplay::lora_adamw_cpu(ts.data(), static_cast<int>(ts.size()), cfg);
            for (auto & r : run) adamw_reference_step(r.ref, r.grads[k], cfg);
        }
        for (size_t t = 0; t < run.size(); ++t) {
            const RunTensor & r = run[t];
            const std::string at = "adamw cpu, " + c.name + ", tensor " + std::to_string(t) + " after " + std::to_string(c.steps) + " steps, ";
            close_enough(at + "param", r.p.data(), r.ref.p.data(), r.p.size(), 1e-6 * max_abs(r.ref.p), 1e-6);
            close_enough(at + "m", r.m.data(), r.ref.m.data(), r.m.size(), 1e-6 * max_abs(r.ref.m), 1e-6);
            close_enough(at + "v", r.v.data(), r.ref.v.data(), r.v.size(), 1e-6 * max_abs(r.ref.v), 1e-6);
        }
    }
    {
        // Thread count must not change the result: 1 thread vs 3 threads, bitwise.
        AdamWCase c{"threads", {600000, 100}, AdamWConfig{}};
        c.steps = 2;
        std::vector<RunTensor> a = make_run(c, 9), b = make_run(c, 9);
        for (int k = 0; k < c.steps; ++k) {
            auto ta = views(a, k), tb = views(b, k);
            visplay::lora_adamw_cpu(ta.data(), 2, step_config(c, k), 1);
            visplay::lora_adamw_cpu(tb.data(), 2, step_config(c, k), 3);
        }
        bool same = true;
        for (size_t t = 0; t < a.size(); ++t) same = same && a[t].p == b[t].p && a[t].m == b[t].m && a[t].v == b[t].v;
        expect(same, "adamw cpu: 1 thread and 3 threads give bitwise equal results");
        auto ta = views(a, 0);
        const double s1 = visplay::grad_sum_squares_cpu(ta.data(), 2, 1), s3 = visplay::grad_sum_squares_cpu(ta.data(), 2, 3);
        expect(s1 == s3, "grad_sum_squares cpu: 1 thread and 3 threads give bitwise equal sums");
    }
    {
        // Sum of squares against long double, and the clip factor.
        AdamWCase c{"sumsq", {1, 4096, 1000003}, AdamWConfig{}};
        c.steps = 1;
        std::vector<RunTensor> run = make_run(c, 11);
        auto ts = views(run, 0);
        long double ref = 0;
        for (auto & r : run) for (float g : r.grads[0]) ref += static_cast<long double>(g) * g;
        const double got = visplay::grad_sum_squares_cpu(ts.data(), static_cast<int>(ts.size()));
        char line[200];
        std::snprintf(line, sizeof line, "grad_sum_squares cpu: %.17g vs long double %.17Lg (rtol 1e-12)", got, ref);
        expect(std::fabs(got - static_cast<double>(ref)) <= 1e-12 * static_cast<double>(ref), line);
        expect(visplay::grad_sum_squares_cpu(nullptr, 0) == 0.0, "grad_sum_squares cpu: no tensors sum to 0");
        expect(visplay::grad_clip_scale(4.0, 1.0) == static_cast<float>(1.0 / (2.0 + 1e-6)) && visplay::grad_clip_scale(0.25, 1.0) == 1.0f,
               "grad_clip_scale: min(1, max_norm / (norm + 1e-6))");
    }
    {
        float p = 1, g = 1, m = 0, v = 0;
        AdamWTensor t{&p, &g, &m, &v, 1};
        AdamWConfig bad;
        bad.step = 0;
        expect(throws_invalid([&] { visplay::lora_adamw_cpu(&t, 1, bad); }), "adamw cpu: step 0 throws invalid_argument");
        bad = AdamWConfig{};
        bad.beta2 = 1.0;
        expect(throws_invalid([&] { visplay::lora_adamw_cpu(&t, 1, bad); }), "adamw cpu: beta2 = 1 throws invalid_argument");
        AdamWTensor null_t{nullptr, &g, &m, &v, 1};
        expect(throws_invalid([&] { visplay::lora_adamw_cpu(&null_t, 1, AdamWConfig{}); }), "adamw cpu: a null pointer with n > 0 throws invalid_argument");
        AdamWTensor empty{nullptr, nullptr, nullptr, nullptr, 0};
        visplay::lora_adamw_cpu(&empty, 1, AdamWConfig{});
        expect(true, "adamw cpu: an empty tensor is a no-op");
    }
}

// ---- (c) the head's log-softmax -------------------------------------------------------------------

struct HeadCase {
    std::string name;
    int64_t rows, n_vocab;
    std::vector<float> logits;   // (rows, n_vocab)
    std::vector<int32_t> targets;
    std::vector<float> w;
};

// Rows like a language model's: most logits in a narrow band, a few tall ones; plus a row with a
// huge offset (lse ~ 1e4: the max subtraction matters), a row of equal logits, a very peaked row.
HeadCase make_head(const std::string & name, int64_t rows, int64_t n_vocab, uint64_t seed) {
    HeadCase c{name, rows, n_vocab, {}, {}, {}};
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    c.logits.resize(static_cast<size_t>(rows * n_vocab));
    for (int64_t r = 0; r < rows; ++r) {
        float * l = c.logits.data() + r * n_vocab;
        const int kind = static_cast<int>(r % 4);
        for (int64_t v = 0; v < n_vocab; ++v) {
            l[v] = kind == 2 ? 0.5f : normal(rng) + (kind == 1 ? 1.0e4f : 0.0f);
        }
        if (kind == 3) l[rng() % n_vocab] = 40.0f;  // p ~ 1 on one token
        c.targets.push_back(static_cast<int32_t>(rng() % n_vocab));
        c.w.push_back(static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 1000.0f);
    }
    return c;
}

long double lse_long(const float * l, int64_t n) {
    long double m = l[0];
    for (int64_t v = 1; v < n; ++v) m = std::max(m, static_cast<long double>(l[v]));
    long double s = 0;
    for (int64_t v = 0; v < n; ++v) s += std::exp(static_cast<long double>(l[v]) - m);
    return m + std::log(s);
}

void test_head_cpu() {
    const HeadCase c = make_head("head cpu", 8, 1000, 41);
    std::vector<float> lse(c.rows), tl(c.rows);
    visplay::head_logsumexp_cpu(c.logits.data(), c.rows, c.n_vocab, c.targets.data(), lse.data(), tl.data());
    double worst = 0;
    bool targets_ok = true;
    for (int64_t r = 0; r < c.rows; ++r) {
        const long double ref = lse_long(c.logits.data() + r * c.n_vocab, c.n_vocab);
        worst = std::max(worst, static_cast<double>(std::fabs(lse[r] - ref) / (1 + std::fabs(ref))));
        targets_ok = targets_ok && tl[r] == c.logits[r * c.n_vocab + c.targets[r]];
    }
    // lse is returned as float: its rounding (6e-8 relative) is the whole error.
    expect(worst <= 1e-7, "head lse cpu vs long double: worst " + std::to_string(worst) + " (1 + |lse|) (tol 1e-7)");
    expect(targets_ok, "head target logit cpu: logits[r][targets[r]]");

    // d logp / d logits by central differences of logp(l) = l[t] - lse(l) in long double, against
    // head_softmax_grad with w = 1 (so dlogits = d logp / d logits). Small rows, every element.
    const HeadCase f = make_head("head fd", 4, 64, 43);
    std::vector<float> flse(f.rows), ftl(f.rows), ones(f.rows, 1.0f), d(f.logits.size());
    visplay::head_logsumexp_cpu(f.logits.data(), f.rows, f.n_vocab, f.targets.data(), flse.data(), ftl.data());
    visplay::head_softmax_grad_cpu(f.logits.data(), f.rows, f.n_vocab, f.targets.data(), flse.data(), ones.data(), d.data());
    std::vector<long double> fd(f.logits.size());
    double fd_worst = 0, row_sum_worst = 0;
    for (int64_t r = 0; r < f.rows; ++r) {
        if (r % 4 == 1) continue;  // the 1e4-offset row: a float perturbation of 1e-4 is below its ulp
        std::vector<float> l(f.logits.begin() + r * f.n_vocab, f.logits.begin() + (r + 1) * f.n_vocab);
        long double row_sum = 0;
        for (int64_t v = 0; v < f.n_vocab; ++v) {
            const float h = 1e-2f;  // exact in float around |l| <= 40 to ~1e-6 relative; the difference is taken in long double
            const float x = l[v];
            l[v] = x + h;
            const long double up = static_cast<long double>(l[f.targets[r]]) - lse_long(l.data(), f.n_vocab);
            const long double hp = static_cast<long double>(l[v]) - x;
            l[v] = x - h;
            const long double down = static_cast<long double>(l[f.targets[r]]) - lse_long(l.data(), f.n_vocab);
            const long double hm = x - static_cast<long double>(l[v]);
            l[v] = x;
            const long double g = (up - down) / (hp + hm);
            fd_worst = std::max(fd_worst, static_cast<double>(std::fabs(g - d[r * f.n_vocab + v])));
            row_sum += d[r * f.n_vocab + v];
        }
        row_sum_worst = std::max(row_sum_worst, static_cast<double>(std::fabs(row_sum)));
    }
    // Central differences with h = 1e-2 carry an O(h^2 p) truncation error: <= 1e-4 * max p'' ~ 1e-5.
    expect(fd_worst <= 2e-5, "head d logits cpu vs central differences of logp: worst " + std::to_string(fd_worst) + " (tol 2e-5)");
    expect(row_sum_worst <= 1e-6, "head d logits cpu: each row sums to 0 (worst " + std::to_string(row_sum_worst) + ")");
    int32_t bad_target = 1000;
    expect(throws_invalid([&] { visplay::head_logsumexp_cpu(c.logits.data(), 1, c.n_vocab, &bad_target, lse.data(), tl.data()); }),
           "head lse cpu: a target outside [0, n_vocab) throws invalid_argument");
}

// ---- CUDA ---------------------------------------------------------------------------------------

#ifdef VISPLAY_CUDA

void ck(cudaError_t err, const char * what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// A device allocation that frees itself.
struct DeviceBuffer {
    void * ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { ck(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer & operator=(const DeviceBuffer &) = delete;
    template <typename T> T * as() const { return static_cast<T *>(ptr); }
};

template <typename T>
void upload(T * dst, const std::vector<T> & src) {
    if (!src.empty()) ck(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
template <typename T>
std::vector<T> download(const T * src, size_t n) {
    std::vector<T> out(n);
    if (n) ck(cudaMemcpy(out.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return out;
}

void test_advantages_cuda(const std::vector<GroupCase> & cases, cudaStream_t stream) {
    for (const GroupCase & c : cases) {
        std::vector<float> cpu(c.rewards.size());
        visplay::group_advantages_cpu(c.rewards.data(), c.offsets.data(), c.n_groups(), c.eps, cpu.data());
        DeviceBuffer r(c.rewards.size() * sizeof(float)), off(c.offsets.size() * sizeof(int32_t)), out(c.rewards.size() * sizeof(float));
        upload(r.as<float>(), c.rewards);
        upload(off.as<int32_t>(), c.offsets);
        ck(cudaMemset(out.ptr, 0xff, c.rewards.size() * sizeof(float)), "cudaMemset");  // NaN poison
        visplay::group_advantages_cuda(r.as<float>(), off.as<int32_t>(), c.n_groups(), c.eps, out.as<float>(), stream);
        ck(cudaStreamSynchronize(stream), "advantages sync");
        const std::vector<float> gpu = download(out.as<float>(), c.rewards.size());
        if (close_enough("advantages cuda vs cpu, " + c.name, gpu.data(), cpu.data(), gpu.size(), 1e-6, 1e-6) && !gpu.empty()) {
            // The same launch again gives the same bits (no atomics, fixed reduction order).
            visplay::group_advantages_cuda(r.as<float>(), off.as<int32_t>(), c.n_groups(), c.eps, out.as<float>(), stream);
            ck(cudaStreamSynchronize(stream), "advantages sync");
            expect(download(out.as<float>(), gpu.size()) == gpu, "advantages cuda: bitwise repeatable, " + c.name);
        }
    }
    expect(throws_invalid([&] { visplay::group_advantages_cuda(nullptr, nullptr, -1, 1e-6f, nullptr, stream); }),
           "advantages cuda: negative n_groups throws invalid_argument");
}

void test_adamw_cuda(cudaStream_t stream) {
    // Sizes around the chunk (4096) and float4 edges, an empty tensor, misaligned tensors, and more
    // tensors than one launch takes (512).
    std::vector<int64_t> sizes = {1, 3, 4, 4095, 4096, 4097, 0, 100003, 1 << 20};
    std::vector<int64_t> misalign = {0, 1, 0, 2, 0, 3, 0, 1, 0};
    std::mt19937_64 rng(21);
    for (int i = 0; i < 700; ++i) {
        sizes.push_back(1 + static_cast<int64_t>(rng() % 3000));
        misalign.push_back(i % 5 == 0 ? 1 : 0);
    }
    AdamWCase c{"cuda", sizes, AdamWConfig{}};
    c.steps = 10;
    c.scales = {1.0f, 0.3f};
    c.cfg.weight_decay = 0.05;
    std::vector<RunTensor> run = make_run(c, 31);

    // The tensors are carved from one device allocation per array: each starts at a multiple of 4
    // floats plus its misalignment (odd offsets break 16-byte alignment: the scalar path).
    std::vector<int64_t> at;
    int64_t total = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
        total = (total + 3) / 4 * 4 + misalign[t];
        at.push_back(total);
        total += sizes[t];
    }
    DeviceBuffer dp(total * sizeof(float)), dm(total * sizeof(float)), dv(total * sizeof(float));
    std::vector<std::unique_ptr<DeviceBuffer>> dg;
    for (int k = 0; k < c.steps; ++k) dg.push_back(std::make_unique<DeviceBuffer>(total * sizeof(float)));
    auto put = [&](float * base, const std::vector<float> & x, int64_t off) {
        if (!x.empty()) ck(cudaMemcpy(base + off, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    };
    for (size_t t = 0; t < sizes.size(); ++t) {
        put(dp.as<float>(), run[t].p, at[t]);
        put(dm.as<float>(), run[t].m, at[t]);
        put(dv.as<float>(), run[t].v, at[t]);
        for (int k = 0; k < c.steps; ++k) put(dg[k]->as<float>(), run[t].grads[k], at[t]);
    }
    std::vector<double> sums_gpu, sums_cpu;
    for (int k = 0; k < c.steps; ++k) {
        const AdamWConfig cfg = step_config(c, k);
        std::vector<AdamWTensor> dts;
        for (size_t t = 0; t < sizes.size(); ++t) {
            dts.push_back({dp.as<float>() + at[t], dg[k]->as<float>() + at[t], dm.as<float>() + at[t], dv.as<float>() + at[t], sizes[t]});
        }
        std::vector<AdamWTensor> hts = views(run, k);
        sums_gpu.push_back(visplay::grad_sum_squares_cuda(dts.data(), static_cast<int>(dts.size()), stream));
        sums_cpu.push_back(visplay::grad_sum_squares_cpu(hts.data(), static_cast<int>(hts.size())));
        if (k == 0) {
            const double again = visplay::grad_sum_squares_cuda(dts.data(), static_cast<int>(dts.size()), stream);
            expect(again == sums_gpu[0], "grad_sum_squares cuda: bitwise repeatable");
        }
        visplay::lora_adamw_cuda(dts.data(), static_cast<int>(dts.size()), cfg, stream);
        visplay::lora_adamw_cpu(hts.data(), static_cast<int>(hts.size()), cfg);
    }
    ck(cudaStreamSynchronize(stream), "adamw sync");
    for (int k = 0; k < c.steps; ++k) {
        char line[200];
        std::snprintf(line, sizeof line, "grad_sum_squares cuda vs cpu, step %d: %.17g vs %.17g (rtol 1e-9)", k, sums_gpu[k], sums_cpu[k]);
        expect(std::fabs(sums_gpu[k] - sums_cpu[k]) <= 1e-9 * sums_cpu[k], line);
    }
    // Compare the concatenation of all tensors at once (one line per state array).
    std::vector<float> cat_p, cat_m, cat_v, gpu_p, gpu_m, gpu_v;
    const std::vector<float> all_p = download(dp.as<float>(), total), all_m = download(dm.as<float>(), total), all_v = download(dv.as<float>(), total);
    double scale_p = 0, scale_m = 0, scale_v = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
        cat_p.insert(cat_p.end(), run[t].p.begin(), run[t].p.end());
        cat_m.insert(cat_m.end(), run[t].m.begin(), run[t].m.end());
        cat_v.insert(cat_v.end(), run[t].v.begin(), run[t].v.end());
        gpu_p.insert(gpu_p.end(), all_p.begin() + at[t], all_p.begin() + at[t] + sizes[t]);
        gpu_m.insert(gpu_m.end(), all_m.begin() + at[t], all_m.begin() + at[t] + sizes[t]);
        gpu_v.insert(gpu_v.end(), all_v.begin() + at[t], all_v.begin() + at[t] + sizes[t]);
    }
    for (float x : cat_p) scale_p = std::max(scale_p, static_cast<double>(std::fabs(x)));
    for (float x : cat_m) scale_m = std::max(scale_m, static_cast<double>(std::fabs(x)));
    for (float x : cat_v) scale_v = std::max(scale_v, static_cast<double>(std::fabs(x)));
    const std::string what = "adamw cuda vs cpu, " + std::to_string(sizes.size()) + " tensors (misaligned, empty, > 512 per launch), 10 steps, ";
    close_enough(what + "param", gpu_p.data(), cat_p.data(), cat_p.size(), 1e-6 * scale_p, 1e-5);
    close_enough(what + "m", gpu_m.data(), cat_m.data(), cat_m.size(), 1e-6 * scale_m, 1e-5);
    close_enough(what + "v", gpu_v.data(), cat_v.data(), cat_v.size(), 1e-6 * scale_v, 1e-5);
    // Both sides evaluate the same IEEE float ops in the same order without contraction (-ffp-contract=off,
    // --fmad=false; sqrt and division correctly rounded): not one bit may differ.
    size_t differ = 0;
    for (size_t i = 0; i < cat_p.size(); ++i) differ += (gpu_p[i] != cat_p[i]) + (gpu_m[i] != cat_m[i]) + (gpu_v[i] != cat_v[i]);
    expect(differ == 0, "adamw cuda vs cpu: bitwise equal (" + std::to_string(differ) + " of " + std::to_string(3 * cat_p.size()) + " values differ)");
    expect(visplay::grad_sum_squares_cuda(nullptr, 0, stream) == 0.0, "grad_sum_squares cuda: no tensors sum to 0");
}

void test_head_cuda(cudaStream_t stream) {
    // Qwen's vocabulary (151,936 = 4 * 37,984: the float4 path), an odd vocabulary (the scalar
    // path), and the same rows at a pointer 4 bytes off 16-byte alignment; in place and not.
    struct Shape { int64_t rows, n_vocab; int misalign; bool in_place; };
    for (const Shape sh : {Shape{8, 151936, 0, false}, Shape{8, 151936, 0, true}, Shape{6, 1001, 0, false}, Shape{5, 151936, 1, true}}) {
        const std::string name = std::to_string(sh.rows) + " x " + std::to_string(sh.n_vocab) + (sh.misalign ? ", misaligned" : "") +
                                 (sh.in_place ? ", in place" : "");
        const HeadCase c = make_head(name, sh.rows, sh.n_vocab, 50 + sh.n_vocab + sh.misalign);
        std::vector<float> lse(c.rows), tl(c.rows), d(c.logits.size());
        visplay::head_logsumexp_cpu(c.logits.data(), c.rows, c.n_vocab, c.targets.data(), lse.data(), tl.data());
        visplay::head_softmax_grad_cpu(c.logits.data(), c.rows, c.n_vocab, c.targets.data(), lse.data(), c.w.data(), d.data());
        const size_t n = c.logits.size();
        DeviceBuffer dl((n + 4) * sizeof(float)), dd((n + 4) * sizeof(float)), dt(c.rows * 4), dlse(c.rows * 4), dtl(c.rows * 4), dw(c.rows * 4);
        float * l = dl.as<float>() + sh.misalign;
        ck(cudaMemcpy(l, c.logits.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
        upload(dt.as<int32_t>(), c.targets);
        upload(dw.as<float>(), c.w);
        visplay::head_logsumexp_cuda(l, c.rows, c.n_vocab, dt.as<int32_t>(), dlse.as<float>(), dtl.as<float>(), stream);
        ck(cudaStreamSynchronize(stream), "head lse sync");
        const std::vector<float> glse = download(dlse.as<float>(), c.rows), gtl = download(dtl.as<float>(), c.rows);
        double worst = 0;
        for (int64_t r = 0; r < c.rows; ++r) worst = std::max(worst, std::fabs(static_cast<double>(glse[r]) - lse[r]) / (1 + std::fabs(lse[r])));
        expect(worst <= 1e-5, "head lse cuda vs cpu, " + name + ": worst " + std::to_string(worst) + " (1 + |lse|) (tol 1e-5)");
        expect(gtl == tl, "head target logit cuda: equal to the cpu's, " + name);
        // The gradient from the CPU's lse, so this compares the elementwise pass alone.
        upload(dlse.as<float>(), lse);
        float * out = sh.in_place ? l : dd.as<float>() + sh.misalign;
        visplay::head_softmax_grad_cuda(l, c.rows, c.n_vocab, dt.as<int32_t>(), dlse.as<float>(), dw.as<float>(), out, stream);
        ck(cudaStreamSynchronize(stream), "head grad sync");
        const std::vector<float> gd = download(out, n);
        double wmax = 0;
        for (float x : c.w) wmax = std::max(wmax, static_cast<double>(std::fabs(x)));
        close_enough("head d logits cuda vs cpu, " + name, gd.data(), d.data(), n, 1e-6 * wmax, 1e-5);
    }
    expect(throws_invalid([&] { visplay::head_logsumexp_cuda(nullptr, 1, 10, nullptr, nullptr, nullptr, stream); }),
           "head lse cuda: a null pointer throws invalid_argument");
}

// "" when a device is usable, otherwise why not.
std::string cuda_unavailable() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    if (count == 0) return "cudaGetDeviceCount reports 0 devices";
    return "";
}

#endif  // VISPLAY_CUDA

// ---- torch cross-check dump ---------------------------------------------------------------------
//
// Format (little endian): int64 n, int64 steps, int64 has_cuda; double lr, beta1, beta2, eps,
// weight_decay; float p0[n]; per step: float grad_scale, float grad[n]; float p[n], m[n], v[n]
// from the CPU; when has_cuda, float p[n], m[n], v[n] from CUDA. Steps are 1..steps, m and v start at 0.
void dump_adamw(const std::string & path, bool with_cuda) {
    const int64_t n = 4099, steps = 5;
    AdamWCase c{"dump", {n}, AdamWConfig{}};
    c.steps = static_cast<int>(steps);
    c.cfg.lr = 1e-2;
    c.cfg.weight_decay = 0.1;
    c.scales = {1.0f, 0.25f, 1.0f, 0.6f, 1.0f};
    std::vector<RunTensor> run = make_run(c, 77);
    std::FILE * f = std::fopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot write " + path);
    const int64_t head[3] = {n, steps, with_cuda ? 1 : 0};
    const double hyper[5] = {c.cfg.lr, c.cfg.beta1, c.cfg.beta2, c.cfg.eps, c.cfg.weight_decay};
    std::fwrite(head, sizeof head, 1, f);
    std::fwrite(hyper, sizeof hyper, 1, f);
    std::fwrite(run[0].p.data(), sizeof(float), n, f);
    const std::vector<float> p0 = run[0].p;
    for (int k = 0; k < c.steps; ++k) {
        const float s = step_config(c, k).grad_scale;
        std::fwrite(&s, sizeof s, 1, f);
        std::fwrite(run[0].grads[k].data(), sizeof(float), n, f);
    }
    for (int k = 0; k < c.steps; ++k) {
        auto ts = views(run, k);
        visplay::lora_adamw_cpu(ts.data(), 1, step_config(c, k));
    }
    std::fwrite(run[0].p.data(), sizeof(float), n, f);
    std::fwrite(run[0].m.data(), sizeof(float), n, f);
    std::fwrite(run[0].v.data(), sizeof(float), n, f);
#ifdef VISPLAY_CUDA
    if (with_cuda) {
        DeviceBuffer dp(n * 4), dg(n * 4), dm(n * 4), dv(n * 4);
        upload(dp.as<float>(), p0);
        ck(cudaMemset(dm.ptr, 0, n * 4), "cudaMemset");
        ck(cudaMemset(dv.ptr, 0, n * 4), "cudaMemset");
        for (int k = 0; k < c.steps; ++k) {
            upload(dg.as<float>(), run[0].grads[k]);
            AdamWTensor t{dp.as<float>(), dg.as<float>(), dm.as<float>(), dv.as<float>(), n};
            visplay::lora_adamw_cuda(&t, 1, step_config(c, k), nullptr);
        }
        for (DeviceBuffer * b : {&dp, &dm, &dv}) {
            const std::vector<float> x = download(b->as<float>(), n);
            std::fwrite(x.data(), sizeof(float), n, f);
        }
    }
#endif
    std::fclose(f);
    std::printf("wrote %s (AdamW run for a torch cross-check: n %lld, %lld steps, cuda %s)\n", path.c_str(),
                static_cast<long long>(n), static_cast<long long>(steps), with_cuda ? "yes" : "no");
}

}  // namespace

int main(int argc, char ** argv) {
    bool require_cuda = false;
    std::string dump_path;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--require-cuda") require_cuda = true;
        else if (a == "--verbose" || a == "-v") g_verbose = true;
        else if (a == "--dump-adamw" && i + 1 < argc) dump_path = argv[++i];
        else {
            std::fprintf(stderr, "usage: %s [--require-cuda] [--dump-adamw FILE] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    bool cuda_ran = false;
    try {
        const std::vector<GroupCase> cases = group_cases();
        test_advantages_cpu(cases);
        test_adamw_cpu();
        test_head_cpu();
        std::printf("cpu: %d checks, %d failed\n", g_checks, g_failures);
#ifdef VISPLAY_CUDA
        const std::string why = cuda_unavailable();
        if (!why.empty()) {
            std::printf("SKIP cuda: no CUDA device (%s)\n", why.c_str());
        } else {
            cudaDeviceProp prop{};
            ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
            std::printf("cuda: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
            const int before = g_checks, failed_before = g_failures;
            cudaStream_t stream = nullptr;
            ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
            test_advantages_cuda(cases, stream);
            test_adamw_cuda(stream);
            test_head_cuda(stream);
            ck(cudaStreamDestroy(stream), "cudaStreamDestroy");
            std::printf("cuda: %d checks, %d failed\n", g_checks - before, g_failures - failed_before);
            cuda_ran = true;
        }
#else
        std::printf("SKIP cuda: built without CUDA (configure with -DVISPLAY_CUDA=ON)\n");
#endif
        if (!dump_path.empty()) dump_adamw(dump_path, cuda_ran);
    } catch (const std::exception & e) {
        std::printf("FAIL unexpected exception: %s\n", e.what());
        ++g_failures;
    }
    if (require_cuda && !cuda_ran) {
        std::printf("FAIL --require-cuda: the CUDA checks did not run\n");
        ++g_failures;
    }
    std::printf("%s: %d checks, %d failed\n", g_failures ? "FAILED" : "PASSED", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
