// Policy: LoRA adapters over one loaded model, trained natively with GRPO.
//
// One step (PolicyState::run) for a batch of groups (a prompt with its images, and the sampled
// responses of that prompt with their advantages):
//   1. each prompt is tokenized by mtmd, its images encoded once, and turned into input
//      embeddings and (M-)RoPE positions exactly as llama.cpp decodes them;
//   2. groups are packed into micro-batches: the prompt once, then every response after it, with a
//      mask that lets each response see the prompt and itself only (the prompt's forward and
//      backward are shared by the whole group);
//   3. per micro-batch: a reference forward with LoRA off (when kl_coef > 0), the forward with
//      LoRA, the vocabulary head in row chunks (logits -> log-probs -> GRPO loss and its derivative,
//      in double precision), then ggml's backward pass into gradient accumulators of A and B only;
//   4. global grad-norm clip and the fused AdamW update (native/kernels), then the live
//      llama.cpp adapter that rollouts use is refreshed in place.
//
// Node-free (compiled into visplay_core, which the C++ test executables link): the N-API wrapper
// is policy_binding.cpp, declared at the end under !VISPLAY_NODE_FREE.
//
// Where it runs: on the CPU backend when the language model's weights are in host memory, and on
// the GPU backend that holds them when llama.cpp offloaded every layer and the output head
// (gpu_layers > n_layer). Then the LoRA tensors, their gradients and AdamW moments live in GPU
// memory too, the optimizer is our CUDA kernel (native/cuda), and only the vocabulary head's
// logits rows cross to the host for the loss (docs/gpu.md).
#pragma once

#include "grpo_loss.h"
#include "lm_graph.h"
#include "model_core.h"
#include "rollout_core.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"

#include <atomic>
#include <functional>
#include <unordered_map>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct llama_adapter_lora;

namespace visplay {

struct GgmlCtx;

// The vocabulary head transposed, [n_vocab, n_embd], so the CPU head's backward is a plain matmul
// (d hidden = W_out^T d logits) instead of ggml's slow out_prod. Shared by the policies of a model.
struct TransposedHead {
    ggml_context * ctx = nullptr;
    ggml_backend_buffer_t buf = nullptr;
    ggml_tensor * t = nullptr;
    ~TransposedHead();
};

struct PolicyOptions {
    int rank = 8;
    float alpha = 16.0f;
    std::vector<std::string> targets;  // module names (lora_module_names()); empty: all
    uint64_t seed = 0;
    int threads = 0;
    int micro_batch_tokens = 2048;     // packed rows per micro-batch graph (a group larger than this is split)
    int head_chunk = 256;              // vocabulary-head rows per chunk (bounds logits memory: chunk * n_vocab floats)
    int context_size = 0;              // longest prompt + response; 0: the model's training context
    // Rank of a trainable low-rank update of the image rows (the projector's output), 0: none. It is
    // not part of the llama.cpp adapter: such a policy cannot drive rollouts until it is merged into
    // the mmproj (merge_projector). See build_lm_graph.
    int projector_rank = 0;
    // How the head's backward forms d hidden = W_out^T d logits. transposed: a matmul by a transposed
    // copy of W_out kept for the purpose (F32, or F16 beyond 512 MiB: 622 MB for a 3B model);
    // out_prod: ggml's out_prod straight from W_out, no copy (slow on the CPU, where it is used
    // only to test the GPU's graph; on the GPU it is ggml-cuda's OUT_PROD with our patch 0003 for
    // quantized W_out). automatic: out_prod on the GPU, transposed on the CPU.
    enum class HeadBackward { automatic, transposed, out_prod } head_backward = HeadBackward::automatic;
    // Free the training graphs' compute buffers at the end of every run() (they are allocated again
    // by the next): the memory is the rollouts' between steps, at the cost of one allocation per
    // buffer and step. For a GPU that must hold a round's rollouts and training in turn.
    bool release_buffers = false;
    // The products with frozen quantized weights on a GPU (the trunk's linear layers forward and
    // backward, the head's backward; the head's forward keeps MMQ, which needs no copy of W_out). bf16: the weight dequantized to BF16 and the activations or gradients
    // rounded to BF16, tensor cores with F32 accumulation, as bf16 training in PyTorch (declared with
    // ggml_prec_set_src; patches 0003 and 0004 make ggml-cuda honour it). llama: llama.cpp's own
    // kernels, as rollouts use them: MMQ forward (activations rounded to 8 bits per block of 32),
    // dequantize to F32 and TF32 SGEMM backward. The CPU backend computes both the same way.
    enum class FrozenMatmul { bf16, llama } frozen_matmul = FrozenMatmul::bf16;
};

// What the trainer holds in its backend's memory, in bytes; the compute buffers at the largest
// they have been at the end of a run() (with release_buffers they are freed after it).
struct PolicyMemory {
    size_t lora_state = 0;       // LoRA A/B, gradient accumulators, (GPU) AdamW moments, head I/O
    size_t transposed_head = 0;  // the CPU head's transposed W_out (shared by a model's policies)
    size_t trunk = 0;            // the micro-batch graph: activations kept for the backward pass, gradients
    size_t head = 0;             // the head chunk's logits (d logits share them) and d hidden
};

enum class LrSchedule { constant, cosine };

struct OptimizerConfig {
    double lr = 1e-6;
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
    double max_grad_norm = 1.0;        // 0: no clipping
    LrSchedule schedule = LrSchedule::constant;
    int64_t warmup_steps = 0;
    int64_t total_steps = 0;           // cosine decays to min_lr_ratio * lr at total_steps
    double min_lr_ratio = 0.0;
};

struct TrainSample {
    std::vector<int32_t> tokens;       // the response, L >= 1 tokens
    std::vector<float> old_logprobs;   // L values, or empty: the current policy's own (ρ = 1)
    double advantage = 0;
};

struct TrainGroup {
    std::string prompt;                // templated prompt with image markers
    std::vector<int32_t> prompt_tokens;  // or the prompt as token ids (text only; prompt and images unused)
    std::vector<int> images;           // indices into TrainBatch::images, in marker order
    std::vector<TrainSample> samples;
};

struct TrainBatch {
    std::vector<ImageInput> images;
    std::vector<TrainGroup> groups;
};

struct RunStats {
    double loss = 0, pg_loss = 0, kl = 0, clip_fraction = 0, dual_clip_fraction = 0;
    double grad_norm = 0, lr = 0, seconds = 0;
    int64_t tokens = 0, sequences = 0, packed_rows = 0, micro_batches = 0, image_encodes = 0;
    int64_t step = 0, skipped_steps = 0;
    bool applied = false;
    std::string skip_reason;
    // Where `seconds` went (each phase ends synchronized with the backend): the trunk graphs'
    // forward and backward computations, the vocabulary head (its matmuls and the log-softmax), the
    // reference pass (KL), the grad norm, optimizer and live-adapter refresh; the rest of `seconds` is host work (prompt
    // encoding, packing, graph building and allocation, input uploads).
    double forward_seconds = 0, head_seconds = 0, backward_seconds = 0, reference_seconds = 0, optimizer_seconds = 0;
};

struct RunOutputs {
    RunStats stats;
    std::vector<std::vector<float>> logprobs;      // per sequence (group-major order)
    std::vector<std::vector<float>> ref_logprobs;  // empty when kl_coef == 0
    std::vector<std::vector<float>> grads;         // per LoRA tensor (tensor_names() order), when asked
};

struct PromptInputs {
    int n_tokens = 0;
    int next_pos = 0;                 // position of the first response token
    std::vector<float> embd;          // n_tokens * n_embd
    std::vector<int32_t> pos;         // n_tokens, or 4 * n_tokens stream-major (t, y, x, z) for M-RoPE
    std::vector<uint8_t> is_image;    // n_tokens: 1 where the row is an image embedding
};

class PolicyState {
  public:
    PolicyState(std::shared_ptr<ModelState> model, const PolicyOptions & options);  // throws CodedError
    ~PolicyState();

