// The GRPO trainer (see policy.h) and its JS wrapper.
#include "policy.h"

#include "adapter_file.h"
#include "common.h"
#include "grpo_kernels.h"
#include "sampler.h"

#include "ggml-cpu.h"
#include "mtmd-helper.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <thread>
#include <unordered_map>

namespace visplay {

struct GgmlCtx {  // a no_alloc context for one graph's tensor metadata (room for 3 graphs)
    ggml_context * ctx;
    GgmlCtx(size_t n_tensors, size_t graph_size) {
        ggml_init_params p = {ggml_tensor_overhead() * n_tensors + ggml_graph_overhead_custom(graph_size, true) * 3, nullptr, true};
        ctx = ggml_init(p);
        if (!ctx) throw CodedError("ERR_OUT_OF_MEMORY", "could not allocate a ggml context");
    }
    ~GgmlCtx() { ggml_free(ctx); }
    GgmlCtx(const GgmlCtx &) = delete;
    GgmlCtx & operator=(const GgmlCtx &) = delete;
};

PolicyState::Head::~Head() {
    if (staging) ggml_backend_buffer_free(staging);
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// xoshiro256** seeded by splitmix64: the LoRA initialisation stream.
struct Xoshiro {
    uint64_t s[4];
    explicit Xoshiro(uint64_t seed) {
        for (auto & v : s) {
            seed += 0x9E3779B97F4A7C15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            v = z ^ (z >> 31);
        }
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t next() {
        const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
        return r;
    }
    float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
};

// Runs fn(i) for i in [0, n) over `threads` threads (static split; rows cost the same).
void parallel_for(int n, int threads, const std::function<void(int)> & fn) {
    threads = std::max(1, std::min(threads, n));
    if (threads == 1) {
        for (int i = 0; i < n; ++i) fn(i);
        return;
    }
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = t; i < n; i += threads) fn(i);
        });
    }
    for (auto & th : pool) th.join();
}

void compute(ggml_backend_t backend, ggml_cgraph * g) {
    if (ggml_backend_graph_compute(backend, g) != GGML_STATUS_SUCCESS) throw CodedError("ERR_COMPUTE", "ggml graph computation failed");
}

// A GPU backend aborts the process on an op it cannot compute; ask first and fail with the op's
// name instead (the CPU backend computes every op the graphs use).
void check_supported(ggml_backend_t backend, ggml_cgraph * g) {
    for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
        ggml_tensor * node = ggml_graph_node(g, i);
        if (ggml_is_empty(node) || node->op == GGML_OP_NONE || node->op == GGML_OP_RESHAPE || node->op == GGML_OP_VIEW ||
            node->op == GGML_OP_PERMUTE || node->op == GGML_OP_TRANSPOSE) {
            continue;
        }
        if (!ggml_backend_supports_op(backend, node)) {
            std::string types;
            for (int j = 0; j < GGML_MAX_SRC && node->src[j]; ++j) types += std::string(j ? ", " : "") + ggml_type_name(node->src[j]->type);
            throw CodedError("ERR_UNSUPPORTED_MODEL", std::string("the ") + ggml_backend_name(backend) + " backend cannot compute " + ggml_op_desc(node) +
                                                          " (" + types + " -> " + ggml_type_name(node->type) + ", node '" + ggml_get_name(node) +
                                                          "') of the training graph");
        }
    }
}

// Declares the precision of every product with a frozen quantized weight in g (MUL_MAT forward,
// OUT_PROD backward: src0 the weight, src1 the activations or the transposed gradients). Only
// ggml-cuda reads it (PolicyOptions::frozen_matmul); LoRA A/B are F32 and keep F32 products.
void declare_frozen_matmul(ggml_cgraph * g, PolicyOptions::FrozenMatmul how) {
    if (how != PolicyOptions::FrozenMatmul::bf16) return;
    for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
        ggml_tensor * node = ggml_graph_node(g, i);
        if ((node->op == GGML_OP_MUL_MAT || node->op == GGML_OP_OUT_PROD) && ggml_is_quantized(node->src[0]->type)) {
            ggml_prec_set_src(node, GGML_PREC_BF16, 1);
        }
    }
}

void alloc_graph(ggml_gallocr_t alloc, ggml_cgraph * g) {
    if (!ggml_gallocr_alloc_graph(alloc, g)) throw CodedError("ERR_OUT_OF_MEMORY", "could not allocate the training graph's buffers");
}

// One row of a (possibly quantized) weight matrix as floats: row r of ne [n, rows].
void row_to_float(ggml_type type, const uint8_t * src, int64_t n, float * out) {
    if (type == GGML_TYPE_F32) {
        std::memcpy(out, src, n * sizeof(float));
    } else {
        ggml_get_type_traits(type)->to_float(src, out, n);
    }
}

void weight_row(const ggml_tensor * w, int64_t r, float * out, std::vector<uint8_t> & scratch) {
    const size_t nb = w->nb[1];
    const uint8_t * src;
    if (ggml_backend_buffer_is_host(w->buffer)) {
        src = static_cast<const uint8_t *>(w->data) + r * nb;
    } else {
        scratch.resize(nb);
        ggml_backend_tensor_get(w, scratch.data(), r * nb, nb);
        src = scratch.data();
    }
    row_to_float(w->type, src, w->ne[0], out);
}

// A whole F32 tensor into a host vector, from host or GPU memory.
void tensor_to_host(const ggml_tensor * t, std::vector<float> & out) {
    out.resize(ggml_nelements(t));
    ggml_backend_tensor_get(t, out.data(), 0, ggml_nbytes(t));
}

int graph_size_for(const LmView & lm) { return 4096 + lm.n_layer * 768; }

}  // namespace

std::shared_ptr<TransposedHead> transposed_head(ModelState & model, const LmView & lm, ggml_backend_buffer_type_t buft);

struct PolicyState::MicroBatch {
    struct Unit {
        int group = 0;
        std::vector<int> samples;  // indices into the group's samples
        int rows = 0;              // prompt + sum(L - 1)
    };
    std::vector<Unit> units;
    int rows = 0;
    int preds = 0;
};

