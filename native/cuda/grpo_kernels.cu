// CUDA versions of the GRPO kernels. API, maths and error contract: native/kernels/grpo_kernels.h;
// the CPU references they are tested against: native/kernels/grpo_kernels.cpp.
//
// defines: group_advantages_kernel   a warp per group (<= 256 samples, in registers), the block for larger
//          adamw_kernel              multi-tensor AdamW: descriptors as a __grid_constant__ parameter
//          sum_squares_kernel        per-block partial sums of grad^2 in double
//          sum_partials_kernel       the partials summed in a fixed order (deterministic)
//          head_lse_kernel           a block per logits row: online (max, sum of exp), one read
//          head_grad_kernel          d logits = w (onehot - softmax), elementwise
//          group_advantages_cuda, lora_adamw_cuda, grad_sum_squares_cuda,
//          head_logsumexp_cuda, head_softmax_grad_cuda (host wrappers)
//
// Needs only the CUDA runtime (no cuBLAS). Device code uses IEEE sqrt and division (no fast math)
// and is compiled with --fmad=false (native/kernels/CMakeLists.txt), so the AdamW update is bitwise
// equal to the CPU reference; the reductions accumulate in double in a fixed order (repeatable bits).
#include "../kernels/grpo_kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace visplay {
namespace {

void check_cuda(cudaError_t err, const char * what) {
    if (err != cudaSuccess) {
        throw std::runtime_error(std::string("visplay kernels: ") + what + " failed: " + cudaGetErrorName(err) + " (" +
                                 cudaGetErrorString(err) + ")");
    }
}

cudaStream_t as_stream(void * stream) { return static_cast<cudaStream_t>(stream); }

int sm_count() {
    int device = 0, sms = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return std::max(1, sms);
}

constexpr unsigned kFullMask = 0xffffffffu;

// Butterfly sum: every lane ends with the same, bitwise identical value (IEEE addition commutes).
__device__ __forceinline__ double warp_sum(double x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(kFullMask, x, offset);
    return x;
}

// Sum over a block of WARPS warps; every thread gets the same value, summed in a fixed order.
// scratch: (WARPS,) shared doubles.
template <int WARPS>
__device__ __forceinline__ double block_sum(double x, double * scratch) {
    x = warp_sum(x);
    __syncthreads();  // the previous call's readers are done with scratch
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
    __syncthreads();
    double total = 0.0;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) total += scratch[w];
    return total;
}

// ---- (a) group-relative advantages ----------------------------------------------------------------
//
// A_i = (r_i - mean) / (std + eps), std unbiased; zeros for a group of size 1 or zero variance.
// Block b owns groups [4b, 4b + 4). Each of its 4 warps takes one of them if it has <= 256
// samples (8 per lane, held in registers: one read of rewards). Then the whole block takes, one
// after the other, those of its groups that are larger: <= 1024 samples are held in registers
// (8 per thread), beyond that each pass re-reads rewards (L2-resident for a group of moderate size).
// Means and sums of squared deviations are in double, as in the CPU reference.
constexpr int kAdvWarps = 4;
constexpr int kAdvThreads = kAdvWarps * 32;
constexpr int kAdvCache = 8;                                  // samples a thread holds in registers
constexpr int kWarpGroupMax = 32 * kAdvCache;                 // 256
constexpr int kBlockCachedMax = kAdvThreads * kAdvCache;      // 1024

// inv_denom = 1 / (std + eps), formed once per group (as in the CPU reference): one double
// division per group instead of one per sample.
__device__ __forceinline__ float advantage(float r, double mean, double inv_denom, bool zero) {
    return zero ? 0.0f : static_cast<float>((static_cast<double>(r) - mean) * inv_denom);
}