    // apply: a training step (optimizer update); otherwise only loss, log-probs and, if want_grads, gradients.
    RunOutputs run(const TrainBatch & batch, const LossConfig & loss, const OptimizerConfig & opt, bool apply, bool want_grads);
    PromptInputs prompt_inputs(const std::vector<ImageInput> & images, const TrainGroup & group);
    // Logits [rows, n_vocab] at every position of prompt + tokens (tokens fed after the prompt), LoRA on.
    std::vector<float> logits(const std::vector<ImageInput> & images, const TrainGroup & group, const std::vector<int32_t> & tokens);

    std::vector<std::string> tensor_names() const;  // "<base>.lora_a", "<base>.lora_b" per pair
    std::vector<int64_t> tensor_shape(const std::string & name) const;  // ggml ne order
    std::vector<float> get_tensor(const std::string & name) const;
    void set_tensor(const std::string & name, const std::vector<float> & data);

    void save(const std::string & dir, const OptimizerConfig & opt) const;
    // Restores LoRA tensors, moments, step and RNG state from a directory written by save().
    void restore(const std::string & dir);
    static PolicyOptions read_saved_options(const std::string & dir, const PolicyOptions & base);

    llama_adapter_lora * live_adapter() const { return adapter_; }
    bool has_projector_adapter() const { return projector_.a != nullptr; }
    const PolicyOptions & options() const { return options_; }
    bool on_gpu() const { return on_gpu_; }
    PolicyMemory memory() const;
    // Op profiling, for benchmarks: while on, every graph runs one node at a time, each synchronized
    // and timed (so slower than a normal step, and without the backend's fusions of adjacent ops);
    // op_profile() sums the time per op (matrix products per weight type), largest first.
    struct OpTime {
        std::string op;
        int64_t count = 0;
        double seconds = 0;
    };
    void set_op_profiling(bool on) { profiling_ = on; }
    std::vector<OpTime> op_profile() const;
    const LmView & lm() const { return lm_; }
    int64_t step() const { return step_; }
    float lora_scale() const { return options_.alpha / options_.rank; }
    std::atomic<bool> busy{false};

