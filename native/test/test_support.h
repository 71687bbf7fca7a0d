// Shared by the C++ test executables (gpu_test.cpp, train_test.cpp): the first GPU device, the
// deterministic test images and the chat prompt around them.
#pragma once

#include "model_core.h"
#include "rollout_core.h"

#include "ggml-backend.h"
#include "mtmd.h"

#include <algorithm>
#include <cstdint>
#include <string>

namespace visplay::test {

// Load options for the GPU side (every layer, the KV cache and the vision tower on the GPU) or the
// CPU reference (no device at all, not even llama.cpp's offload of large batches).
inline LoadOptions load_options(const std::string & model, const std::string & mmproj, bool gpu, int threads) {
    LoadOptions lo;
    lo.model_path = model;
    lo.mmproj_path = mmproj;
    lo.threads = threads;
    lo.gpu_layers = gpu ? 999 : 0;
    lo.use_gpu_for_vision = gpu;
    lo.cpu_only = !gpu;
    return lo;
}

// A GPU device of ggml's registry (the CUDA backend on a CUDA build), or null.
inline ggml_backend_dev_t first_gpu() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_GPU) return d;
    }
    return nullptr;
}

// Deterministic test images: smooth gradients with a pattern that differs per seed, so the two
// images give different embeddings (and the answer depends on which image it is).
inline ImageInput pattern_image(const std::string & key, uint32_t w, uint32_t h, int seed) {
    ImageInput im;
    im.key = key;
    im.width = w;
    im.height = h;
    im.rgb.resize(static_cast<size_t>(w) * h * 3);
    for (uint32_t y = 0; y < h; ++y) {
        for (uint32_t x = 0; x < w; ++x) {
            unsigned char * p = &im.rgb[(static_cast<size_t>(y) * w + x) * 3];
            p[0] = static_cast<unsigned char>((x * 255) / std::max(1u, w - 1));
            p[1] = static_cast<unsigned char>((y * 255) / std::max(1u, h - 1));
            p[2] = static_cast<unsigned char>((((x / (4 + seed)) + (y / (3 + seed))) % 2) * (120 + 60 * seed));
        }
    }
    return im;
}

inline std::string user_prompt(const std::string & text, int n_images) {
    std::string p = "<|im_start|>user\n";
    for (int i = 0; i < n_images; ++i) p += mtmd_default_marker();
    return p + text + "<|im_end|>\n<|im_start|>assistant\n";
}

}  // namespace visplay::test