__global__ void __launch_bounds__(kAdvThreads)
group_advantages_kernel(const float * __restrict__ rewards,   // (n,)
                        const int32_t * __restrict__ offsets, // (n_groups + 1,)
                        int n_groups, float eps,
                        float * __restrict__ out) {           // (n,)
    __shared__ double scratch[kAdvWarps];
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kAdvWarps;

    // 1) small groups: a warp each
    const int64_t gw = first + warp;
    if (gw < n_groups) {
        const int begin = offsets[gw];
        const int n = offsets[gw + 1] - begin;
        if (n > 0 && n <= kWarpGroupMax) {  // uniform across the warp: every lane joins the shuffles
            float r[kAdvCache];
            double s = 0.0;
#pragma unroll
            for (int k = 0; k < kAdvCache; ++k) {
                const int i = lane + 32 * k;
                r[k] = i < n ? rewards[begin + i] : 0.0f;  // padding adds exact zeros
                s += r[k];
            }
            const double mean = warp_sum(s) / n;
            double ss = 0.0;
#pragma unroll
            for (int k = 0; k < kAdvCache; ++k) {
                const double d = static_cast<double>(r[k]) - mean;
                ss += (lane + 32 * k < n) ? d * d : 0.0;
            }
            ss = warp_sum(ss);
            const bool zero = n == 1 || ss == 0.0;
            const double inv_denom = zero ? 1.0 : 1.0 / (sqrt(ss / (n - 1)) + static_cast<double>(eps));
#pragma unroll
            for (int k = 0; k < kAdvCache; ++k) {
                const int i = lane + 32 * k;
                if (i < n) out[begin + i] = advantage(r[k], mean, inv_denom, zero);
            }
        }
    }

    // 2) large groups of this block: the whole block, one group at a time (every test is uniform)
    for (int k = 0; k < kAdvWarps; ++k) {
        const int64_t g = first + k;
        if (g >= n_groups) break;
        const int begin = offsets[g];
        const int n = offsets[g + 1] - begin;
        if (n <= kWarpGroupMax) continue;
        const float * rg = rewards + begin;
        float * og = out + begin;
        if (n <= kBlockCachedMax) {
            float r[kAdvCache];
            double s = 0.0;
#pragma unroll
            for (int j = 0; j < kAdvCache; ++j) {
                const int i = threadIdx.x + kAdvThreads * j;
                r[j] = i < n ? rg[i] : 0.0f;
                s += r[j];
            }
            const double mean = block_sum<kAdvWarps>(s, scratch) / n;
            double ss = 0.0;
#pragma unroll
            for (int j = 0; j < kAdvCache; ++j) {
                const double d = static_cast<double>(r[j]) - mean;
                ss += (static_cast<int>(threadIdx.x) + kAdvThreads * j < n) ? d * d : 0.0;
            }
            ss = block_sum<kAdvWarps>(ss, scratch);
            const bool zero = ss == 0.0;
            const double inv_denom = zero ? 1.0 : 1.0 / (sqrt(ss / (n - 1)) + static_cast<double>(eps));
#pragma unroll
            for (int j = 0; j < kAdvCache; ++j) {
                const int i = threadIdx.x + kAdvThreads * j;
                if (i < n) og[i] = advantage(r[j], mean, inv_denom, zero);
            }
        } else {
            double s = 0.0;
#pragma unroll 8
            for (int i = threadIdx.x; i < n; i += kAdvThreads) s += rg[i];
            const double mean = block_sum<kAdvWarps>(s, scratch) / n;
            double ss = 0.0;
#pragma unroll 8
            for (int i = threadIdx.x; i < n; i += kAdvThreads) {
                const double d = static_cast<double>(rg[i]) - mean;
                ss += d * d;
            }
            ss = block_sum<kAdvWarps>(ss, scratch);
            const bool zero = ss == 0.0;
            const double inv_denom = zero ? 1.0 : 1.0 / (sqrt(ss / (n - 1)) + static_cast<double>(eps));
#pragma unroll 8
            for (int i = threadIdx.x; i < n; i += kAdvThreads) og[i] = advantage(rg[i], mean, inv_denom, zero);
        }
    }
}

// ---- (b) multi-tensor AdamW and the grad norm ---------------------------------------------------------
//
// Every tensor is cut into chunks of kChunk elements; a launch covers up to kMaxTensors tensors,
// whose descriptors travel in one __grid_constant__ kernel parameter (22.5 KB: CUDA >= 12.1 allows
// 32764 bytes on sm_70+), so a step needs no allocation and no host-to-device copy. Blocks stride
// over the chunks of the launch; a block finds its chunk's tensor by binary search over the chunk
// prefix sums (uniform across the block, so a broadcast constant-bank read).
constexpr int kMaxTensors = 512;
constexpr int kAdamWThreads = 256;
constexpr int kVecPerThread = 4;
constexpr int kChunk = kAdamWThreads * kVecPerThread * 4;  // 4096 elements: 4 float4 per thread

