// The two GRPO kernels, each with a CPU reference (grpo_kernels.cpp) and a CUDA version
// (native/cuda/grpo_kernels.cu), checked against each other by kernels_test.cpp and timed by
// kernels_bench.cpp.
//
// defines: group_advantages_cpu, group_advantages_cuda      (a) group-relative advantages
//          lora_adamw_cpu, lora_adamw_cuda                   (b) fused multi-tensor AdamW step
//          grad_sum_squares_cpu, grad_sum_squares_cuda       (b) global grad norm for clipping
//          grad_clip_scale                                    (b) torch's clip_grad_norm_ factor
//          head_logsumexp_cpu, head_logsumexp_cuda           (c) log-softmax of the vocabulary head
//          head_softmax_grad_cpu, head_softmax_grad_cuda     (c) d loss / d logits of the head
//
// Errors: a precondition the function can check (negative sizes, null pointers with n > 0,
// decreasing offsets on the CPU, hyperparameters out of range) throws std::invalid_argument; a
// CUDA failure throws std::runtime_error with cudaGetErrorString's words. Nothing calls exit().
// Thread safety: every function is reentrant; the CPU ones may spawn std::threads of their own.
#pragma once

#include <cstdint>

namespace visplay {

// ---- (a) group-relative advantages (GRPO) --------------------------------------------------
//
// GRPO scores each sampled response against the other samples of the same prompt:
//   A_i = (r_i - mean_g) / (std_g + eps),  std_g unbiased: sqrt(sum (r_j - mean_g)^2 / (n_g - 1))
// rewards: (n,) float, the samples of group g are rewards[offsets[g] .. offsets[g+1]) (CSR);
// offsets: (n_groups + 1,) int32, non-decreasing, offsets[0] normally 0; out: (n,) float, may not
// alias rewards. Groups may have any size: a group of size 0 writes nothing; a group of size 1 or
// whose rewards are all equal writes zeros (no signal to learn from, and never 0/0 even with
// eps = 0). n_groups == 0 is a no-op. Means and variances accumulate in double, so rewards of
// any finite float magnitude (|r| up to FLT_MAX) are exact to float output rounding. Rewards must
// be finite (the binding checks); NaN or Inf propagate to the group's outputs.
inline constexpr float kDefaultAdvantageEps = 1e-6f;

void group_advantages_cpu(const float * rewards, const int32_t * offsets, int n_groups, float eps, float * out);

// ---- (b) the LoRA optimizer step ------------------------------------------------------------
//
// torch.optim.AdamW semantics (decoupled weight decay), evaluated in the order of torch's
// single-tensor path (foreach=False: _single_tensor_adam in torch/optim/adam.py, which AdamW runs
// with decoupled_weight_decay) so results match torch to float rounding:
//   g  = grad * grad_scale                               // clip_grad_norm_ scales grads in place
//   p *= 1 - lr * weight_decay                           // decoupled decay, before the moments
//   m  = lerp(m, g, 1 - beta1)                           // = beta1 m + (1 - beta1) g
//   v  = v * beta2 + (1 - beta2) * g * g
//   p += -(lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// The last line is p -= lr m_hat / (sqrt(v_hat) + eps) written as torch writes it (sqrt(v) /
// sqrt(bc2), not sqrt(v / bc2)). The scalars (1 - beta1, lr / bc1, sqrt(bc2), 1 - lr wd) are
// formed in double from the double fields below and then rounded to float, as Python does for
// torch; that is why these fields are double rather than float. Both paths are compiled without
// FMA contraction, so the CPU and CUDA results are bitwise equal to each other and to that float32
// op sequence. torch's own CPU lerp is vectorized with an FMA, so against torch itself the results
// differ in the last bits (torch 2.11, 5 steps, lr 1e-2: |dp| <= 1.1e-8 on |p| ~ 0.02; 77% equal).
struct AdamWConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;   // 0 turns decay off
    int64_t step = 1;             // 1-based, already incremented for this update (bias correction)
    float grad_scale = 1.0f;      // global-norm clip factor (grad_clip_scale), multiplies every grad
};

// One LoRA tensor (e.g. A: (rank, n_in) or B: (n_out, rank); the shape does not matter, only n).
// All four arrays hold n contiguous floats; param, m and v are updated in place; grad is read.
// On the CUDA path these are device pointers; 16-byte aligned ones take the float4 path.
struct AdamWTensor {
    float * param;
    const float * grad;
    float * m;      // first moment, zero before step 1
    float * v;      // second moment, zero before step 1
    int64_t n;
};

// One AdamW step over all tensors. n_threads: 0 = one per hardware thread; small totals
// (< 256K elements) run on the calling thread. Elements are independent, so the result does not
// depend on the thread count.
void lora_adamw_cpu(const AdamWTensor * tensors, int n_tensors, const AdamWConfig & cfg, int n_threads = 0);

