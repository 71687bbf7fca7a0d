// The embedded tiny VLM: a Qwen2.5-VL-shaped language model (llama.cpp arch `qwen2vl`, M-RoPE) and
// its mmproj (projector type `qwen2.5vl`), written deterministically from a seed with ggml's gguf
// writer. No Python, no download: the vocabulary is the real Qwen2 BPE vocabulary from the vendored
// tree's models/ggml-vocab-qwen2.gguf, with the Qwen2.5-VL special tokens put in its placeholders.
#pragma once

#include "ggml.h"

#include <cstdint>
#include <string>
#include <vector>

namespace visplay {

struct TinyModelConfig {
    uint64_t seed = 1;
    std::string vocab_path;     // models/ggml-vocab-qwen2.gguf of the vendored llama.cpp
    std::string model_path;     // output: language model GGUF
    std::string mmproj_path;    // output: projector GGUF
    std::string chat_template;  // tokenizer.chat_template (Qwen2.5-VL's Jinja template)
    // Empty: the whole Qwen2 vocabulary (151,936 tokens). Otherwise a subset that tokenizes these
    // texts exactly as Qwen2 does (see select_vocabulary in tiny_model.cpp): the world model's words
    // are a few hundred, and a 151,936-row head is most of a training step's arithmetic.
    std::vector<std::string> vocabulary_texts;

    // language model
    int n_embd = 128;
    int n_layer = 2;
    int n_head = 4;       // head size n_embd / n_head = 32
    int n_head_kv = 2;    // grouped-query attention as in Qwen2.5-VL
    int n_ff = 384;
    int n_ctx_train = 4096;
    bool f32_embeddings = false;  // token_embd/output in F32 (exact-parity tests) instead of F16
    // Standard deviation of the output head's rows. At 0.02 behind a unit-weight RMSNorm no logit can
    // exceed 0.02 * n_embd = 2.6 (|h| = sqrt(n_embd), |w| = 0.02 sqrt(n_embd)), so sampling at T = 1
    // stays near-uniform over the 151,936 tokens whatever LoRA learns in the blocks. The world model
    // (issue 7), which is pre-trained to answer, uses a larger head so a trained direction can win.
    float output_std = 0.02f;
    // Standard deviation of the language-model blocks' weight matrices (attention and FFN; biases
    // stay at 0.02). At 0.02 with n_embd = 128 each matrix scales its input by 0.02 sqrt(128) = 0.23,
    // so attention starts near-uniform and the blocks add little to the residual stream; 1/sqrt(n_embd)
    // (0.088) keeps the scale, as a standard initialisation does (a knob of the world-model diagnostics).
    float block_std = 0.02f;

    // Benchmark shapes (docs/gpu.md): the blocks' matrices in another type (F16, Q8_0, Q4_K, ...;
    // quantized with ggml's quantizer), the embeddings in `embd_type` (GGML_TYPE_COUNT: by
    // f32_embeddings), one tied embedding/output matrix, the vision tower's matrices in
    // `vision_type`, and `threads` > 1 to draw a chunked random stream in parallel (other values
    // than the single stream of threads <= 1, which the embedded tiny model keeps).
    ggml_type weight_type = GGML_TYPE_F32;
    ggml_type embd_type = GGML_TYPE_COUNT;
    bool tied_output = false;
    ggml_type vision_type = GGML_TYPE_F32;
    int threads = 1;

    // vision tower (Qwen2.5-VL ViT: RMSNorm, SwiGLU, window attention, 2x2 patch merger)
    int v_embd = 64;
    int v_layer = 2;
    int v_head = 4;       // head size 16: divisible by 4 as M-RoPE in the ViT needs
    int v_ff = 96;        // != v_embd, or clip.cpp takes the MLP for an old export and swaps up/down
    int image_size = 560;
    int patch_size = 14;
};

// Writes both files atomically (temporary name, then rename). Throws CodedError on failure.
void write_tiny_model(const TinyModelConfig & config);

}  // namespace visplay
