// RolloutContextState: batched multimodal generation with shared image prefixes.
//
// One llama_context with a unified KV cache of `context_size` cells serves up to `parallel` sample
// sequences plus up to `parallel` prefix-holder sequences. For a batch of requests:
//   1. each distinct image (by key) is encoded once by mtmd and its embeddings kept for the batch;
//   2. each request's prompt (text + image chunks) is evaluated once into a holder sequence, and
//      its KV cells are shared with its n sample sequences by llama_memory_seq_cp (no copy in a
//      unified cache);
//   3. every live sample of every request advances together: one llama_decode per step;
//   4. a finished sample frees its slot at once for the next sample or the next request
//      (continuous batching), within a KV budget that reserves prefix + max_tokens cells.
//
// Node-free (the C++ test executables link it); rollout.h wraps it for JS.
#pragma once

#include "model_core.h"
#include "worker_pool.h"

#include <atomic>
#include <functional>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

namespace visplay {

struct BitmapDeleter { void operator()(mtmd_bitmap * b) const { mtmd_bitmap_free(b); } };
struct ChunksDeleter { void operator()(mtmd_input_chunks * c) const { mtmd_input_chunks_free(c); } };
using BitmapPtr = std::unique_ptr<mtmd_bitmap, BitmapDeleter>;
using ChunksPtr = std::unique_ptr<mtmd_input_chunks, ChunksDeleter>;

// Tokenizes a templated prompt with its images into mtmd chunks (text and image). Throws CodedError.
ChunksPtr tokenize_prompt(ModelState & model, const std::string & prompt, const std::vector<const mtmd_bitmap *> & bitmaps);

struct ImageInput {
    std::string key;
    uint32_t width = 0;
    uint32_t height = 0;
    std::vector<unsigned char> rgb;  // width * height * 3
};

struct RequestInput {
    std::string prompt;
    std::vector<int> images;  // indices into the batch's images, in marker order
    int n = 1;
    int max_tokens = 64;
    float temperature = 1.0f;
    float top_p = 1.0f;
    int top_k = 0;
    uint64_t seed = 0;
    std::vector<llama_token> stop_tokens;
    bool ignore_eos = false;  // benchmarks: always generate max_tokens
};

struct SampleOutput {
    std::vector<llama_token> tokens;
    std::vector<float> logprobs;
    std::string text;
    bool stopped = false;  // true: an end-of-generation or stop token; false: max_tokens reached
};

struct GenerateStats {
    int image_encodes = 0;
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    int decode_calls = 0;
    double encode_ms = 0, prefill_ms = 0, generate_ms = 0;
    // generate_ms split: in llama_decode (and fetching the logits), and drawing the tokens with
    // their log-probs on the host; the rest is bookkeeping.
    double decode_ms = 0, sample_ms = 0;
    int max_live = 0;
};

struct GenerateProgress {
    int done = 0;
    int total = 0;
    int64_t tokens = 0;
};

struct ContextOptions {
    int context_size = 4096;
    int parallel = 8;
    int batch_size = 512;
    int threads = 0;
    int flash_attention = -1;  // -1 auto, 0 off, 1 on (llama_flash_attn_type)
    bool kv_f32 = false;       // F32 KV cache (exact parity with the F32 training graph) instead of F16
};

struct PromptMeasure {
    int tokens = 0;
    int positions = 0;
};

class RolloutContextState {
  public:
    RolloutContextState(std::shared_ptr<ModelState> model, const ContextOptions & options);  // throws CodedError
    ~RolloutContextState();

    // samples[r][i]; throws CodedError. Not re-entrant: callers hold `busy`.
    std::vector<std::vector<SampleOutput>> generate(const std::vector<ImageInput> & images,
                                                    const std::vector<RequestInput> & requests,
                                                    GenerateStats & stats,
                                                    const std::function<void(const GenerateProgress &)> & progress);
    // Log-probs of `tokens` as a continuation of the prompt, scored alone in one sequence.
    // With `logits`, also the raw logits [tokens.size()][n_vocab] of llama_decode: row 0 at the
    // prompt's last token, row j at token j-1.
    std::vector<float> score(const std::vector<ImageInput> & images, const RequestInput & prompt,
                             const std::vector<llama_token> & tokens, std::vector<float> * logits = nullptr);

    const ContextOptions & options() const { return options_; }
    int n_vocab() const { return n_vocab_; }
    // Cells the cache really holds: llama.cpp rounds the requested size up to a multiple of 256.
    int n_ctx() const { return static_cast<int>(llama_n_ctx(ctx_)); }
    std::atomic<bool> busy{false};

    // Samples with this LoRA adapter from now on (null: the base model). `owner` keeps the adapter's
    // policy alive while the context uses it. Callers hold `busy`.
    void set_adapter(llama_adapter_lora * adapter, std::shared_ptr<void> owner);

  private:
    struct Prefill;
    Prefill prefill(const RequestInput & request, const std::vector<ImageInput> & images, llama_seq_id seq,
                    GenerateStats & stats);

    std::shared_ptr<ModelState> model_;
    llama_context * ctx_ = nullptr;
    ContextOptions options_;
    int n_vocab_ = 0;
    // Image embeddings of the current batch, by image key (n_tokens * n_embd floats).
    std::unordered_map<std::string, std::vector<float>> embeddings_;
    std::shared_ptr<void> adapter_owner_;
    std::unique_ptr<WorkerPool> sampling_pool_;  // made on the first generate()
};

PromptMeasure measure_prompt_tokens(ModelState & model, const std::string & prompt,
                                    const std::vector<std::pair<uint32_t, uint32_t>> & image_sizes);

}  // namespace visplay