struct TensorList {
    float * param[kMaxTensors];
    const float * grad[kMaxTensors];
    float * m[kMaxTensors];
    float * v[kMaxTensors];
    int64_t n[kMaxTensors];
    int32_t chunk_begin[kMaxTensors + 1];  // chunk_begin[t]: first chunk of tensor t; [count]: total chunks
    int32_t count;
};
static_assert(sizeof(TensorList) + sizeof(detail::AdamWScalars) <= 32764, "kernel parameters must fit in 32764 bytes");

// The tensor that chunk c falls in: chunk_begin[t] <= c < chunk_begin[t + 1] (empty tensors are never listed).
__device__ __forceinline__ int find_tensor(const TensorList & tl, int c) {
    int lo = 0, hi = tl.count;
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (tl.chunk_begin[mid] <= c) lo = mid; else hi = mid;
    }
    return lo;
}

__host__ __device__ __forceinline__ bool aligned16(const void * p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// The per-element update, in the order of grpo_kernels.h (torch's single-tensor AdamW).
__device__ __forceinline__ void adamw_element(float & p, float grad, float & m, float & v, const detail::AdamWScalars & s) {
    const float g = grad * s.grad_scale;
    const float pi = p * s.decay;
    const float mi = s.w1 < 0.5f ? m + s.w1 * (g - m) : g - (g - m) * (1.0f - s.w1);  // torch's lerp
    const float vi = v * s.beta2 + s.c2 * g * g;
    const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
    p = pi + s.neg_step_size * mi / denom;
    m = mi;
    v = vi;
}

__global__ void __launch_bounds__(kAdamWThreads)
adamw_kernel(const __grid_constant__ TensorList tl, const __grid_constant__ detail::AdamWScalars s) {
    const int total = tl.chunk_begin[tl.count];
    for (int c = blockIdx.x; c < total; c += gridDim.x) {
        const int t = find_tensor(tl, c);
        const int64_t begin = static_cast<int64_t>(c - tl.chunk_begin[t]) * kChunk;
        const int64_t end = min(tl.n[t], begin + kChunk);
        float * p = tl.param[t];
        const float * g = tl.grad[t];
        float * m = tl.m[t];
        float * v = tl.v[t];
        int64_t tail = begin;
        if (aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v)) {
            const int64_t n4 = (end - begin) / 4;  // begin is a multiple of 4, so every float4 is aligned
            for (int64_t k = threadIdx.x; k < n4; k += kAdamWThreads) {
                const int64_t e = begin + 4 * k;
                float4 pv = *reinterpret_cast<const float4 *>(p + e);
                const float4 gv = *reinterpret_cast<const float4 *>(g + e);
                float4 mv = *reinterpret_cast<const float4 *>(m + e);
                float4 vv = *reinterpret_cast<const float4 *>(v + e);
                adamw_element(pv.x, gv.x, mv.x, vv.x, s);
                adamw_element(pv.y, gv.y, mv.y, vv.y, s);
                adamw_element(pv.z, gv.z, mv.z, vv.z, s);
                adamw_element(pv.w, gv.w, mv.w, vv.w, s);
                *reinterpret_cast<float4 *>(p + e) = pv;
                *reinterpret_cast<float4 *>(m + e) = mv;
                *reinterpret_cast<float4 *>(v + e) = vv;
            }
            tail = begin + 4 * n4;
        }
        for (int64_t e = tail + threadIdx.x; e < end; e += kAdamWThreads) {
            float pe = p[e], me = m[e], ve = v[e];
            adamw_element(pe, g[e], me, ve, s);
            p[e] = pe;
            m[e] = me;
            v[e] = ve;
        }
    }
}