PolicyState::PolicyState(std::shared_ptr<ModelState> model, const PolicyOptions & options) : model_(std::move(model)), options_(options) {
    lm_ = make_lm_view(model_->model);
    if (options_.rank < 1) throw CodedError("ERR_INVALID_ARG", "LoRA rank must be at least 1");
    if (!(options_.alpha > 0)) throw CodedError("ERR_INVALID_ARG", "LoRA alpha must be positive");
    if (options_.targets.empty()) options_.targets = lora_module_names();
    for (const auto & t : options_.targets) {
        const auto & known = lora_module_names();
        if (std::find(known.begin(), known.end(), t) == known.end()) {
            std::string list;
            for (const auto & k : known) list += (list.empty() ? "" : ", ") + k;
            throw CodedError("ERR_INVALID_ARG", "unknown LoRA target module '" + t + "' (this model has: " + list + ")");
        }
    }
    if (options_.context_size <= 0) options_.context_size = lm_.n_ctx_train;
    if (options_.micro_batch_tokens < 16) throw CodedError("ERR_INVALID_ARG", "microBatchTokens must be at least 16");
    if (options_.head_chunk < 1) throw CodedError("ERR_INVALID_ARG", "headChunk must be at least 1");
    if (options_.projector_rank < 0 || options_.projector_rank > lm_.n_embd) {
        throw CodedError("ERR_INVALID_ARG", "projectorRank must be between 0 and the embedding size " + std::to_string(lm_.n_embd));
    }
    if (options_.projector_rank > 0 && !model_->mtmd) {
        throw CodedError("ERR_INVALID_ARG", "projectorRank needs a model loaded with its mmproj (it trains the image rows)");
    }
    n_threads_ = options_.threads > 0 ? options_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    // The frozen weights are used in place, where llama.cpp put them: all in host memory (the CPU
    // trainer) or all on one GPU (the GPU trainer, on that device's backend). The token embeddings
    // are read row by row on the host wherever they are. llama.cpp repacks some quantized types for
    // faster CPU matmuls (CPU_REPACK), a layout the backward pass cannot read.
    ggml_backend_dev_t gpu_dev = nullptr;
    std::string host_weight, gpu_weight;
    for (const auto & [name, t] : lm_.by_name) {
        if (t == lm_.tok_embd) continue;
        const char * buft = ggml_backend_buft_name(ggml_backend_buffer_get_type(t->buffer));
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
        if (std::strstr(buft, "REPACK") || (!ggml_backend_buffer_is_host(t->buffer) && (!dev || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU))) {
            // CPU memory in a layout of the CPU backend's own (CPU_REPACK), not plain rows
            throw CodedError("ERR_UNSUPPORTED_MODEL", "weight '" + name + "' lives in a '" + buft +
                                                          "' buffer the trainer cannot read; load the model with repackWeights: false to train on it");
        }
        if (ggml_backend_buffer_is_host(t->buffer)) {
            host_weight = name;
            continue;
        }
        if (gpu_dev && dev != gpu_dev) throw CodedError("ERR_GPU_WEIGHTS", "the model's weights are spread over several devices; the trainer needs them on one");
        gpu_dev = dev;
        gpu_weight = name;
    }
    if (gpu_dev && !host_weight.empty()) {
        throw CodedError("ERR_GPU_WEIGHTS", "weight '" + gpu_weight + "' is in GPU memory and '" + host_weight +
                                                "' in host memory: the trainer runs where all of them are; load the model with gpuLayers: 0 "
                                                "(CPU) or at least " + std::to_string(lm_.n_layer + 1) + " (every layer and the output on the GPU)");
    }

    if (gpu_dev) {
#ifdef VISPLAY_CUDA
        backend_ = ggml_backend_dev_init(gpu_dev, nullptr);
        if (!backend_) throw CodedError("ERR_OUT_OF_MEMORY", std::string("could not start the ggml backend of ") + ggml_backend_dev_name(gpu_dev));
        on_gpu_ = true;
#else
        throw CodedError("ERR_GPU_WEIGHTS", "the model's weights are on a GPU, and this build has no CUDA trainer (build with VISPLAY_CUDA=1)");
#endif
    } else {
        backend_ = ggml_backend_cpu_init();
        if (!backend_) throw CodedError("ERR_OUT_OF_MEMORY", "could not start the ggml CPU backend");
        ggml_backend_cpu_set_n_threads(backend_, n_threads_);
        ggml_backend_cpu_set_abort_callback(backend_, exiting_abort_callback, nullptr);  // a step in flight stops when the process exits
    }
    new_allocators();
    init_lora();

    clear_captured_log();
    const auto tmp = std::filesystem::temp_directory_path() /
                     ("visplay-live-lora-" + std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" +
                      std::to_string(Clock::now().time_since_epoch().count()) + ".gguf");
    write_adapter_file(tmp.string(), lm_.arch, options_, pairs_, adapter_fingerprint(lm_), step_);
    adapter_ = llama_adapter_lora_init(model_->model, tmp.string().c_str());
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    if (!adapter_) throw CodedError("ERR_MODEL_LOAD", with_log("llama.cpp did not accept the live LoRA adapter"));
}

// Fresh graph allocators (they hold no buffer until a graph is allocated); the old ones and their
// buffers are freed, and so is the head, whose tensors live in them.
void PolicyState::new_allocators() {
    head_.reset();
    for (ggml_gallocr_t * a : {&trunk_alloc_, &head_alloc_, &head2_alloc_}) {
        if (*a) ggml_gallocr_free(*a);
        *a = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
        if (!*a) throw CodedError("ERR_OUT_OF_MEMORY", "could not create a graph allocator");
    }
}

void PolicyState::compute_graph(ggml_cgraph * g) {
    if (!profiling_) {
        compute(backend_, g);
        return;
    }
    GgmlCtx gc(0, 1);
    ggml_cgraph * one = ggml_new_graph_custom(gc.ctx, 1, false);
    for (int i = 0; i < ggml_graph_n_nodes(g); ++i) {
        ggml_tensor * node = ggml_graph_node(g, i);
        ggml_graph_clear(one);
        ggml_graph_add_node(one, node);
        const auto t0 = Clock::now();
        compute(backend_, one);  // returns synchronized
        const double s = seconds_between(t0, Clock::now());
        std::string key = ggml_op_desc(node);
        if ((node->op == GGML_OP_MUL_MAT || node->op == GGML_OP_OUT_PROD) && node->src[0]) {
            key += std::string(" ") + ggml_type_name(node->src[0]->type) + " x " + ggml_type_name(node->src[1]->type);
        }
        OpTime & t = op_times_[key];
        t.op = key;
        t.count++;
        t.seconds += s;
    }
}

std::vector<PolicyState::OpTime> PolicyState::op_profile() const {
    std::vector<OpTime> v;
    for (const auto & kv : op_times_) v.push_back(kv.second);
    std::sort(v.begin(), v.end(), [](const OpTime & a, const OpTime & b) { return a.seconds > b.seconds; });
    return v;
}

PolicyMemory PolicyState::memory() const {
    PolicyMemory m;
    m.lora_state = (lora_buf_ ? ggml_backend_buffer_get_size(lora_buf_) : 0) + (grad_buf_ ? ggml_backend_buffer_get_size(grad_buf_) : 0);
    m.transposed_head = output_t_ && output_t_->buf ? ggml_backend_buffer_get_size(output_t_->buf) : 0;
    m.trunk = std::max(trunk_peak_, ggml_gallocr_get_buffer_size(trunk_alloc_, 0));
    m.head = std::max(head_peak_, ggml_gallocr_get_buffer_size(head_alloc_, 0) + ggml_gallocr_get_buffer_size(head2_alloc_, 0));
    return m;
}

PolicyState::~PolicyState() {
    if (adapter_) llama_adapter_lora_free(adapter_);
    if (trunk_alloc_) ggml_gallocr_free(trunk_alloc_);
    if (head_alloc_) ggml_gallocr_free(head_alloc_);
    if (head2_alloc_) ggml_gallocr_free(head2_alloc_);
    if (lora_buf_) ggml_backend_buffer_free(lora_buf_);
    if (lora_ctx_) ggml_free(lora_ctx_);
    if (grad_buf_) ggml_backend_buffer_free(grad_buf_);
    if (grad_ctx_) ggml_free(grad_ctx_);
    if (backend_) ggml_backend_free(backend_);
}