  private:
    struct MicroBatch;
    // One packed micro-batch: graph inputs plus, per predicted token, where it comes from.
    struct MicroBatchInputs {
        int rows = 0, preds = 0;
        std::vector<float> embd;       // rows * n_embd
        std::vector<int32_t> pos;      // rows, or 4 * rows stream-major
        std::vector<float> mask;       // rows * rows
        std::vector<float> image_rows; // rows: 1 for an image embedding row, else 0
        std::vector<int32_t> out_rows; // preds
        std::vector<int> pred_group, pred_sample, pred_index;
        std::vector<int32_t> pred_target;
    };
    // The vocabulary head for a chunk of rows: graph 1 hidden -> logits, graph 2 d logits -> d hidden.
    struct Head {
        int rows = 0;
        std::unique_ptr<GgmlCtx> ctx;
        ggml_tensor * hidden = nullptr, * logits = nullptr, * dlogits = nullptr, * dhidden = nullptr;
        ggml_cgraph * g1 = nullptr, * g2 = nullptr;
        // GPU trainer, logits() only: the host side of the logits, in `staging` (pinned) or `staging_vec`.
        ggml_backend_buffer_t staging = nullptr;
        std::vector<float> staging_vec;
        ~Head();
    };

    void init_lora();
    void sync_adapter();
    double lr_at(int64_t step, const OptimizerConfig & opt) const;
    PromptInputs prepare_prompt(const std::vector<ImageInput> & images, const TrainGroup & group,
                                std::unordered_map<std::string, std::vector<float>> & cache, int & encodes);
    MicroBatchInputs pack(const MicroBatch & mb, const std::vector<PromptInputs> & prompts, const TrainBatch & batch);
    void set_inputs(const LmGraphInputs & t, const MicroBatchInputs & in);
    std::vector<float> forward_hidden(const MicroBatchInputs & in, bool with_lora);
    Head & head(int rows);
    void head_logprobs(const float * hidden, int rows, const int32_t * targets,
                       const std::function<bool(int, int, const double *, double *)> & fn, float * dhidden = nullptr);
    void for_each_head_chunk(const float * hidden, int rows, const std::function<void(int, int, const float *)> & fn);
    const ggml_tensor * find_param(const std::string & name) const;

    std::shared_ptr<ModelState> model_;
    PolicyOptions options_;
    LmView lm_;
    ggml_backend_t backend_ = nullptr;
    ggml_context * lora_ctx_ = nullptr;
    ggml_backend_buffer_t lora_buf_ = nullptr;
    ggml_context * grad_ctx_ = nullptr;   // the gradient accumulators (grad_acc_), cleared at once
    ggml_backend_buffer_t grad_buf_ = nullptr;
    std::vector<LoraPair> pairs_;
    std::map<const ggml_tensor *, const LoraPair *> by_base_;
    LoraPair projector_;                  // a/b null unless options_.projector_rank > 0
    std::vector<ggml_tensor *> params_;   // a0, b0, a1, b1, ...
    std::vector<ggml_tensor *> grad_acc_; // same order
    ggml_tensor * loss_seed_ = nullptr;   // scalar 1: d loss / d loss
    std::shared_ptr<TransposedHead> output_t_;
    ggml_gallocr_t trunk_alloc_ = nullptr, head_alloc_ = nullptr, head2_alloc_ = nullptr;
    void new_allocators();
    void compute_graph(ggml_cgraph * g);
    bool profiling_ = false;
    std::map<std::string, OpTime> op_times_;
    size_t trunk_peak_ = 0, head_peak_ = 0;  // PolicyMemory's compute-buffer sizes
    std::unique_ptr<Head> head_;
    // GPU trainer: per-row inputs and outputs of the head's CUDA kernels, (head_chunk,) each.
    struct HeadIo {
        ggml_tensor * targets = nullptr, * lse = nullptr, * target_logit = nullptr, * w = nullptr;
    } head_io_;
    // AdamW moments: the CPU trainer's, and the GPU trainer's host copies (filled by save/restore).
    mutable std::vector<std::vector<float>> adam_m_, adam_v_;
    std::vector<ggml_tensor *> moment_m_, moment_v_;  // GPU trainer: the moments in GPU memory
    bool on_gpu_ = false;
    int64_t step_ = 0, skipped_steps_ = 0;
    uint64_t rng_state_[4] = {0, 0, 0, 0};
    llama_adapter_lora * adapter_ = nullptr;
    int n_threads_ = 1;
};

}  // namespace visplay

#ifndef VISPLAY_NODE_FREE
#include <napi.h>

namespace visplay {

Napi::Value create_policy(Napi::Env env, std::shared_ptr<ModelState> model, const Napi::Object & options, const Napi::Object & model_object);
Napi::Function define_policy(Napi::Env env);
// The live adapter of a JS AddonPolicy (for RolloutContext.useLora); keeps the policy alive.
std::shared_ptr<PolicyState> unwrap_policy(Napi::Env env, const Napi::Value & v);

}  // namespace visplay
#endif