// partials: (gridDim.x,) this launch's slice; partials[b] = sum of grad^2 over the chunks of block b.
__global__ void __launch_bounds__(kAdamWThreads)
sum_squares_kernel(const __grid_constant__ TensorList tl, double * __restrict__ partials) {
    __shared__ double scratch[kAdamWThreads / 32];
    double acc = 0.0;
    const int total = tl.chunk_begin[tl.count];
    for (int c = blockIdx.x; c < total; c += gridDim.x) {
        const int t = find_tensor(tl, c);
        const int64_t begin = static_cast<int64_t>(c - tl.chunk_begin[t]) * kChunk;
        const int64_t end = min(tl.n[t], begin + kChunk);
        const float * g = tl.grad[t];
        int64_t tail = begin;
        if (aligned16(g)) {
            const int64_t n4 = (end - begin) / 4;
            // A chunk is exactly kVecPerThread float4 per thread: unrolled, so all of a thread's
            // loads are in flight at once (nothing is stored in between to order them).
#pragma unroll
            for (int u = 0; u < kVecPerThread; ++u) {
                const int64_t k = threadIdx.x + u * kAdamWThreads;
                if (k < n4) {
                    const float4 gv = *reinterpret_cast<const float4 *>(g + begin + 4 * k);
                    acc += static_cast<double>(gv.x) * gv.x + static_cast<double>(gv.y) * gv.y +
                           static_cast<double>(gv.z) * gv.z + static_cast<double>(gv.w) * gv.w;
                }
            }
            tail = begin + 4 * n4;
        }
        for (int64_t e = tail + threadIdx.x; e < end; e += kAdamWThreads) acc += static_cast<double>(g[e]) * g[e];
    }
    const double block_total = block_sum<kAdamWThreads / 32>(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}

// One block: out[0] = sum of partials[0 .. n), in an order fixed by n alone.
__global__ void __launch_bounds__(kAdamWThreads)
sum_partials_kernel(const double * __restrict__ partials, int n, double * __restrict__ out) {
    __shared__ double scratch[kAdamWThreads / 32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += kAdamWThreads) acc += partials[i];
    const double total = block_sum<kAdamWThreads / 32>(acc, scratch);
    if (threadIdx.x == 0) out[0] = total;
}

// ---- (c) the vocabulary head's log-softmax -------------------------------------------------------
//
// A row is 151,936 floats (600 KB) for Qwen: a block of 256 threads streams it once, each thread
// keeping a running (max m, sum s of exp(x - m)) in float; the pairs are merged across each warp
// in float and across the 8 warps in double.
// Rows arrive in chunks of a few hundred (the trainer's head chunk), one block each.
constexpr int kHeadThreads = 512;  // head_grad_kernel
constexpr int kLseThreads = 256;   // head_lse_kernel: 512 would cap registers at 128, and the double merge spills

struct MaxSum {
    float m;  // running maximum (-inf before the first element)
    float s;  // sum of exp(x - m) over the elements seen
};

__device__ __forceinline__ void maxsum_add(MaxSum & a, float x) {
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + 1.0f;  // expf(-inf) = 0 on the first element
        a.m = x;
    } else {
        a.s += expf(x - a.m);
    }
}