void PolicyState::init_lora() {
    std::vector<std::pair<std::string, ggml_tensor *>> bases;
    for (int il = 0; il < lm_.n_layer; ++il) {
        for (const auto & module : lora_module_names()) {
            if (std::find(options_.targets.begin(), options_.targets.end(), module) == options_.targets.end()) continue;
            const std::string name = "blk." + std::to_string(il) + "." + module + ".weight";
            auto it = lm_.by_name.find(name);
            if (it == lm_.by_name.end()) throw CodedError("ERR_INVALID_ARG", "the model has no weight '" + name + "' for LoRA target '" + module + "'");
            bases.emplace_back(name, it->second);
        }
    }
    // Per pair: A, B, their gradient accumulators and (GPU) AdamW moments; room for the projector's
    // pair; the loss seed.
    const size_t n_tensors = (bases.size() + 1) * 8 + 1 + 4;
    ggml_init_params p = {ggml_tensor_overhead() * n_tensors, nullptr, true};
    lora_ctx_ = ggml_init(p);
    // The gradient accumulators in a buffer of their own: zeroed by one clear per step (one memset
    // per tensor was 252 synchronized calls for a 3B model's LoRA).
    ggml_init_params pg = {ggml_tensor_overhead() * (bases.size() + 1) * 2, nullptr, true};
    grad_ctx_ = ggml_init(pg);
    if (!lora_ctx_ || !grad_ctx_) throw CodedError("ERR_OUT_OF_MEMORY", "could not allocate a ggml context");
    // A: ne [n_in, rank], B: ne [rank, n_out], named "<name>.lora_a/b"; both trained.
    auto add_pair = [&](LoraPair & lp, const std::string & name, int64_t n_in, int rank, int64_t n_out) {
        lp.base_name = name;
        lp.a = ggml_new_tensor_2d(lora_ctx_, GGML_TYPE_F32, n_in, rank);
        lp.b = ggml_new_tensor_2d(lora_ctx_, GGML_TYPE_F32, rank, n_out);
        ggml_set_name(lp.a, (name + ".lora_a").c_str());
        ggml_set_name(lp.b, (name + ".lora_b").c_str());
        for (ggml_tensor * t : {lp.a, lp.b}) {
            ggml_set_param(t);
            params_.push_back(t);
            grad_acc_.push_back(ggml_dup_tensor(grad_ctx_, t));
            if (on_gpu_) {  // the CPU trainer keeps its moments in adam_m_ / adam_v_
                moment_m_.push_back(ggml_dup_tensor(lora_ctx_, t));
                moment_v_.push_back(ggml_dup_tensor(lora_ctx_, t));
            }
        }
    };
    pairs_.resize(bases.size());
    for (size_t i = 0; i < bases.size(); ++i) {
        pairs_[i].base = bases[i].second;
        add_pair(pairs_[i], bases[i].first, bases[i].second->ne[0], options_.rank, bases[i].second->ne[1]);
    }
    // After the LoRA pairs, so that the pairs' initialisation (and a projector-free policy's tensor
    // order) is unchanged.
    if (options_.projector_rank > 0) add_pair(projector_, kProjectorName, lm_.n_embd, options_.projector_rank, lm_.n_embd);
    loss_seed_ = ggml_new_tensor_1d(lora_ctx_, GGML_TYPE_F32, 1);
    if (on_gpu_) {
        // The head's per-row exchange with our CUDA log-softmax kernels, for head_chunk rows.
        head_io_.targets = ggml_new_tensor_1d(lora_ctx_, GGML_TYPE_I32, options_.head_chunk);
        head_io_.lse = ggml_new_tensor_1d(lora_ctx_, GGML_TYPE_F32, options_.head_chunk);
        head_io_.target_logit = ggml_new_tensor_1d(lora_ctx_, GGML_TYPE_F32, options_.head_chunk);
        head_io_.w = ggml_new_tensor_1d(lora_ctx_, GGML_TYPE_F32, options_.head_chunk);
    }
    lora_buf_ = ggml_backend_alloc_ctx_tensors(lora_ctx_, backend_);
    grad_buf_ = ggml_backend_alloc_ctx_tensors(grad_ctx_, backend_);
    if (!lora_buf_ || !grad_buf_) throw CodedError("ERR_OUT_OF_MEMORY", "could not allocate the LoRA tensors");
    by_base_.clear();
    for (auto & lp : pairs_) by_base_[lp.base] = &lp;
    const float one = 1.0f;
    ggml_backend_tensor_set(loss_seed_, &one, 0, sizeof(one));
    for (ggml_tensor * t : moment_m_) ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));
    for (ggml_tensor * t : moment_v_) ggml_backend_tensor_memset(t, 0, 0, ggml_nbytes(t));

    // PEFT's initialisation: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(n_in), 1/sqrt(n_in)), B = 0.
    // Written through ggml_backend_tensor_set: the tensors are in host or GPU memory.
    Xoshiro rng(options_.seed);
    std::vector<float> a;
    auto init_pair = [&](LoraPair & lp) {
        const float bound = 1.0f / std::sqrt(static_cast<float>(lp.a->ne[0]));
        a.resize(ggml_nelements(lp.a));
        for (float & x : a) x = bound * (2.0f * rng.uniform() - 1.0f);
        ggml_backend_tensor_set(lp.a, a.data(), 0, ggml_nbytes(lp.a));
        ggml_backend_tensor_memset(lp.b, 0, 0, ggml_nbytes(lp.b));
    };
    for (auto & lp : pairs_) init_pair(lp);
    if (projector_.a) init_pair(projector_);
    std::memcpy(rng_state_, rng.s, sizeof(rng_state_));
    adam_m_.assign(params_.size(), {});
    adam_v_.assign(params_.size(), {});
    for (size_t i = 0; i < params_.size(); ++i) {
        adam_m_[i].assign(ggml_nelements(params_[i]), 0.0f);
        adam_v_[i].assign(ggml_nelements(params_[i]), 0.0f);
    }

    const bool out_prod = options_.head_backward == PolicyOptions::HeadBackward::out_prod ||
                          (options_.head_backward == PolicyOptions::HeadBackward::automatic && on_gpu_);
    if (!out_prod) output_t_ = transposed_head(*model_, lm_, ggml_backend_get_default_buffer_type(backend_));
}

TransposedHead::~TransposedHead() {
    if (buf) ggml_backend_buffer_free(buf);
    if (ctx) ggml_free(ctx);
}

// F32 when it fits in 512 MiB, which keeps d logits in F32 too; F16 beyond that (a 3B model's
// 151,936 x 2048 head: 622 MB in F16). In `buft`: host memory for the CPU trainer, the GPU's for
// the GPU trainer (a model is placed on one or the other, so one head serves every policy of it).
std::shared_ptr<TransposedHead> transposed_head(ModelState & model, const LmView & lm, ggml_backend_buffer_type_t buft) {
    std::lock_guard<std::mutex> lock(model.head_mutex);
    if (auto existing = model.transposed_head.lock()) return std::static_pointer_cast<TransposedHead>(existing);
    auto h = std::make_shared<TransposedHead>();
    const bool f32 = static_cast<double>(lm.n_vocab) * lm.n_embd * 4 <= 512.0 * 1024 * 1024;
    ggml_init_params p = {ggml_tensor_overhead(), nullptr, true};
    h->ctx = ggml_init(p);
    h->t = ggml_new_tensor_2d(h->ctx, f32 ? GGML_TYPE_F32 : GGML_TYPE_F16, lm.n_vocab, lm.n_embd);
    h->buf = ggml_backend_alloc_ctx_tensors_from_buft(h->ctx, buft);
    if (!h->buf) throw CodedError("ERR_OUT_OF_MEMORY", "could not allocate the transposed vocabulary head");
    // The output weight in host memory: in place, or one copy of the whole tensor from the GPU
    // (row by row would be one transfer per vocabulary entry).
    const ggml_tensor * w = lm.output;
    std::vector<uint8_t> w_host;
    const uint8_t * w_data = static_cast<const uint8_t *>(w->data);
    if (!ggml_backend_buffer_is_host(w->buffer)) {
        w_host.resize(ggml_nbytes(w));
        ggml_backend_tensor_get(w, w_host.data(), 0, w_host.size());
        w_data = w_host.data();
    }
    const bool in_place = ggml_backend_buffer_is_host(h->buf);
    std::vector<uint8_t> staging(in_place ? 0 : ggml_nbytes(h->t));
    uint8_t * dst_data = in_place ? static_cast<uint8_t *>(h->t->data) : staging.data();
    std::vector<float> row(lm.n_embd);
    const int64_t V = lm.n_vocab;
    for (int64_t v = 0; v < V; ++v) {
        row_to_float(w->type, w_data + v * w->nb[1], lm.n_embd, row.data());
        if (f32) {
            float * dst = reinterpret_cast<float *>(dst_data);
            for (int e = 0; e < lm.n_embd; ++e) dst[e * V + v] = row[e];
        } else {
            ggml_fp16_t * dst = reinterpret_cast<ggml_fp16_t *>(dst_data);
            for (int e = 0; e < lm.n_embd; ++e) dst[e * V + v] = ggml_fp32_to_fp16(row[e]);
        }
    }
    if (!in_place) ggml_backend_tensor_set(h->t, staging.data(), 0, staging.size());
    model.transposed_head = h;
    return h;
}

void PolicyState::sync_adapter() {
    if (!adapter_) return;
    for (const auto & lp : pairs_) {
        if (!write_adapter_weight(adapter_, lp)) throw CodedError("ERR_INTERNAL", "the live adapter lacks " + lp.base_name);
    }
}

PromptInputs PolicyState::prompt_inputs(const std::vector<ImageInput> & images, const TrainGroup & group) {
    std::unordered_map<std::string, std::vector<float>> cache;
    int encodes = 0;
    return prepare_prompt(images, group, cache, encodes);
}

