// Model: a llama_model (language model GGUF) plus its mtmd_context (vision projector GGUF).
//
// The loaded state lives in a ModelState shared by the JS wrapper, every rollout context made from
// it and every worker in flight, so dispose() from JS never frees memory a worker still reads: the
// last holder frees it.
#pragma once

#include <napi.h>

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
    // mtmd_encode_chunk is not thread-safe; contexts of one model encode one image at a time.
    std::mutex encode_mutex;
    // The trainer's transposed vocabulary head (policy.cpp), built once and shared by every policy of
    // this model while any of them lives.
    std::mutex head_mutex;
    std::weak_ptr<void> transposed_head;

    ~ModelState();
    static std::shared_ptr<ModelState> load(const LoadOptions & options);  // throws CodedError
};

class AddonModel : public Napi::ObjectWrap<AddonModel> {
  public:
    static Napi::Function define(Napi::Env env);
    static Napi::Object create(Napi::Env env, std::shared_ptr<ModelState> state);
    explicit AddonModel(const Napi::CallbackInfo & info);
    ~AddonModel() override;

    // Throws ERR_DISPOSED when disposed.
    std::shared_ptr<ModelState> state(Napi::Env env) const;

  private:
    Napi::Value info(const Napi::CallbackInfo & info);
    Napi::Value tokenize(const Napi::CallbackInfo & info);
    Napi::Value detokenize(const Napi::CallbackInfo & info);
    Napi::Value measure_prompt(const Napi::CallbackInfo & info);
    Napi::Value apply_chat_template(const Napi::CallbackInfo & info);
    Napi::Value create_context(const Napi::CallbackInfo & info);
    Napi::Value create_policy(const Napi::CallbackInfo & info);
    Napi::Value dispose(const Napi::CallbackInfo & info);
    Napi::Value disposed(const Napi::CallbackInfo & info);

    std::shared_ptr<ModelState> state_;
};

// loadModel(options) -> Promise<AddonModel>
Napi::Value load_model(const Napi::CallbackInfo & info);

// Helpers shared with the rollout code.
std::string token_piece(const llama_vocab * vocab, llama_token token, bool special);
std::vector<llama_token> tokenize_text(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special);

}  // namespace visplay