__global__ void __launch_bounds__(kLseThreads)
head_lse_kernel(const float * __restrict__ logits,      // (rows, n_vocab)
                int64_t n_vocab,
                const int32_t * __restrict__ targets,   // (rows,)
                float * __restrict__ lse,               // (rows,)
                float * __restrict__ target_logit) {    // (rows,)
    const int64_t row = blockIdx.x;
    const float * l = logits + row * n_vocab;
    MaxSum a{-INFINITY, 0.0f};
    int64_t tail = 0;
    if ((n_vocab & 3) == 0 && aligned16(l)) {
        const int64_t n4 = n_vocab / 4;
        const float4 * l4 = reinterpret_cast<const float4 *>(l);
        int64_t k = threadIdx.x;
        // Four float4 loads in flight per thread (one block per row leaves few warps per SM to hide
        // the memory latency with), then one rescale for their 16 values and 16 exponentials.
        for (; k + 3 * kLseThreads < n4; k += 4 * kLseThreads) {
            const float4 x0 = l4[k], x1 = l4[k + kLseThreads], x2 = l4[k + 2 * kLseThreads], x3 = l4[k + 3 * kLseThreads];
            const float mx = fmaxf(fmaxf(fmaxf(fmaxf(x0.x, x0.y), fmaxf(x0.z, x0.w)), fmaxf(fmaxf(x1.x, x1.y), fmaxf(x1.z, x1.w))),
                                   fmaxf(fmaxf(fmaxf(x2.x, x2.y), fmaxf(x2.z, x2.w)), fmaxf(fmaxf(x3.x, x3.y), fmaxf(x3.z, x3.w))));
            if (mx > a.m) {
                a.s *= expf(a.m - mx);  // 0 * expf(-inf) = 0 before the first element
                a.m = mx;
            }
            const float m = a.m;
            a.s += ((expf(x0.x - m) + expf(x0.y - m)) + (expf(x0.z - m) + expf(x0.w - m))) +
                   ((expf(x1.x - m) + expf(x1.y - m)) + (expf(x1.z - m) + expf(x1.w - m))) +
                   ((expf(x2.x - m) + expf(x2.y - m)) + (expf(x2.z - m) + expf(x2.w - m))) +
                   ((expf(x3.x - m) + expf(x3.y - m)) + (expf(x3.z - m) + expf(x3.w - m)));
        }
        for (; k < n4; k += kLseThreads) {
            const float4 x = l4[k];
            maxsum_add(a, x.x);
            maxsum_add(a, x.y);
            maxsum_add(a, x.z);
            maxsum_add(a, x.w);
        }
        tail = 4 * n4;
    }
    for (int64_t v = tail + threadIdx.x; v < n_vocab; v += kLseThreads) maxsum_add(a, l[v]);
    // Merge (m, s) pairs: across each warp by butterfly shuffles (fixed order, every lane ends
    // with the same value), then the 16 warps' pairs by thread 0 in double. An empty pair
    // (m = -inf, s = 0) contributes nothing; the guard keeps -inf - -inf from making a NaN.
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float om = __shfl_xor_sync(kFullMask, a.m, offset);
        const float os = __shfl_xor_sync(kFullMask, a.s, offset);
        const float m = fmaxf(a.m, om);
        a.s = (a.s > 0.0f ? a.s * expf(a.m - m) : 0.0f) + (os > 0.0f ? os * expf(om - m) : 0.0f);
        a.m = m;
    }
    __shared__ float s_m[kLseThreads / 32];
    __shared__ float s_s[kLseThreads / 32];
    if ((threadIdx.x & 31) == 0) {
        s_m[threadIdx.x >> 5] = a.m;
        s_s[threadIdx.x >> 5] = a.s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = -INFINITY;
        for (int k = 0; k < kLseThreads / 32; ++k) m = fmaxf(m, s_m[k]);
        double sum = 0.0;
        for (int k = 0; k < kLseThreads / 32; ++k) {
            if (s_s[k] > 0.0f) sum += static_cast<double>(s_s[k]) * exp(static_cast<double>(s_m[k]) - static_cast<double>(m));
        }
        lse[row] = static_cast<float>(static_cast<double>(m) + log(sum));
        target_logit[row] = l[targets[row]];
    }
}

// grid (ceil(n_vocab / (4 * kHeadThreads)), rows): each thread writes 4 consecutive elements of a row.
__global__ void __launch_bounds__(kHeadThreads)
head_grad_kernel(const float * logits,                  // (rows, n_vocab); may alias dlogits
                 int64_t n_vocab,
                 const int32_t * __restrict__ targets,  // (rows,)
                 const float * __restrict__ lse,        // (rows,)
                 const float * __restrict__ w,          // (rows,)
                 float * dlogits,                       // (rows, n_vocab)
                 bool vec4) {
    const int64_t row = blockIdx.y;
    const float wr = w[row], lr = lse[row];
    const int32_t t = targets[row];
    const int64_t v0 = (static_cast<int64_t>(blockIdx.x) * kHeadThreads + threadIdx.x) * 4;
    if (v0 >= n_vocab) return;
    const float * l = logits + row * n_vocab;
    float * d = dlogits + row * n_vocab;
    if (vec4) {
        const float4 x = *reinterpret_cast<const float4 *>(l + v0);
        float4 y;
        y.x = -wr * expf(x.x - lr) + (v0 + 0 == t ? wr : 0.0f);
        y.y = -wr * expf(x.y - lr) + (v0 + 1 == t ? wr : 0.0f);
        y.z = -wr * expf(x.z - lr) + (v0 + 2 == t ? wr : 0.0f);
        y.w = -wr * expf(x.w - lr) + (v0 + 3 == t ? wr : 0.0f);
        *reinterpret_cast<float4 *>(d + v0) = y;
    } else {
        for (int64_t v = v0; v < min(n_vocab, v0 + 4); ++v) d[v] = -wr * expf(l[v] - lr) + (v == t ? wr : 0.0f);
    }
}