// Sum of squares of every grad element (before grad_scale), accumulated in double: the squared
// global L2 norm that clip_grad_norm_ computes. Summed in fixed 64K-element blocks in a fixed
// order, so the result is the same for every thread count.
double grad_sum_squares_cpu(const AdamWTensor * tensors, int n_tensors, int n_threads = 0);

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (sqrt(sum_squares) + 1e-6)).
float grad_clip_scale(double sum_squares, double max_norm);

// ---- (c) the vocabulary head's log-softmax (the GRPO loss's only contact with the logits) ------
//
// A token's loss depends on the network only through logp = logits[target] - logsumexp(logits)
// (grpo_loss.h), so the trainer needs 8 bytes per row from the head, not the row itself:
//   head_logsumexp:    lse[r] = log sum_v exp(logits[r][v]),  target_logit[r] = logits[r][targets[r]]
//   head_softmax_grad: dlogits[r][v] = w[r] * ([v == targets[r]] - exp(logits[r][v] - lse[r]))
// where w[r] = d loss / d logp[r] (times the row's aggregation weight), formed on the host from
// the two floats. logits and dlogits: (rows, n_vocab) row-major floats (a ggml [n_vocab, rows]
// tensor); dlogits may alias logits (each element is read once, then overwritten). targets:
// (rows,) int32 in [0, n_vocab) (the caller checks: they are token ids it already validated).
// Rows must be finite; a row whose maximum is +-inf or NaN gives a NaN lse. The CPU versions
// accumulate in double and are the reference; the CUDA ones run an online (max, sum) reduction in
// float per thread, combined in double per block: |lse_cuda - lse_cpu| <~ 1e-6 (1 + |lse|).
void head_logsumexp_cpu(const float * logits, int64_t rows, int64_t n_vocab, const int32_t * targets, float * lse, float * target_logit);
void head_softmax_grad_cpu(const float * logits, int64_t rows, int64_t n_vocab, const int32_t * targets, const float * lse,
                           const float * w, float * dlogits);

#ifdef VISPLAY_CUDA
// Device-pointer versions, asynchronous on `stream` (a cudaStream_t passed as void *; nullptr is
// the legacy default stream). The host arrays (h_tensors) may be freed as soon as a call returns.
// group_advantages_cuda: one launch; a warp per group of up to 256 samples (held in registers),
//   a 128-thread block per larger group (any size; one block streams it, so a single group of
//   millions takes milliseconds: GRPO's groups are tens to thousands). Offsets are read on the
//   device, not checked.
void group_advantages_cuda(const float * d_rewards, const int32_t * d_offsets, int n_groups, float eps, float * d_out, void * stream);
// lora_adamw_cuda: one launch per 512 tensors (the descriptors travel as kernel parameters,
//   no allocation, no copy, capturable in a CUDA graph).
void lora_adamw_cuda(const AdamWTensor * h_tensors, int n_tensors, const AdamWConfig & cfg, void * stream);
// grad_sum_squares_cuda: deterministic two-pass reduction in double; synchronizes `stream` to
//   return the value. Uses a small per-device scratch buffer kept for the life of the process;
//   concurrent calls in one process take turns (a mutex held until the value is back).
double grad_sum_squares_cuda(const AdamWTensor * h_tensors, int n_tensors, void * stream);
// head_logsumexp_cuda: a block per row (one read of the logits); head_softmax_grad_cuda: one
//   elementwise pass (float4 where n_vocab % 4 == 0 and the pointers are 16-byte aligned).
//   Both are asynchronous on `stream`; all pointers are device pointers.
void head_logsumexp_cuda(const float * d_logits, int64_t rows, int64_t n_vocab, const int32_t * d_targets, float * d_lse,
                         float * d_target_logit, void * stream);
void head_softmax_grad_cuda(const float * d_logits, int64_t rows, int64_t n_vocab, const int32_t * d_targets, const float * d_lse,
                            const float * d_w, float * d_dlogits, void * stream);
// Waits for the work queued on `stream` (the trainer orders our kernels against ggml's own stream).
void cuda_stream_synchronize(void * stream);
#endif

namespace detail {

// The per-step float scalars of the AdamW update, shared by the CPU and CUDA paths so both round
// them identically. Built by adamw_scalars(), which also checks the config.
struct AdamWScalars {
    float grad_scale;
    float decay;          // 1 - lr * weight_decay
    float w1;             // 1 - beta1 (torch's lerp weight)
    float beta2;
    float c2;             // 1 - beta2
    float bc2_sqrt;       // sqrt(1 - beta2^step)
    float neg_step_size;  // -lr / (1 - beta1^step)
    float eps;
};
AdamWScalars adamw_scalars(const AdamWConfig & cfg);
// Throws std::invalid_argument for n_tensors < 0, a tensor with n < 0, or a null pointer with n > 0.
void check_tensors(const AdamWTensor * tensors, int n_tensors, const char * who);

}  // namespace detail
}  // namespace visplay
