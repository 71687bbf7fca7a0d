// Model loading and tokenization, Node-free (see model_core.h).
#include "model_core.h"

#include "core_common.h"

#include "ggml-backend.h"
#include "gguf.h"
#include "llama-model.h"
#include "mtmd-helper.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace visplay {

ModelState::~ModelState() {
    if (mtmd) mtmd_free(mtmd);
    if (model) llama_model_free(model);
    g_live_models--;
}

// Reads what mtmd does not expose (projector type, image and patch size) from the mmproj header.
static ProjectorInfo read_projector_info(const std::string & path) {
    ProjectorInfo info;
    gguf_init_params params = {true, nullptr};
    gguf_context * g = gguf_init_from_file(path.c_str(), params);
    if (!g) return info;
    auto get_u32 = [&](const char * key, int fallback) {
        const int64_t id = gguf_find_key(g, key);
        if (id < 0) return fallback;
        const gguf_type t = gguf_get_kv_type(g, id);
        if (t == GGUF_TYPE_UINT32) return static_cast<int>(gguf_get_val_u32(g, id));
        if (t == GGUF_TYPE_INT32) return static_cast<int>(gguf_get_val_i32(g, id));
        return fallback;
    };
    const int64_t pt = gguf_find_key(g, "clip.projector_type");
    if (pt >= 0 && gguf_get_kv_type(g, pt) == GGUF_TYPE_STRING) info.type = gguf_get_val_str(g, pt);
    const int64_t vpt = gguf_find_key(g, "clip.vision.projector_type");
    if (vpt >= 0 && gguf_get_kv_type(g, vpt) == GGUF_TYPE_STRING) info.type = gguf_get_val_str(g, vpt);
    info.image_size = get_u32("clip.vision.image_size", 0);
    info.patch_size = get_u32("clip.vision.patch_size", 0);
    info.embedding_size = get_u32("clip.vision.projection_dim", 0);
    gguf_free(g);
    return info;
}

// Weight tensors in a buffer of a GPU device (llama.cpp's internal tensor list: same vendored tree).
static int count_gpu_tensors(const llama_model * model) {
    int n = 0;
    for (const auto & [name, t] : model->tensors_by_name) {
        if (!t || !t->buffer) continue;
        ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
        if (dev && ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) n++;
    }
    return n;
}

std::shared_ptr<ModelState> ModelState::load(const LoadOptions & options) {
#ifdef VISPLAY_CUDA
    // llama.cpp's CUDA graphs crashed batched decoding of a Qwen2.5-VL-3B-shaped Q4_K model on an
    // H200 ("an illegal instruction was encountered": 3 runs of 3 with them, with or without LoRA
    // or PDL; 0 of 2 without them; docs/gpu.md). Off unless VISPLAY_CUDA_GRAPHS=1; ggml reads the
    // variable once, at its first graph, which comes after the first load.
    if (const char * g = std::getenv("VISPLAY_CUDA_GRAPHS"); !g || std::strcmp(g, "1") != 0) setenv("GGML_CUDA_DISABLE_GRAPHS", "1", 0);
#endif
    auto state = std::make_shared<ModelState>();
    g_live_models++;
    state->options = options;

    llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = options.gpu_layers;
    mparams.use_extra_bufts = options.repack;
    ggml_backend_dev_t no_devices[] = {nullptr};  // an empty list: no device but the CPU
    if (options.cpu_only) mparams.devices = no_devices;
    state->model = llama_model_load_from_file(options.model_path.c_str(), mparams);
    if (!state->model) {
        throw CodedError("ERR_MODEL_LOAD", with_log("failed to load the language model " + options.model_path));
    }
    state->vocab = llama_model_get_vocab(state->model);
    state->gpu_weight_tensors = count_gpu_tensors(state->model);
    // No mmproj: a text-only model (the C++ references of native/test; JS always passes one).
    if (options.mmproj_path.empty()) return state;

    mtmd_context_params cparams = mtmd_context_params_default();
    cparams.use_gpu = options.use_gpu_for_vision && !options.cpu_only;
    cparams.print_timings = false;
    cparams.n_threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cparams.warmup = options.warmup;
    if (options.image_min_tokens > 0) cparams.image_min_tokens = options.image_min_tokens;
    if (options.image_max_tokens > 0) cparams.image_max_tokens = options.image_max_tokens;
    state->mtmd = mtmd_init_from_file(options.mmproj_path.c_str(), state->model, cparams);
    if (!state->mtmd) {
        throw CodedError("ERR_MODEL_LOAD", with_log("failed to load the vision projector " + options.mmproj_path));
    }
    if (!mtmd_support_vision(state->mtmd)) {
        throw CodedError("ERR_NOT_VLM", options.mmproj_path + " has no vision encoder; visplay-native needs a vision-language model");
    }
    state->projector = read_projector_info(options.mmproj_path);
    state->projector.uses_mrope = mtmd_decode_use_mrope(state->mtmd);
    if (state->projector.embedding_size == 0) state->projector.embedding_size = llama_model_n_embd_inp(state->model);
    return state;
}

std::string token_piece(const llama_vocab * vocab, llama_token token, bool special) {
    char buf[256];
    int n = llama_token_to_piece(vocab, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, n);
    std::string big(static_cast<size_t>(-n), '\0');
    n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
    return n >= 0 ? big.substr(0, n) : std::string();
}

std::vector<llama_token> tokenize_text(const llama_vocab * vocab, const std::string & text, bool add_special, bool parse_special) {
    std::vector<llama_token> tokens(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), add_special, parse_special);
    if (n < 0) {
        tokens.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                           static_cast<int32_t>(tokens.size()), add_special, parse_special);
    }
    tokens.resize(std::max(0, n));
    return tokens;
}

}  // namespace visplay