PromptInputs PolicyState::prepare_prompt(const std::vector<ImageInput> & images, const TrainGroup & group,
                                         std::unordered_map<std::string, std::vector<float>> & cache, int & encodes) {
    if (!group.prompt_tokens.empty()) {
        // Token ids given directly (text only): no tokenizer, no mtmd (a text-only model has none).
        if (!group.images.empty()) throw CodedError("ERR_INVALID_ARG", "a prompt given as token ids cannot have images");
        PromptInputs out;
        std::vector<uint8_t> scratch;
        const int P = static_cast<int>(group.prompt_tokens.size());
        out.embd.resize(static_cast<size_t>(P) * lm_.n_embd);
        for (int i = 0; i < P; ++i) {
            const int32_t t = group.prompt_tokens[i];
            if (t < 0 || t >= lm_.n_vocab) throw CodedError("ERR_INVALID_ARG", "prompt token id " + std::to_string(t) + " is outside the vocabulary");
            weight_row(lm_.tok_embd, t, out.embd.data() + static_cast<size_t>(i) * lm_.n_embd, scratch);
        }
        out.is_image.assign(P, 0);
        out.n_tokens = P;
        out.next_pos = P;
        out.pos.assign(lm_.mrope ? 4 * P : P, 0);
        for (int i = 0; i < P; ++i) {
            for (int s = 0; s < (lm_.mrope ? 3 : 1); ++s) out.pos[s * P + i] = i;  // M-RoPE text: t = y = x, z = 0
        }
        return out;
    }
    std::vector<BitmapPtr> owned;
    std::vector<const mtmd_bitmap *> bitmaps;
    for (int idx : group.images) {
        const ImageInput & im = images[idx];
        owned.emplace_back(mtmd_bitmap_init(im.width, im.height, im.rgb.data()));
        mtmd_bitmap_set_id(owned.back().get(), im.key.c_str());
        bitmaps.push_back(owned.back().get());
    }
    ChunksPtr chunks = tokenize_prompt(*model_, group.prompt, bitmaps);
    const int n_embd = lm_.n_embd;
    std::vector<std::array<int32_t, 4>> pos;
    PromptInputs out;
    std::vector<uint8_t> scratch;
    int32_t n_past = 0;
    const size_t n_chunks = mtmd_input_chunks_size(chunks.get());
    for (size_t ci = 0; ci < n_chunks; ++ci) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks.get(), ci);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token * tokens = mtmd_input_chunk_get_tokens_text(chunk, &n);
            for (size_t i = 0; i < n; ++i) {
                out.embd.resize(out.embd.size() + n_embd);
                weight_row(lm_.tok_embd, tokens[i], out.embd.data() + out.embd.size() - n_embd, scratch);
                pos.push_back({n_past, n_past, n_past, 0});
                out.is_image.push_back(0);
                n_past++;
            }
            continue;
        }
        if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_IMAGE) throw CodedError("ERR_UNSUPPORTED_MODEL", "training supports text and image inputs only");
        if (mtmd_decode_use_non_causal(model_->mtmd, chunk)) {
            throw CodedError("ERR_UNSUPPORTED_MODEL", "this model attends to image tokens non-causally, which the training graph does not support");
        }
        const std::string key = mtmd_input_chunk_get_id(chunk) ? mtmd_input_chunk_get_id(chunk) : "";
        const size_t n_tokens = mtmd_input_chunk_get_n_tokens(chunk);
        auto it = cache.find(key);
        if (it == cache.end() || key.empty()) {
            std::lock_guard<std::mutex> lock(model_->encode_mutex);
            if (mtmd_encode_chunk(model_->mtmd, chunk) != 0) throw CodedError("ERR_DECODE", with_log("image encoding failed"));
            const float * embd = mtmd_get_output_embd(model_->mtmd);
            it = cache.insert_or_assign(key, std::vector<float>(embd, embd + n_tokens * n_embd)).first;
            encodes++;
        }
        out.embd.insert(out.embd.end(), it->second.begin(), it->second.end());
        out.is_image.insert(out.is_image.end(), n_tokens, 1);
        if (lm_.mrope) {
            const mtmd_image_tokens * image_tokens = mtmd_input_chunk_get_tokens_image(chunk);
            for (size_t i = 0; i < n_tokens; ++i) {
                // As mtmd_helper_decode_image_chunk: streams (t, y, x, z) of decoder position i.
                const mtmd_decoder_pos dp = mtmd_image_tokens_get_decoder_pos(image_tokens, n_past, i);
                pos.push_back({static_cast<int32_t>(dp.t), static_cast<int32_t>(dp.y), static_cast<int32_t>(dp.x), static_cast<int32_t>(dp.z)});
            }
        } else {
            for (size_t i = 0; i < n_tokens; ++i) pos.push_back({n_past + static_cast<int32_t>(i), 0, 0, 0});
        }
        n_past += static_cast<int32_t>(mtmd_input_chunk_get_n_pos(chunk));
    }
    if (n_chunks == 0 || mtmd_input_chunk_get_type(mtmd_input_chunks_get(chunks.get(), n_chunks - 1)) != MTMD_INPUT_CHUNK_TYPE_TEXT) {
        throw CodedError("ERR_INVALID_ARG", "the prompt must end with text (the assistant turn's opening)");
    }
    out.n_tokens = static_cast<int>(pos.size());
    out.next_pos = n_past;
    const int P = out.n_tokens;
    if (lm_.mrope) {
        out.pos.resize(4 * P);
        for (int i = 0; i < P; ++i)
            for (int s = 0; s < 4; ++s) out.pos[s * P + i] = pos[i][s];
    } else {
        out.pos.resize(P);
        for (int i = 0; i < P; ++i) out.pos[i] = pos[i][0];
    }
    return out;
}

double PolicyState::lr_at(int64_t step, const OptimizerConfig & opt) const {
    // step is 1-based: the step about to be applied.
    if (opt.warmup_steps > 0 && step <= opt.warmup_steps) return opt.lr * static_cast<double>(step) / opt.warmup_steps;
    if (opt.schedule == LrSchedule::cosine && opt.total_steps > opt.warmup_steps) {
        const double progress = std::min(1.0, static_cast<double>(step - opt.warmup_steps) / (opt.total_steps - opt.warmup_steps));
        const double min_lr = opt.lr * opt.min_lr_ratio;
        return min_lr + (opt.lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
    return opt.lr;
}

// The vocabulary head for `rows` hidden states: logits [n_vocab, rows] in head graph 1; graph 2
// turns d logits back into d hidden. d logits share the logits' memory: each row's d logits are
// written over its logits once they have been read (155 MB fewer at 256 rows of Qwen's vocabulary).
// Both graphs stay allocated (separate allocators) until the next call with another row count.
PolicyState::Head & PolicyState::head(int rows) {
    if (head_ && head_->rows == rows) return *head_;
    head_.reset();
    auto h = std::make_unique<Head>();
    h->rows = rows;
    h->ctx = std::make_unique<GgmlCtx>(16, 16);
    ggml_context * ctx = h->ctx->ctx;
    h->hidden = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, lm_.n_embd, rows);
    ggml_set_input(h->hidden);
    h->logits = ggml_mul_mat(ctx, lm_.output, h->hidden);  // [n_vocab, rows]
    ggml_set_output(h->logits);
    h->g1 = ggml_new_graph_custom(ctx, 16, false);
    ggml_build_forward_expand(h->g1, h->logits);
    h->dlogits = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, lm_.n_vocab, rows);
    ggml_set_input(h->dlogits);
    // [n_embd, rows] = W_out^T d logits: out_prod(W_out [n_embd, n_vocab], d logits^T [rows, n_vocab]).
    h->dhidden = output_t_ ? ggml_mul_mat(ctx, output_t_->t, h->dlogits) : ggml_out_prod(ctx, lm_.output, ggml_transpose(ctx, h->dlogits));
    ggml_set_output(h->dhidden);
    h->g2 = ggml_new_graph_custom(ctx, 16, false);
    ggml_build_forward_expand(h->g2, h->dhidden);
    // Only the backward: cuBLAS would dequantize all of W_out for the forward at once (622 MB of BF16
    // scratch for a 3B model), where the OUT_PROD of patch 0003 works through 64 MiB chunks of it.
    declare_frozen_matmul(h->g2, options_.frozen_matmul);
    alloc_graph(head_alloc_, h->g1);
    // Placed before graph 2 is allocated, so its allocator takes d logits as already allocated.
    if (ggml_backend_tensor_alloc(h->logits->buffer, h->dlogits, h->logits->data) != GGML_STATUS_SUCCESS) {
        throw CodedError("ERR_OUT_OF_MEMORY", "could not place the head's d logits");
    }
    alloc_graph(head2_alloc_, h->g2);
    if (on_gpu_) {
        check_supported(backend_, h->g1);
        check_supported(backend_, h->g2);
    }
    head_ = std::move(h);
    return *head_;
}