// The non-empty tensors, kMaxTensors per list.
std::vector<TensorList> make_lists(const AdamWTensor * tensors, int n_tensors) {
    std::vector<TensorList> lists;
    for (int t = 0; t < n_tensors; ++t) {
        const AdamWTensor & x = tensors[t];
        if (x.n == 0) continue;
        if (lists.empty() || lists.back().count == kMaxTensors) {
            lists.emplace_back();
            lists.back().count = 0;
            lists.back().chunk_begin[0] = 0;
        }
        TensorList & tl = lists.back();
        const int i = tl.count;
        const int64_t chunks = (x.n + kChunk - 1) / kChunk;
        const int64_t next = static_cast<int64_t>(tl.chunk_begin[i]) + chunks;
        if (next > INT32_MAX) throw std::invalid_argument("visplay kernels: too many elements in one launch (tensor " + std::to_string(t) + ")");
        tl.param[i] = x.param;
        tl.grad[i] = x.grad;
        tl.m[i] = x.m;
        tl.v[i] = x.v;
        tl.n[i] = x.n;
        tl.chunk_begin[i + 1] = static_cast<int32_t>(next);
        tl.count = i + 1;
    }
    return lists;
}

// Enough blocks to fill every SM (8 blocks of 256 threads = 2048 threads per SM), no more than chunks.
int grid_for(const TensorList & tl, int sms) { return std::max(1, std::min(tl.chunk_begin[tl.count], sms * 8)); }

// grad_sum_squares_cuda's buffers, one set per device, kept for the life of the process (a
// stream-ordered allocation per call cost ~80 us: the default pool hands its memory back at every
// synchronization). Never freed: the CUDA runtime may already be gone when statics are destroyed.
struct SumScratch {
    double * device = nullptr;  // (capacity,) partial sums and the total
    size_t capacity = 0;
    double * host = nullptr;    // pinned, so the 8-byte copy back is a true async copy
    void reserve(size_t n) {
        if (host == nullptr) check_cuda(cudaMallocHost(reinterpret_cast<void **>(&host), sizeof(double)), "cudaMallocHost");
        if (n <= capacity) return;
        if (device != nullptr) check_cuda(cudaFree(device), "cudaFree");  // idle: its last user synchronized
        device = nullptr;
        capacity = 0;
        const size_t grown = std::max<size_t>(n, 4096);
        check_cuda(cudaMalloc(reinterpret_cast<void **>(&device), grown * sizeof(double)), "cudaMalloc");
        capacity = grown;
    }
};
std::mutex g_scratch_mutex;
std::map<int, SumScratch> g_scratch;

}  // namespace

void group_advantages_cuda(const float * d_rewards, const int32_t * d_offsets, int n_groups, float eps, float * d_out, void * stream) {
    if (n_groups < 0) throw std::invalid_argument("group_advantages_cuda: n_groups is negative (" + std::to_string(n_groups) + ")");
    if (n_groups == 0) return;
    if (d_offsets == nullptr || d_rewards == nullptr || d_out == nullptr) {
        throw std::invalid_argument("group_advantages_cuda: a device pointer is null");
    }
    const unsigned blocks = static_cast<unsigned>((static_cast<int64_t>(n_groups) + kAdvWarps - 1) / kAdvWarps);
    group_advantages_kernel<<<blocks, kAdvThreads, 0, as_stream(stream)>>>(d_rewards, d_offsets, n_groups, eps, d_out);
    check_cuda(cudaGetLastError(), "group_advantages_kernel launch");
}

void lora_adamw_cuda(const AdamWTensor * h_tensors, int n_tensors, const AdamWConfig & cfg, void * stream) {
    const detail::AdamWScalars s = detail::adamw_scalars(cfg);
    detail::check_tensors(h_tensors, n_tensors, "lora_adamw_cuda");
    const std::vector<TensorList> lists = make_lists(h_tensors, n_tensors);
    if (lists.empty()) return;
    const int sms = sm_count();
    for (const TensorList & tl : lists) {
        adamw_kernel<<<grid_for(tl, sms), kAdamWThreads, 0, as_stream(stream)>>>(tl, s);
        check_cuda(cudaGetLastError(), "adamw_kernel launch");
    }
}

