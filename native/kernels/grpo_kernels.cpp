// CPU references of the GRPO kernels (API and maths in grpo_kernels.h). They are the ground truth
// the CUDA kernels are tested against, and the path a CPU-only training step runs, so they are
// written to vectorize (restrict pointers, no branches in the inner loops, `omp simd` reductions
// compiled with -fopenmp-simd and no OpenMP runtime) and to split large updates across threads.
//
// defines: group_advantages_cpu, lora_adamw_cpu, grad_sum_squares_cpu, grad_clip_scale,
//          head_logsumexp_cpu, head_softmax_grad_cpu,
//          detail::adamw_scalars, detail::check_tensors
#include "grpo_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace visplay {
namespace {

// ---- work splitting -------------------------------------------------------------------------

// A contiguous piece of one tensor. Big updates are cut into pieces of at most kSpanElements, so
// threads can share them out and the sum of squares has a fixed summation order.
struct Span {
    int tensor;
    int64_t begin, end;
};

constexpr int64_t kSpanElements = int64_t(1) << 16;     // 64K floats: 256 KB per array
constexpr int64_t kSerialBelow = int64_t(1) << 18;      // totals under this run on the caller's thread
constexpr int64_t kMinPerThread = int64_t(1) << 17;     // no thread gets less than this

std::vector<Span> make_spans(const AdamWTensor * tensors, int n_tensors) {
    std::vector<Span> spans;
    for (int t = 0; t < n_tensors; ++t) {
        for (int64_t b = 0; b < tensors[t].n; b += kSpanElements) {
            spans.push_back({t, b, std::min(tensors[t].n, b + kSpanElements)});
        }
    }
    return spans;
}

int64_t total_elements(const AdamWTensor * tensors, int n_tensors) {
    int64_t total = 0;
    for (int t = 0; t < n_tensors; ++t) total += tensors[t].n;
    return total;
}

int thread_count(int64_t total, int requested) {
    if (total < kSerialBelow) return 1;
    int hw = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    int64_t by_size = std::max<int64_t>(1, total / kMinPerThread);
    return static_cast<int>(std::min<int64_t>(hw, by_size));
}

// Runs fn(span_index) for every span, on `threads` threads that take spans in turn. The calling
// thread is one of them. An exception in a worker is rethrown on the caller.
template <typename Fn>
void for_each_span(size_t n_spans, int threads, Fn fn) {
    if (threads <= 1 || n_spans <= 1) {
        for (size_t i = 0; i < n_spans; ++i) fn(i);
        return;
    }
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t i = next.fetch_add(1); i < n_spans; i = next.fetch_add(1)) fn(i);
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) pool.emplace_back(work);
    work();
    for (auto & th : pool) th.join();
}

// ---- reductions ------------------------------------------------------------------------------

// sum over i of term(x[i]) in double, with 8 interleaved partial sums combined pairwise: the
// compiler vectorizes the fixed-width inner loop whatever its vector length (and without relying
// on `omp simd` reductions, which one compiler left scalar), and the summation order, hence the
// result, is fixed by n alone.
template <typename Term>
inline double sum8(const float * __restrict x, int64_t n, Term term) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; ++k) acc[k] += term(x[i + k]);
    }
    double tail = 0.0;
    for (; i < n; ++i) tail += term(x[i]);
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// ---- (a) advantages ---------------------------------------------------------------------------

// One group: r, out (n,). Two passes in double: mean, then the sum of squared deviations (stable
// for any magnitude, unlike E[r^2] - E[r]^2). For equal rewards every partial sum is an exact
// multiple of r (exact in double for n < 2^29), so the mean is exactly r and ss exactly 0: zeros,
// whatever eps is.
void advantages_one_group(const float * __restrict r, int64_t n, float eps, float * __restrict out) {
    if (n <= 0) return;
    if (n == 1) {
        out[0] = 0.0f;
        return;
    }
    const double mean = sum8(r, n, [](float x) { return static_cast<double>(x); }) / static_cast<double>(n);
    const double ss = sum8(r, n, [mean](float x) {
        const double d = static_cast<double>(x) - mean;
        return d * d;
    });
    if (ss == 0.0) {
        std::fill(out, out + n, 0.0f);
        return;
    }
    // One division per group; the CUDA kernel forms the same reciprocal.
    const double inv_denom = 1.0 / (std::sqrt(ss / static_cast<double>(n - 1)) + static_cast<double>(eps));
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>((static_cast<double>(r[i]) - mean) * inv_denom);
}

// ---- (b) AdamW ----------------------------------------------------------------------------------