std::vector<float> PolicyState::forward_hidden(const MicroBatchInputs & in, bool with_lora) {
    GgmlCtx g(graph_size_for(lm_) * 2, graph_size_for(lm_));
    static const std::map<const ggml_tensor *, const LoraPair *> none;
    LmGraph lg = build_lm_graph(g.ctx, lm_, with_lora ? by_base_ : none, lora_scale(), in.rows, in.preds,
                                with_lora && projector_.a ? &projector_ : nullptr);
    ggml_cgraph * gf = ggml_new_graph_custom(g.ctx, graph_size_for(lm_), false);
    ggml_build_forward_expand(gf, lg.hidden);
    declare_frozen_matmul(gf, options_.frozen_matmul);
    alloc_graph(trunk_alloc_, gf);
    if (on_gpu_) check_supported(backend_, gf);
    set_inputs(lg.in, in);
    compute_graph(gf);
    std::vector<float> hidden(static_cast<size_t>(in.preds) * lm_.n_embd);
    ggml_backend_tensor_get(lg.hidden, hidden.data(), 0, hidden.size() * sizeof(float));
    return hidden;
}

void PolicyState::set_inputs(const LmGraphInputs & t, const MicroBatchInputs & in) {
    ggml_backend_tensor_set(t.embd, in.embd.data(), 0, in.embd.size() * sizeof(float));
    ggml_backend_tensor_set(t.pos, in.pos.data(), 0, in.pos.size() * sizeof(int32_t));
    ggml_backend_tensor_set(t.mask, in.mask.data(), 0, in.mask.size() * sizeof(float));
    ggml_backend_tensor_set(t.out_rows, in.out_rows.data(), 0, in.out_rows.size() * sizeof(int32_t));
    if (t.image_rows) ggml_backend_tensor_set(t.image_rows, in.image_rows.data(), 0, in.image_rows.size() * sizeof(float));
}

// Packs a micro-batch: each unit is its prompt rows, then for each of its samples the response
// tokens 0..L-2 as inputs (token L-1 is only ever predicted). Sample rows see their unit's prompt
// and their own earlier rows; positions continue from the prompt's next position for every sample.
PolicyState::MicroBatchInputs PolicyState::pack(const MicroBatch & mb, const std::vector<PromptInputs> & prompts, const TrainBatch & batch) {
    MicroBatchInputs in;
    in.rows = mb.rows;
    in.preds = mb.preds;
    const int T = mb.rows;
    const int n_embd = lm_.n_embd;
    in.embd.resize(static_cast<size_t>(T) * n_embd);
    in.pos.assign(lm_.mrope ? 4 * T : T, 0);
    in.mask.assign(static_cast<size_t>(T) * T, -INFINITY);
    in.image_rows.assign(T, 0.0f);
    std::vector<int> row_unit(T), row_sample(T);
    std::vector<uint8_t> scratch;
    int row = 0;
    for (size_t u = 0; u < mb.units.size(); ++u) {
        const auto & unit = mb.units[u];
        const PromptInputs & p = prompts[unit.group];
        const TrainGroup & grp = batch.groups[unit.group];
        const int prompt_row0 = row;
        std::memcpy(in.embd.data() + static_cast<size_t>(row) * n_embd, p.embd.data(), p.embd.size() * sizeof(float));
        for (int i = 0; i < p.n_tokens; ++i, ++row) {
            if (lm_.mrope) {
                for (int s = 0; s < 4; ++s) in.pos[s * T + row] = p.pos[s * p.n_tokens + i];
            } else {
                in.pos[row] = p.pos[i];
            }
            row_unit[row] = static_cast<int>(u);
            row_sample[row] = -1;
            in.image_rows[row] = p.is_image[i] ? 1.0f : 0.0f;
        }
        const int last_prompt_row = row - 1;
        for (int si : unit.samples) {
            const TrainSample & s = grp.samples[si];
            const int L = static_cast<int>(s.tokens.size());
            const int first_row = row;
            for (int j = 0; j + 1 < L; ++j, ++row) {
                weight_row(lm_.tok_embd, s.tokens[j], in.embd.data() + static_cast<size_t>(row) * n_embd, scratch);
                const int32_t position = p.next_pos + j;
                if (lm_.mrope) {
                    for (int st = 0; st < 3; ++st) in.pos[st * T + row] = position;
                    in.pos[3 * T + row] = 0;
                } else {
                    in.pos[row] = position;
                }
                row_unit[row] = static_cast<int>(u);
                row_sample[row] = si;
            }
            for (int j = 0; j < L; ++j) {
                in.out_rows.push_back(j == 0 ? last_prompt_row : first_row + j - 1);
                in.pred_group.push_back(unit.group);
                in.pred_sample.push_back(si);
                in.pred_index.push_back(j);
                in.pred_target.push_back(s.tokens[j]);
            }
        }
        (void)prompt_row0;
    }
    for (int q = 0; q < T; ++q) {
        float * m = in.mask.data() + static_cast<size_t>(q) * T;
        for (int k = 0; k <= q; ++k) {
            if (row_unit[k] == row_unit[q] && (row_sample[k] < 0 || row_sample[k] == row_sample[q])) m[k] = 0.0f;
        }
    }
    return in;
}