double grad_sum_squares_cuda(const AdamWTensor * h_tensors, int n_tensors, void * stream) {
    detail::check_tensors(h_tensors, n_tensors, "grad_sum_squares_cuda");
    const std::vector<TensorList> lists = make_lists(h_tensors, n_tensors);
    if (lists.empty()) return 0.0;
    const cudaStream_t st = as_stream(stream);
    int device = 0;
    check_cuda(cudaGetDevice(&device), "cudaGetDevice");
    const int sms = sm_count();
    int n_partials = 0;
    for (const TensorList & tl : lists) n_partials += grid_for(tl, sms);

    // Held until the result is back: the scratch is shared by every caller on this device.
    std::lock_guard<std::mutex> lock(g_scratch_mutex);
    SumScratch & scratch = g_scratch[device];
    scratch.reserve(static_cast<size_t>(n_partials) + 1);
    double * buf = scratch.device;  // (n_partials + 1,): the partials, then the total
    int at = 0;
    for (const TensorList & tl : lists) {
        const int grid = grid_for(tl, sms);
        sum_squares_kernel<<<grid, kAdamWThreads, 0, st>>>(tl, buf + at);
        check_cuda(cudaGetLastError(), "sum_squares_kernel launch");
        at += grid;
    }
    sum_partials_kernel<<<1, kAdamWThreads, 0, st>>>(buf, n_partials, buf + n_partials);
    check_cuda(cudaGetLastError(), "sum_partials_kernel launch");
    check_cuda(cudaMemcpyAsync(scratch.host, buf + n_partials, sizeof(double), cudaMemcpyDeviceToHost, st), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(st), "cudaStreamSynchronize (grad_sum_squares_cuda)");
    return *scratch.host;
}

void head_logsumexp_cuda(const float * d_logits, int64_t rows, int64_t n_vocab, const int32_t * d_targets, float * d_lse,
                         float * d_target_logit, void * stream) {
    if (rows < 0 || n_vocab < 1) throw std::invalid_argument("head_logsumexp_cuda: rows must be >= 0 and n_vocab >= 1");
    if (rows == 0) return;
    if (!d_logits || !d_targets || !d_lse || !d_target_logit) throw std::invalid_argument("head_logsumexp_cuda: a device pointer is null");
    if (rows > INT32_MAX) throw std::invalid_argument("head_logsumexp_cuda: too many rows");
    head_lse_kernel<<<static_cast<unsigned>(rows), kLseThreads, 0, as_stream(stream)>>>(d_logits, n_vocab, d_targets, d_lse, d_target_logit);
    check_cuda(cudaGetLastError(), "head_lse_kernel launch");
}

void head_softmax_grad_cuda(const float * d_logits, int64_t rows, int64_t n_vocab, const int32_t * d_targets, const float * d_lse,
                            const float * d_w, float * d_dlogits, void * stream) {
    if (rows < 0 || n_vocab < 1) throw std::invalid_argument("head_softmax_grad_cuda: rows must be >= 0 and n_vocab >= 1");
    if (rows == 0) return;
    if (!d_logits || !d_targets || !d_lse || !d_w || !d_dlogits) throw std::invalid_argument("head_softmax_grad_cuda: a device pointer is null");
    const bool vec4 = (n_vocab & 3) == 0 && aligned16(d_logits) && aligned16(d_dlogits);
    const unsigned blocks_per_row = static_cast<unsigned>((n_vocab + 4 * kHeadThreads - 1) / (4 * kHeadThreads));
    for (int64_t r0 = 0; r0 < rows; r0 += 65535) {  // gridDim.y <= 65535
        const int64_t n = std::min<int64_t>(65535, rows - r0);
        head_grad_kernel<<<dim3(blocks_per_row, static_cast<unsigned>(n)), kHeadThreads, 0, as_stream(stream)>>>(
            d_logits + r0 * n_vocab, n_vocab, d_targets + r0, d_lse + r0, d_w + r0, d_dlogits + r0 * n_vocab, vec4);
        check_cuda(cudaGetLastError(), "head_grad_kernel launch");
    }
}

void cuda_stream_synchronize(void * stream) { check_cuda(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize"); }

}  // namespace visplay
