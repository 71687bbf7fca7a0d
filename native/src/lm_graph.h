// The language model as a trainable ggml graph: the frozen base weights of a loaded llama_model
// (read in place, whatever their type) plus LoRA deltas, for a packed batch of sequences whose
// input embeddings (text rows and image embeddings) are given.
//
// llama.cpp's own graph cannot be differentiated (KV cache, flash attention, fused ops without a
// backward), so this file builds the same computation from ggml ops that all have a backward:
// RMSNorm, (M-)RoPE, grouped-query attention with an explicit mask and soft_max_ext, SwiGLU
// (split form). The architectures that share this block (qwen2vl, qwen2, llama and MiMo-VL's
// language model, which is qwen2vl) differ only in which weights exist and the RoPE mode.
#pragma once

#include "ggml.h"
#include "llama.h"

#include <array>
#include <map>
#include <string>
#include <vector>

namespace visplay {

// The frozen weights of one transformer block. Biases may be null.
struct LmLayer {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * wq = nullptr, * wk = nullptr, * wv = nullptr, * wo = nullptr;
    ggml_tensor * bq = nullptr, * bk = nullptr, * bv = nullptr, * bo = nullptr;
    ggml_tensor * ffn_norm = nullptr;
    ggml_tensor * ffn_gate = nullptr, * ffn_up = nullptr, * ffn_down = nullptr;
};

// Everything the graph needs to know about the base model, read once from the llama_model.
struct LmView {
    std::string arch;
    int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0, n_ctx_train = 0;
    float rms_eps = 1e-6f;
    // RoPE exactly as llama_context computes it for this model (no YaRN: rejected at load).
    bool mrope = false;
    int rope_mode = 0, n_rot = 0, n_ctx_orig = 0;
    int sections[4] = {0, 0, 0, 0};
    float freq_base = 10000.0f, freq_scale = 1.0f, ext_factor = 0.0f, attn_factor = 1.0f, beta_fast = 32.0f, beta_slow = 1.0f;

    ggml_tensor * tok_embd = nullptr;
    ggml_tensor * output_norm = nullptr;
    ggml_tensor * output = nullptr;  // == tok_embd when tied
    std::vector<LmLayer> layers;
    // Every weight by its GGUF name ("blk.0.attn_q.weight"), for LoRA targets.
    std::map<std::string, ggml_tensor *> by_name;
};

// Throws CodedError(ERR_UNSUPPORTED_MODEL) for a model this graph cannot reproduce.
LmView make_lm_view(const llama_model * model);

// The LoRA module names a user may target, and the default set (all seven).
const std::vector<std::string> & lora_module_names();

// One LoRA pair on base weight W (ne [n_in, n_out]): y = W x + scale * B (A x).
// A: ne [n_in, rank] (PEFT lora_A, row-major (rank, n_in)); B: ne [rank, n_out] (PEFT lora_B).
// These are exactly the shapes llama.cpp's adapter loader expects for "<W name>.lora_a/.lora_b".
struct LoraPair {
    std::string base_name;  // "blk.0.attn_q.weight"
    ggml_tensor * base = nullptr;
    ggml_tensor * a = nullptr;
    ggml_tensor * b = nullptr;
};

// Inputs of one packed micro-batch graph (all created by build_lm_graph, filled by the caller).
struct LmGraphInputs {
    ggml_tensor * embd = nullptr;     // F32 [n_embd, T]: input embeddings in packed order
    ggml_tensor * pos = nullptr;      // I32 [T] or, for M-RoPE, [4*T] as four streams (t, y, x, z)
    ggml_tensor * mask = nullptr;     // F32 [T, T]: 0 where query row may see key column, -INF elsewhere
    ggml_tensor * out_rows = nullptr; // I32 [R]: packed rows whose hidden state predicts a response token
    ggml_tensor * image_rows = nullptr; // F32 [1, T]: 1 for a row that is an image embedding, else 0 (only with a projector adapter)
};

struct LmGraph {
    LmGraphInputs in;
    ggml_tensor * hidden = nullptr;   // F32 [n_embd, R]: final-normed hidden states of the out rows
};

// Builds the forward computation into `ctx` (a no_alloc context). `loras` may be empty (the
// reference policy); `lora_scale` is alpha / rank. `projector`, when given, is a low-rank update of
// the image rows only (base null; A: ne [n_embd, rank], B: ne [rank, n_embd]):
//   x_img = e_img + B (A e_img)        (scale 1)
// which is a trainable extension of the vision projector's last linear layer y = W2 h + b2: it merges
// exactly into it as W2' = (I + B A) W2, b2' = (I + B A) b2 (merge_projector.cpp).
LmGraph build_lm_graph(ggml_context * ctx, const LmView & lm, const std::map<const ggml_tensor *, const LoraPair *> & loras,
                       float lora_scale, int n_tokens, int n_out_rows, const LoraPair * projector = nullptr);

}  // namespace visplay