RunOutputs PolicyState::run(const TrainBatch & batch, const LossConfig & loss, const OptimizerConfig & opt, bool apply, bool want_grads) {
    const auto t0 = Clock::now();
    RunOutputs out;
    if (batch.groups.empty()) throw CodedError("ERR_INVALID_ARG", "the batch has no groups");
    // Validation first: nothing is computed for a batch that would fail half-way.
    std::vector<int> seq_base(batch.groups.size());
    int n_seq = 0;
    int64_t n_tok = 0;
    for (size_t g = 0; g < batch.groups.size(); ++g) {
        const TrainGroup & grp = batch.groups[g];
        const std::string where = "group " + std::to_string(g);
        if (grp.samples.empty()) throw CodedError("ERR_INVALID_ARG", where + " has no samples");
        for (int idx : grp.images) {
            if (idx < 0 || static_cast<size_t>(idx) >= batch.images.size()) throw CodedError("ERR_INVALID_ARG", where + ": image index out of range");
        }
        seq_base[g] = n_seq;
        for (size_t s = 0; s < grp.samples.size(); ++s) {
            const TrainSample & smp = grp.samples[s];
            const std::string w = where + " sample " + std::to_string(s);
            if (smp.tokens.empty()) throw CodedError("ERR_INVALID_ARG", w + " has no tokens");
            for (int32_t t : smp.tokens) {
                if (t < 0 || t >= lm_.n_vocab) throw CodedError("ERR_INVALID_ARG", w + ": token id " + std::to_string(t) + " is outside the vocabulary");
            }
            if (!smp.old_logprobs.empty() && smp.old_logprobs.size() != smp.tokens.size()) {
                throw CodedError("ERR_INVALID_ARG", w + ": " + std::to_string(smp.old_logprobs.size()) + " log-probs for " +
                                                        std::to_string(smp.tokens.size()) + " tokens");
            }
            if (!std::isfinite(smp.advantage)) throw CodedError("ERR_INVALID_ARG", w + ": the advantage is not finite");
            n_seq++;
            n_tok += static_cast<int64_t>(smp.tokens.size());
        }
    }
    std::vector<PromptInputs> prompts(batch.groups.size());
    std::unordered_map<std::string, std::vector<float>> cache;
    int encodes = 0;
    for (size_t g = 0; g < batch.groups.size(); ++g) {
        prompts[g] = prepare_prompt(batch.images, batch.groups[g], cache, encodes);
        for (size_t s = 0; s < batch.groups[g].samples.size(); ++s) {
            const int len = prompts[g].next_pos + static_cast<int>(batch.groups[g].samples[s].tokens.size());
            if (len > options_.context_size) {
                throw CodedError("ERR_PROMPT_TOO_LONG", "group " + std::to_string(g) + " sample " + std::to_string(s) + ": prompt and response take " +
                                                            std::to_string(len) + " positions, over the policy's context of " +
                                                            std::to_string(options_.context_size));
            }
        }
    }

    // Aggregation weights: each token's share of the loss.
    std::vector<double> seq_weight(n_seq);
    for (size_t g = 0; g < batch.groups.size(); ++g) {
        for (size_t s = 0; s < batch.groups[g].samples.size(); ++s) {
            const double L = static_cast<double>(batch.groups[g].samples[s].tokens.size());
            seq_weight[seq_base[g] + s] = loss.aggregation == LossAggregation::token_mean ? 1.0 / static_cast<double>(n_tok) : 1.0 / (n_seq * L);
        }
    }

    // Micro-batches: groups in order, a group split into units when it exceeds the row budget.
    std::vector<MicroBatch> mbs(1);
    for (size_t g = 0; g < batch.groups.size(); ++g) {
        const int P = prompts[g].n_tokens;
        MicroBatch::Unit unit;
        unit.group = static_cast<int>(g);
        unit.rows = P;
        auto flush_unit = [&] {
            if (unit.samples.empty()) return;
            if (mbs.back().rows > 0 && mbs.back().rows + unit.rows > options_.micro_batch_tokens) mbs.emplace_back();
            mbs.back().rows += unit.rows;
            for (int si : unit.samples) mbs.back().preds += static_cast<int>(batch.groups[g].samples[si].tokens.size());
            mbs.back().units.push_back(unit);
            unit.samples.clear();
            unit.rows = P;
        };
        for (size_t s = 0; s < batch.groups[g].samples.size(); ++s) {
            const int extra = static_cast<int>(batch.groups[g].samples[s].tokens.size()) - 1;
            if (!unit.samples.empty() && unit.rows + extra > options_.micro_batch_tokens) flush_unit();
            unit.samples.push_back(static_cast<int>(s));
            unit.rows += extra;
        }
        flush_unit();
    }

    const bool backward = apply || want_grads;
    if (backward) {
        ggml_backend_buffer_clear(grad_buf_, 0);
    }
    out.logprobs.resize(n_seq);
    if (loss.kl_coef != 0) out.ref_logprobs.resize(n_seq);
    for (size_t g = 0; g < batch.groups.size(); ++g) {
        for (size_t s = 0; s < batch.groups[g].samples.size(); ++s) {
            const size_t L = batch.groups[g].samples[s].tokens.size();
            out.logprobs[seq_base[g] + s].assign(L, 0.0f);
            if (loss.kl_coef != 0) out.ref_logprobs[seq_base[g] + s].assign(L, 0.0f);
        }
    }

    double sum_loss = 0, sum_pg = 0, sum_kl = 0;
    int64_t n_clipped = 0, n_dual = 0;
    for (const MicroBatch & mb : mbs) {
        const MicroBatchInputs in = pack(mb, prompts, batch);
        const int R = in.preds;
        std::vector<double> ref_logp(R, 0.0);
        const auto t_ref = Clock::now();
        if (loss.kl_coef != 0) {
            const std::vector<float> hidden_ref = forward_hidden(in, /* with_lora */ false);
            head_logprobs(hidden_ref.data(), R, in.pred_target.data(), [&](int r0, int rows, const double * logp, double *) {
                std::copy(logp, logp + rows, ref_logp.begin() + r0);
                return false;
            });
            out.stats.reference_seconds += seconds_between(t_ref, Clock::now());
        }

        GgmlCtx g(graph_size_for(lm_) * 4, graph_size_for(lm_));
        LmGraph lg = build_lm_graph(g.ctx, lm_, by_base_, lora_scale(), in.rows, R, projector_.a ? &projector_ : nullptr);
        ggml_tensor * dhidden = nullptr;
        ggml_tensor * target = lg.hidden;
        if (backward) {
            // loss' = sum(hidden * dhidden): its gradient with respect to hidden is exactly dhidden,
            // the head's d loss / d hidden computed below, so ggml's backward starts from there.
            dhidden = ggml_new_tensor_2d(g.ctx, GGML_TYPE_F32, lm_.n_embd, R);
            ggml_set_input(dhidden);
            target = ggml_sum(g.ctx, ggml_mul(g.ctx, lg.hidden, dhidden));
            ggml_set_loss(target);
        }
        ggml_cgraph * gb = ggml_new_graph_custom(g.ctx, graph_size_for(lm_), backward);
        ggml_build_forward_expand(gb, target);
        const int n_fwd = ggml_graph_n_nodes(gb);
        ggml_cgraph * gf = gb;
        ggml_cgraph * gbw = nullptr;
        if (backward) {
            std::vector<ggml_tensor *> accs(n_fwd, nullptr);
            for (int i = 0; i < n_fwd; ++i) {
                ggml_tensor * node = ggml_graph_node(gb, i);
                if (node == target) accs[i] = loss_seed_;
                for (size_t p = 0; p < params_.size(); ++p) {
                    if (node == params_[p]) accs[i] = grad_acc_[p];
                }
            }
            ggml_build_backward_expand(g.ctx, gb, accs.data());
            // The forward part runs first, then the head (outside ggml's autograd), then the rest.
            gf = ggml_new_graph_custom(g.ctx, graph_size_for(lm_), false);
            gbw = ggml_new_graph_custom(g.ctx, graph_size_for(lm_), false);
            for (int i = 0; i < ggml_graph_n_nodes(gb); ++i) ggml_graph_add_node(i < n_fwd ? gf : gbw, ggml_graph_node(gb, i));
        }
        declare_frozen_matmul(gb, options_.frozen_matmul);
        alloc_graph(trunk_alloc_, gb);
        if (on_gpu_) check_supported(backend_, gb);
        set_inputs(lg.in, in);
        if (dhidden) ggml_backend_tensor_memset(dhidden, 0, 0, ggml_nbytes(dhidden));  // on the device: no upload of zeros
        const auto t_fwd = Clock::now();
        compute_graph(gf);
        std::vector<float> hidden(static_cast<size_t>(R) * lm_.n_embd);
        ggml_backend_tensor_get(lg.hidden, hidden.data(), 0, hidden.size() * sizeof(float));
        std::vector<float> dh(backward ? hidden.size() : 0);
        const auto t_head = Clock::now();
        out.stats.forward_seconds += seconds_between(t_fwd, t_head);

        head_logprobs(hidden.data(), R, in.pred_target.data(), [&](int r0, int rows, const double * logp, double * w) {
            for (int i = 0; i < rows; ++i) {
                const int r = r0 + i;
                const TrainSample & smp = batch.groups[in.pred_group[r]].samples[in.pred_sample[r]];
                const double old = smp.old_logprobs.empty() ? logp[i] : smp.old_logprobs[in.pred_index[r]];
                const TokenLoss term = grpo_token_loss(logp[i], old, ref_logp[r], smp.advantage, loss);
                const int seq = seq_base[in.pred_group[r]] + in.pred_sample[r];
                const double weight = seq_weight[seq];
                out.logprobs[seq][in.pred_index[r]] = static_cast<float>(logp[i]);
                if (loss.kl_coef != 0) out.ref_logprobs[seq][in.pred_index[r]] = static_cast<float>(ref_logp[r]);
                sum_loss += weight * term.total;
                sum_pg += weight * term.pg;
                sum_kl += weight * term.kl;
                n_clipped += term.clipped;
                n_dual += term.dual_clipped;
                // d loss / d logits = w (onehot(target) - softmax), w = d loss / d logp * aggregation weight.
                w[i] = term.dtotal_dlogp * weight;
            }
            return backward;  // on: graph 2 writes d hidden for these rows
        }, dh.empty() ? nullptr : dh.data());

        const auto t_bwd = Clock::now();
        out.stats.head_seconds += seconds_between(t_head, t_bwd);
        if (backward) {
            ggml_backend_tensor_set(dhidden, dh.data(), 0, dh.size() * sizeof(float));
            compute_graph(gbw);
            out.stats.backward_seconds += seconds_between(t_bwd, Clock::now());
        }
        out.stats.micro_batches++;
        out.stats.packed_rows += in.rows;
    }

    out.stats.tokens = n_tok;
    out.stats.sequences = n_seq;
    out.stats.image_encodes = encodes;
    out.stats.loss = sum_loss;
    out.stats.pg_loss = sum_pg;
    out.stats.kl = sum_kl;
    out.stats.clip_fraction = static_cast<double>(n_clipped) / static_cast<double>(n_tok);
    out.stats.dual_clip_fraction = static_cast<double>(n_dual) / static_cast<double>(n_tok);

    const auto t_opt = Clock::now();
    if (backward) {
        // Host pointers on the CPU; device pointers (tensor->data of a CUDA buffer) on the GPU,
        // where the moments are GPU tensors too and our CUDA kernels run (native/cuda).
        std::vector<AdamWTensor> ts(params_.size());
        for (size_t p = 0; p < params_.size(); ++p) {
            ts[p] = {static_cast<float *>(params_[p]->data), static_cast<const float *>(grad_acc_[p]->data),
                     on_gpu_ ? static_cast<float *>(moment_m_[p]->data) : adam_m_[p].data(),
                     on_gpu_ ? static_cast<float *>(moment_v_[p]->data) : adam_v_[p].data(), ggml_nelements(params_[p])};
        }
        double sumsq = 0;
        if (on_gpu_) {
#ifdef VISPLAY_CUDA
            ggml_backend_synchronize(backend_);  // ggml's stream is non-blocking: the gradients are complete first
            sumsq = grad_sum_squares_cuda(ts.data(), static_cast<int>(ts.size()), nullptr);
#endif
        } else {
            sumsq = grad_sum_squares_cpu(ts.data(), static_cast<int>(ts.size()), n_threads_);
        }
        out.stats.grad_norm = std::sqrt(sumsq);
        if (want_grads) {
            for (size_t p = 0; p < params_.size(); ++p) {
                out.grads.emplace_back();
                tensor_to_host(grad_acc_[p], out.grads.back());
            }
        }
        if (apply) {
            if (!std::isfinite(sum_loss) || !std::isfinite(sumsq)) {
                // Never apply a non-finite update: the step is skipped, counted and reported.
                skipped_steps_++;
                out.stats.skip_reason = !std::isfinite(sum_loss) ? "the loss is not finite" : "the gradient is not finite";
            } else {
                const int64_t next = step_ + 1;
                AdamWConfig cfg;
                cfg.lr = lr_at(next, opt);
                cfg.beta1 = opt.beta1;
                cfg.beta2 = opt.beta2;
                cfg.eps = opt.eps;
                cfg.weight_decay = opt.weight_decay;
                cfg.step = next;
                // torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6), capped at 1.
                cfg.grad_scale = opt.max_grad_norm > 0 ? grad_clip_scale(sumsq, opt.max_grad_norm) : 1.0f;
                if (on_gpu_) {
#ifdef VISPLAY_CUDA
                    lora_adamw_cuda(ts.data(), static_cast<int>(ts.size()), cfg, nullptr);
                    cuda_stream_synchronize(nullptr);  // done before ggml's stream reads the parameters
#endif
                } else {
                    lora_adamw_cpu(ts.data(), static_cast<int>(ts.size()), cfg, n_threads_);
                }
                step_ = next;
                out.stats.lr = cfg.lr;
                out.stats.applied = true;
                sync_adapter();
            }
        }
    }
    out.stats.step = step_;
    out.stats.skipped_steps = skipped_steps_;
    if (backward) out.stats.optimizer_seconds = seconds_between(t_opt, Clock::now());
    trunk_peak_ = std::max(trunk_peak_, ggml_gallocr_get_buffer_size(trunk_alloc_, 0));
    head_peak_ = std::max(head_peak_, ggml_gallocr_get_buffer_size(head_alloc_, 0) + ggml_gallocr_get_buffer_size(head2_alloc_, 0));
    if (options_.release_buffers) new_allocators();
    out.stats.seconds = seconds_between(t0, Clock::now());
    return out;
}