// The update of grpo_kernels.h on one contiguous piece, in torch's order. `small_w1` picks torch's
// lerp formula (aten/src/ATen/native/Lerp.h): self + w (end - self) for |w| < 0.5, else
// end - (end - self)(1 - w); it is loop-invariant, so the compiler unswitches it.
void adamw_piece(float * __restrict p, const float * __restrict grad, float * __restrict m, float * __restrict v,
                 int64_t n, const detail::AdamWScalars & s) {
    const bool small_w1 = s.w1 < 0.5f;
    const float one_minus_w1 = 1.0f - s.w1;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const float g = grad[i] * s.grad_scale;
        const float pi = p[i] * s.decay;
        const float mi = small_w1 ? m[i] + s.w1 * (g - m[i]) : g - (g - m[i]) * one_minus_w1;
        const float vi = v[i] * s.beta2 + s.c2 * g * g;
        const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
        p[i] = pi + s.neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

double sum_squares_piece(const float * __restrict g, int64_t n) {
    return sum8(g, n, [](float x) { return static_cast<double>(x) * static_cast<double>(x); });
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------------

void group_advantages_cpu(const float * rewards, const int32_t * offsets, int n_groups, float eps, float * out) {
    if (n_groups < 0) throw std::invalid_argument("group_advantages: n_groups is negative (" + std::to_string(n_groups) + ")");
    if (n_groups == 0) return;
    if (offsets == nullptr) throw std::invalid_argument("group_advantages: offsets is null");
    for (int g = 0; g < n_groups; ++g) {
        if (offsets[g + 1] < offsets[g]) {
            throw std::invalid_argument("group_advantages: offsets decrease at group " + std::to_string(g) + " (" +
                                        std::to_string(offsets[g]) + " > " + std::to_string(offsets[g + 1]) + ")");
        }
    }
    if (offsets[0] < 0) throw std::invalid_argument("group_advantages: offsets[0] is negative");
    if (offsets[n_groups] > offsets[0] && (rewards == nullptr || out == nullptr)) {
        throw std::invalid_argument("group_advantages: rewards or out is null");
    }
    for (int g = 0; g < n_groups; ++g) {
        advantages_one_group(rewards + offsets[g], offsets[g + 1] - offsets[g], eps, out + offsets[g]);
    }
}

void lora_adamw_cpu(const AdamWTensor * tensors, int n_tensors, const AdamWConfig & cfg, int n_threads) {
    const detail::AdamWScalars s = detail::adamw_scalars(cfg);
    detail::check_tensors(tensors, n_tensors, "lora_adamw_cpu");
    const int threads = thread_count(total_elements(tensors, n_tensors), n_threads);
    if (threads == 1) {
        for (int t = 0; t < n_tensors; ++t) {
            adamw_piece(tensors[t].param, tensors[t].grad, tensors[t].m, tensors[t].v, tensors[t].n, s);
        }
        return;
    }
    const std::vector<Span> spans = make_spans(tensors, n_tensors);
    for_each_span(spans.size(), threads, [&](size_t i) {
        const Span & sp = spans[i];
        const AdamWTensor & t = tensors[sp.tensor];
        adamw_piece(t.param + sp.begin, t.grad + sp.begin, t.m + sp.begin, t.v + sp.begin, sp.end - sp.begin, s);
    });
}

double grad_sum_squares_cpu(const AdamWTensor * tensors, int n_tensors, int n_threads) {
    detail::check_tensors(tensors, n_tensors, "grad_sum_squares_cpu");
    const std::vector<Span> spans = make_spans(tensors, n_tensors);
    std::vector<double> partial(spans.size(), 0.0);
    const int threads = thread_count(total_elements(tensors, n_tensors), n_threads);
    for_each_span(spans.size(), threads, [&](size_t i) {
        const Span & sp = spans[i];
        partial[i] = sum_squares_piece(tensors[sp.tensor].grad + sp.begin, sp.end - sp.begin);
    });
    double total = 0.0;
    for (double x : partial) total += x;   // fixed order: the same result for every thread count
    return total;
}

float grad_clip_scale(double sum_squares, double max_norm) {
    if (!(max_norm > 0.0)) throw std::invalid_argument("grad_clip_scale: max_norm must be positive");
    const double coef = max_norm / (std::sqrt(sum_squares) + 1e-6);
    return static_cast<float>(std::min(1.0, coef));
}

namespace {
void check_head(const float * logits, int64_t rows, int64_t n_vocab, const int32_t * targets, const char * who) {
    if (rows < 0 || n_vocab < 1) throw std::invalid_argument(std::string(who) + ": rows must be >= 0 and n_vocab >= 1");
    if (rows > 0 && (logits == nullptr || targets == nullptr)) throw std::invalid_argument(std::string(who) + ": a pointer is null");
    for (int64_t r = 0; r < rows; ++r) {
        if (targets[r] < 0 || targets[r] >= n_vocab) {
            throw std::invalid_argument(std::string(who) + ": target " + std::to_string(targets[r]) + " of row " + std::to_string(r) +
                                        " is outside [0, n_vocab)");
        }
    }
}
}  // namespace

// The reference: two passes in double (max, then the sum of exp(x - max)).
void head_logsumexp_cpu(const float * logits, int64_t rows, int64_t n_vocab, const int32_t * targets, float * lse, float * target_logit) {
    check_head(logits, rows, n_vocab, targets, "head_logsumexp_cpu");
    for (int64_t r = 0; r < rows; ++r) {
        const float * l = logits + r * n_vocab;
        double m = l[0];
        for (int64_t v = 1; v < n_vocab; ++v) m = std::max(m, static_cast<double>(l[v]));
        double s = 0.0;
        for (int64_t v = 0; v < n_vocab; ++v) s += std::exp(static_cast<double>(l[v]) - m);
        lse[r] = static_cast<float>(m + std::log(s));
        target_logit[r] = l[targets[r]];
    }
}

void head_softmax_grad_cpu(const float * logits, int64_t rows, int64_t n_vocab, const int32_t * targets, const float * lse,
                           const float * w, float * dlogits) {
    check_head(logits, rows, n_vocab, targets, "head_softmax_grad_cpu");
    for (int64_t r = 0; r < rows; ++r) {
        const float * l = logits + r * n_vocab;
        float * d = dlogits + r * n_vocab;
        const double wr = w[r], lr = lse[r];
        for (int64_t v = 0; v < n_vocab; ++v) d[v] = static_cast<float>(-wr * std::exp(static_cast<double>(l[v]) - lr));
        d[targets[r]] += static_cast<float>(wr);
    }
}

namespace detail {

AdamWScalars adamw_scalars(const AdamWConfig & cfg) {
    auto bad = [](const std::string & what) { throw std::invalid_argument("AdamWConfig: " + what); };
    if (!(cfg.lr >= 0.0) || !std::isfinite(cfg.lr)) bad("lr must be a finite number >= 0");
    if (!(cfg.beta1 >= 0.0 && cfg.beta1 < 1.0)) bad("beta1 must be in [0, 1)");
    if (!(cfg.beta2 >= 0.0 && cfg.beta2 < 1.0)) bad("beta2 must be in [0, 1)");
    if (!(cfg.eps >= 0.0) || !std::isfinite(cfg.eps)) bad("eps must be a finite number >= 0");
    if (!(cfg.weight_decay >= 0.0) || !std::isfinite(cfg.weight_decay)) bad("weight_decay must be a finite number >= 0");
    if (cfg.step < 1) bad("step must be >= 1 (1-based, incremented before the update), got " + std::to_string(cfg.step));
    if (!(cfg.grad_scale >= 0.0f) || !std::isfinite(cfg.grad_scale)) bad("grad_scale must be a finite number >= 0");
    // As torch/optim/adamw.py forms them: Python floats (double), rounded to float by the ops.
    const double step = static_cast<double>(cfg.step);
    const double bc1 = 1.0 - std::pow(cfg.beta1, step);
    const double bc2 = 1.0 - std::pow(cfg.beta2, step);
    AdamWScalars s;
    s.grad_scale = cfg.grad_scale;
    s.decay = static_cast<float>(1.0 - cfg.lr * cfg.weight_decay);
    s.w1 = static_cast<float>(1.0 - cfg.beta1);
    s.beta2 = static_cast<float>(cfg.beta2);
    s.c2 = static_cast<float>(1.0 - cfg.beta2);
    s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    s.neg_step_size = static_cast<float>(-(cfg.lr / bc1));
    s.eps = static_cast<float>(cfg.eps);
    return s;
}

void check_tensors(const AdamWTensor * tensors, int n_tensors, const char * who) {
    if (n_tensors < 0) throw std::invalid_argument(std::string(who) + ": n_tensors is negative");
    if (n_tensors > 0 && tensors == nullptr) throw std::invalid_argument(std::string(who) + ": tensors is null");
    for (int t = 0; t < n_tensors; ++t) {
        const AdamWTensor & x = tensors[t];
        if (x.n < 0) throw std::invalid_argument(std::string(who) + ": tensor " + std::to_string(t) + " has n < 0");
        if (x.n > 0 && (!x.param || !x.grad || !x.m || !x.v)) {
            throw std::invalid_argument(std::string(who) + ": tensor " + std::to_string(t) + " has a null pointer");
        }
    }
}

}  // namespace detail
}  // namespace visplay
