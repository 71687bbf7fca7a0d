// ModelState: a llama_model (language model GGUF) plus its mtmd_context (vision projector GGUF).
// Node-free (the C++ test executables link it); model.h wraps it for JS.
//
// The loaded state lives in a ModelState shared by the JS wrapper, every rollout context made from
// it and every worker in flight, so dispose() from JS never frees memory a worker still reads: the
// last holder frees it.
#pragma once

#include "llama.h"
#include "mtmd.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace visplay {

struct ProjectorInfo {
    std::string type;
    int embedding_size = 0;
    int image_size = 0;
    int patch_size = 0;
    bool uses_mrope = false;
};

struct LoadOptions {
    std::string model_path;
    std::string mmproj_path;
    int gpu_layers = 0;
    // No GPU device at all, not even for llama.cpp's offload of large batches with weights on the
    // CPU (op_offload): the pure-CPU reference of the GPU tests.
    bool cpu_only = false;
    int threads = 0;
    bool use_gpu_for_vision = true;
    int image_min_tokens = 0;
    int image_max_tokens = 0;
    bool warmup = false;
    // llama.cpp repacks some quantized types for faster CPU matmuls (CPU_REPACK buffers); the
    // trainer cannot read that layout, so a model to train on is loaded with it off.
    bool repack = true;
};

struct ModelState {
    llama_model * model = nullptr;
    mtmd_context * mtmd = nullptr;
    const llama_vocab * vocab = nullptr;
    ProjectorInfo projector;
    LoadOptions options;
    // Language-model weight tensors that llama.cpp placed in a GPU buffer (gpu_layers on a CUDA
    // build). The trainer reads weights in host memory only, so a policy refuses a model with any.
    int gpu_weight_tensors = 0;
    // mtmd_encode_chunk is not thread-safe; contexts of one model encode one image at a time.
    std::mutex encode_mutex;
    // The trainer's transposed vocabulary head (policy.cpp), built once and shared by every policy of
    // this model while any of them lives.
    std::mutex head_mutex;
    std::weak_ptr<void> transposed_head;

    ~ModelState();
    static std::shared_ptr<ModelState> load(const LoadOptions & options);  // throws CodedError
};

// Helpers shared with the rollout code and the bindings.
std::string token_piece(const llama_vocab * vocab, llama_token token, bool special);
std::vector<llama_token> tokenize_text(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special);

}  // namespace visplay