// The vocabulary head over `rows` hidden states for the loss, in chunks of head_chunk rows: only
// each row's logp = logits[target] - logsumexp(logits) leaves the head. fn(r0, n, logp, w) sees a
// chunk's log-probs; to go on with the backward pass it fills w[i] = d loss / d logp (times the
// row's aggregation weight) and returns true, and then d logits = w (onehot - softmax) and graph 2
// writes the rows' d hidden into dhidden. On the GPU our CUDA kernels do the log-softmax and d logits
// in GPU memory (8 bytes a row come down, 4 go up); on the CPU the same maths runs on n_threads_.
void PolicyState::head_logprobs(const float * hidden, int rows, const int32_t * targets,
                                const std::function<bool(int, int, const double *, double *)> & fn, float * dhidden) {
    std::vector<double> logp, w;
    std::vector<float> row_max;  // CPU: each row's maximum, kept from the log-sum-exp for d logits
    for (int r0 = 0; r0 < rows; r0 += options_.head_chunk) {
        const int n = std::min(options_.head_chunk, rows - r0);
        Head & h = head(n);
        ggml_backend_tensor_set(h.hidden, hidden + static_cast<size_t>(r0) * lm_.n_embd, 0, static_cast<size_t>(n) * lm_.n_embd * sizeof(float));
        compute_graph(h.g1);
        logp.assign(n, 0.0);
        w.assign(n, 0.0);
        const int32_t * t = targets + r0;
        float * logits = static_cast<float *>(h.logits->data);  // [n][n_vocab]; d logits are written over it
        if (on_gpu_) {
#ifdef VISPLAY_CUDA
            ggml_backend_tensor_set(head_io_.targets, t, 0, static_cast<size_t>(n) * sizeof(int32_t));
            // ggml's graph computation returned synchronized; ours runs on the default stream and
            // is waited for before ggml's stream touches the buffers again.
            head_logsumexp_cuda(logits, n, lm_.n_vocab, static_cast<const int32_t *>(head_io_.targets->data),
                                static_cast<float *>(head_io_.lse->data), static_cast<float *>(head_io_.target_logit->data), nullptr);
            cuda_stream_synchronize(nullptr);
            std::vector<float> lse(n), target_logit(n);
            ggml_backend_tensor_get(head_io_.lse, lse.data(), 0, static_cast<size_t>(n) * sizeof(float));
            ggml_backend_tensor_get(head_io_.target_logit, target_logit.data(), 0, static_cast<size_t>(n) * sizeof(float));
            for (int i = 0; i < n; ++i) logp[i] = static_cast<double>(target_logit[i]) - static_cast<double>(lse[i]);
#endif
        } else {
            row_max.resize(n);
            parallel_for(n, n_threads_, [&](int i) {
                const float * l = logits + static_cast<size_t>(i) * lm_.n_vocab;
                logp[i] = l[t[i]] - logsumexp(l, lm_.n_vocab, &row_max[i]);
            });
        }
        if (!fn(r0, n, logp.data(), w.data()) || !dhidden) continue;
        if (on_gpu_) {
#ifdef VISPLAY_CUDA
            const std::vector<float> wf(w.begin(), w.end());
            ggml_backend_tensor_set(head_io_.w, wf.data(), 0, static_cast<size_t>(n) * sizeof(float));
            head_softmax_grad_cuda(logits, n, lm_.n_vocab, static_cast<const int32_t *>(head_io_.targets->data),
                                   static_cast<const float *>(head_io_.lse->data), static_cast<const float *>(head_io_.w->data), logits, nullptr);
            cuda_stream_synchronize(nullptr);
#endif
        } else {
            parallel_for(n, n_threads_, [&](int i) {
                float * d = logits + static_cast<size_t>(i) * lm_.n_vocab;  // the row's logits, overwritten in place
                const double s = sum_exp(d, lm_.n_vocab, row_max[i], 1.0f, d);
                const float k = static_cast<float>(-w[i] / s);
#pragma omp simd
                for (int32_t v = 0; v < lm_.n_vocab; ++v) d[v] *= k;
                d[t[i]] += static_cast<float>(w[i]);
            });
        }
        compute_graph(h.g2);
        ggml_backend_tensor_get(h.dhidden, dhidden + static_cast<size_t>(r0) * lm_.n_embd, 0, static_cast<size_t>(n) * lm_.n_embd * sizeof(float));
    }
}

// The full logits of `rows` hidden states, chunk by chunk: fn(r0, n, logits) sees [n][n_vocab]
// floats in host memory (on the GPU copied down through a pinned buffer, made on first use).
void PolicyState::for_each_head_chunk(const float * hidden, int rows, const std::function<void(int, int, const float *)> & fn) {
    for (int r0 = 0; r0 < rows; r0 += options_.head_chunk) {
        const int n = std::min(options_.head_chunk, rows - r0);
        Head & h = head(n);
        ggml_backend_tensor_set(h.hidden, hidden + static_cast<size_t>(r0) * lm_.n_embd, 0, static_cast<size_t>(n) * lm_.n_embd * sizeof(float));
        compute_graph(h.g1);
        const float * logits = static_cast<const float *>(h.logits->data);
        if (on_gpu_) {
            const size_t bytes = ggml_nbytes(h.logits);
            if (!h.staging && h.staging_vec.empty()) {
                ggml_backend_buffer_type_t pinned = ggml_backend_dev_host_buffer_type(ggml_backend_get_device(backend_));
                if (pinned) h.staging = ggml_backend_buft_alloc_buffer(pinned, bytes);
                if (!h.staging) h.staging_vec.resize(bytes / sizeof(float));
            }
            float * host = h.staging ? static_cast<float *>(ggml_backend_buffer_get_base(h.staging)) : h.staging_vec.data();
            ggml_backend_tensor_get(h.logits, host, 0, bytes);
            logits = host;
        }
        fn(r0, n, logits);
    }
}

std::vector<float> PolicyState::logits(const std::vector<ImageInput> & images, const TrainGroup & group, const std::vector<int32_t> & tokens) {
    std::unordered_map<std::string, std::vector<float>> cache;
    int encodes = 0;
    const PromptInputs p = prepare_prompt(images, group, cache, encodes);
    // One unit, prompt then the tokens; every row is an output row.
    TrainBatch batch;
    TrainGroup g = group;
    g.samples.clear();
    TrainSample s;
    s.tokens = tokens;
    s.tokens.push_back(0);  // a dummy last token: inputs are tokens[0..L-2]
    g.samples.push_back(s);
    batch.groups.push_back(g);
    MicroBatch mb;
    MicroBatch::Unit u;
    u.group = 0;
    u.samples = {0};
    u.rows = p.n_tokens + static_cast<int>(tokens.size());
    mb.units.push_back(u);
    mb.rows = u.rows;
    mb.preds = static_cast<int>(s.tokens.size());
    MicroBatchInputs in = pack(mb, {p}, batch);
    // Output every packed row: rows 0..T-1 in order.
    in.out_rows.resize(in.rows);
    for (int r = 0; r < in.rows; ++r) in.out_rows[r] = r;
    in.preds = in.rows;
    const std::vector<float> hidden = forward_hidden(in, true);
    std::vector<float> out(static_cast<size_t>(in.rows) * lm_.n_vocab);
    for_each_head_chunk(hidden.data(), in.rows, [&](int r0, int n, const float * l) {
        std::memcpy(out.data() + static_cast<size_t>(r0) * lm_.n_vocab, l, static_cast<size_t>(n) * lm_.n_vocab * sizeof(float));
    });
    return out;
}

std::vector<std::string> PolicyState::tensor_names() const {
    std::vector<std::string> names;
    for (ggml_tensor * t : params_) names.emplace_back(ggml_get_name(t));
    return names;
}

const ggml_tensor * PolicyState::find_param(const std::string & name) const {
    for (ggml_tensor * t : params_) {
        if (name == ggml_get_name(t)) return t;
    }
    throw CodedError("ERR_INVALID_ARG", "no LoRA tensor named '" + name + "'");
}

std::vector<int64_t> PolicyState::tensor_shape(const std::string & name) const {
    const ggml_tensor * t = find_param(name);
    return {t->ne[0], t->ne[1]};
}

std::vector<float> PolicyState::get_tensor(const std::string & name) const {
    std::vector<float> out;
    tensor_to_host(find_param(name), out);
    return out;
}

void PolicyState::set_tensor(const std::string & name, const std::vector<float> & data) {
    const ggml_tensor * t = find_param(name);
    if (static_cast<int64_t>(data.size()) != ggml_nelements(t)) {
        throw CodedError("ERR_INVALID_ARG", "tensor '" + name + "' holds " + std::to_string(ggml_nelements(t)) + " values, not " + std::to_string(data.size()));
    }
    ggml_backend_tensor_set(const_cast<ggml_tensor *>(t), data.data(), 0, data.size() * sizeof(float));
    sync_adapter();
}

void PolicyState::save(const std::string & dir, const OptimizerConfig & opt) const {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw CodedError("ERR_OUTPUT", "cannot create the folder " + dir + ": " + ec.message());
    // The projector file first: a save is complete when adapter.gguf and optimizer.gguf agree on
    // the step, and restore checks projector.gguf's step against them as well.
    const std::string projector_path = (std::filesystem::path(dir) / kProjectorFile).string();
    if (projector_.a) {
        write_projector_file(projector_path, projector_, adapter_fingerprint(lm_), step_);
    } else {
        std::filesystem::remove(projector_path, ec);  // a stale one from an earlier save to this folder
    }
    write_adapter_file((std::filesystem::path(dir) / kAdapterFile).string(), lm_.arch, options_, pairs_, adapter_fingerprint(lm_), step_);
    if (on_gpu_) {  // the moments live on the GPU: bring them to the host vectors that are saved
        for (size_t p = 0; p < params_.size(); ++p) {
            tensor_to_host(moment_m_[p], adam_m_[p]);
            tensor_to_host(moment_v_[p], adam_v_[p]);
        }
    }
    OptimizerState st;
    st.step = step_;
    st.skipped_steps = skipped_steps_;
    std::memcpy(st.rng, rng_state_, sizeof(st.rng));
    st.opt = opt;
    for (size_t p = 0; p < params_.size(); ++p) st.tensors.push_back({ggml_get_name(params_[p]), &adam_m_[p], &adam_v_[p]});
    write_optimizer_file((std::filesystem::path(dir) / kOptimizerFile).string(), st, adapter_fingerprint(lm_));
}

void PolicyState::restore(const std::string & dir) {
    const std::string adapter_path = (std::filesystem::path(dir) / kAdapterFile).string();
    const int64_t adapter_step = read_adapter_into(adapter_path, lm_.arch, adapter_fingerprint(lm_), pairs_);
    LoadedOptimizer lo = read_optimizer_file((std::filesystem::path(dir) / kOptimizerFile).string(), adapter_fingerprint(lm_));
    if (lo.step != adapter_step) {
        throw CodedError("ERR_CHECKPOINT", "the adapter (step " + std::to_string(adapter_step) + ") and optimizer state (step " +
                                               std::to_string(lo.step) + ") in " + dir + " are from different saves");
    }
    if (projector_.a) {
        const int64_t projector_step = read_projector_into((std::filesystem::path(dir) / kProjectorFile).string(), adapter_fingerprint(lm_), projector_);
        if (projector_step != adapter_step) {
            throw CodedError("ERR_CHECKPOINT", "the projector adapter (step " + std::to_string(projector_step) + ") and the adapter (step " +
                                                   std::to_string(adapter_step) + ") in " + dir + " are from different saves");
        }
    }
    for (size_t p = 0; p < params_.size(); ++p) {
        auto it = lo.moments.find(ggml_get_name(params_[p]));
        if (it == lo.moments.end() || it->second.first.size() != adam_m_[p].size()) {
            throw CodedError("ERR_CHECKPOINT", "the optimizer state lacks moments for " + std::string(ggml_get_name(params_[p])));
        }
        adam_m_[p] = it->second.first;
        adam_v_[p] = it->second.second;
        if (on_gpu_) {
            ggml_backend_tensor_set(moment_m_[p], adam_m_[p].data(), 0, ggml_nbytes(moment_m_[p]));
            ggml_backend_tensor_set(moment_v_[p], adam_v_[p].data(), 0, ggml_nbytes(moment_v_[p]));
        }
    }
    step_ = lo.step;
    skipped_steps_ = lo.skipped_steps;
    std::memcpy(rng_state_, lo.rng, sizeof(rng_state_));
    sync_adapter();
}

PolicyOptions PolicyState::read_saved_options(const std::string & dir, const PolicyOptions & base) {
    return read_adapter_options((std::filesystem::path(dir) / kAdapterFile).string(), base);
}

}  // namespace visplay
