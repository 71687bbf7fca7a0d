// visplay_gpu_test: the rollout engine on the GPU against the same engine on the CPU, with no Node.js
// (GPU machines often have none). Links the Node-free core (model_core, rollout_core, tiny_model).
//
//   visplay_gpu_test [--vocab models/ggml-vocab-qwen2.gguf] [--dir DIR] [--cpu] [--require-gpu]
//   visplay_gpu_test --logits MODEL.gguf --tokens 1,2,3 --out FILE [--cpu]
//
// The second form is for independent references (scripts/device/hf_reference.py): it decodes the
// tokens as one text sequence with llama.cpp (all layers on the GPU unless --cpu, F32 KV cache, no
// flash attention) and writes the logits of every position, float32 [n_tokens][n_vocab], to FILE.
//
// It writes the embedded tiny VLM (F32 embeddings: every weight F32, so no F16 rounding on either
// side) and loads it twice:
//   reference  CPU only (no device at all, not even llama.cpp's offload of large batches)
//   subject    every layer, the KV cache and the vision projector on the GPU (--cpu, or a machine
//              without a CUDA device: the CPU again with another thread count, which checks the
//              harness and that results do not depend on threading)
// Both use an F32 KV cache and no flash attention (the rollout engines' default). Checks:
//   (a) greedy (T = 0) rollouts of three image + text prompts (two distinct images, n = 2 each,
//       32 tokens, end of text ignored): every token the subject chose is the reference's greedy
//       choice on the same prefix, up to near-ties. A sequence that differs is scored on the
//       reference (teacher-forced along the subject's own tokens): at each position the subject's
//       token must be within 2 * tol of the reference's best logit (each side's logits may be off by
//       tol, so a pair closer than 2 * tol may legitimately swap; after a swap the sequences part);
//   (b) scoring one prompt + its greedy continuation: per-token log-probs and the full logits rows
//       agree within tol;
//   (c) a batch encodes each distinct image exactly once on both sides;
//   and, so that tol is known to be small against a real fault, the reference's logits for the same
//   text with the other image must differ by more than 10 * tol.
// Prints one JSON object (last line of stdout) and exits 0 when every check passes, 1 otherwise,
// 2 on a usage or setup error.
//
// Tolerances, absolute, on logits and log-probs (the logits here are |x| <~ 1.2):
//   CPU vs GPU, 1e-2. Both sides hold F32 weights, activations and KV, but ggml-cuda multiplies F32
//     matrices in TF32 (10-bit mantissas, unit roundoff u = 2^-11 = 4.9e-4): its cuBLAS handles are
//     set to CUBLAS_TF32_TENSOR_OP_MATH (ggml-cuda/common.cuh) and its small-batch mmf kernels
//     (<= 16 columns, every decode step of up to 16 sequences) use TF32 mma. So each matmul's output
//     carries a relative error of order u; through the ViT and two decoder layers, a few 1e-3 at the
//     logits (measured on an H200: 1.5e-3 here, 7e-4 on the transformers reference). 1e-2 is 20 u;
//     swapping the image moves these logits by 0.4 (checked: more than 10 * tol).
//   CPU vs CPU at another thread count, 1e-5 (the same float32 ops; measured 0).
// The TF32 rounding also reaches rollout log-probs (GRPO's old-policy log-probs) by ~1e-3 against
// the CPU trainer's float32 recomputation: small beside the 0.2 / 0.3 clip range, and documented.
#include "core_common.h"
#include "model_core.h"
#include "rollout_core.h"
#include "test_support.h"
#include "tiny_model.h"

#include "ggml-backend.h"
#include "llama.h"
#include "mtmd.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef VISPLAY_DEFAULT_VOCAB
#define VISPLAY_DEFAULT_VOCAB "native/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"
#endif

using namespace visplay;
using namespace visplay::test;

namespace {

constexpr double kLogitTol = 1e-2;     // CPU vs GPU: TF32 in ggml-cuda's small-batch F32 matmuls (header)
constexpr double kLogitTolCpu = 1e-5;  // CPU vs CPU with another thread count

struct Args {
    std::string vocab = VISPLAY_DEFAULT_VOCAB;
    std::string dir;
    bool cpu = false;
    bool require_gpu = false;
};

std::string json_escape(const std::string & s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if (c == '\n') o += "\\n";
        else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
        else o += c;
    }
    return o;
}

struct Side {
    std::string name;
    std::shared_ptr<ModelState> model;
    std::unique_ptr<RolloutContextState> ctx;
};

Side open_side(const std::string & name, const TinyModelConfig & files, bool gpu, int threads) {
    const LoadOptions lo = load_options(files.model_path, files.mmproj_path, gpu, threads);
    Side s;
    s.name = name;
    s.model = ModelState::load(lo);
    ContextOptions co;
    co.context_size = 4096;
    co.parallel = 4;
    co.threads = threads;
    co.flash_attention = 0;
    co.kv_f32 = true;
    s.ctx = std::make_unique<RolloutContextState>(s.model, co);
    return s;
}

double max_abs_diff(const std::vector<float> & a, const std::vector<float> & b) {
    if (a.size() != b.size()) return INFINITY;
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
        if (!(d <= m)) m = d;  // NaN propagates as a failure
    }
    return m;
}

// --logits: every position's logits of a text-only sequence, as llama.cpp computes them.
int dump_logits(const std::string & model_path, const std::string & tokens_csv, const std::string & out_path, bool cpu) {
    std::vector<llama_token> tokens;
    std::stringstream ss(tokens_csv);
    std::string item;
    while (std::getline(ss, item, ',')) tokens.push_back(std::atoi(item.c_str()));
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = cpu ? 0 : 999;
    ggml_backend_dev_t none[] = {nullptr};
    if (cpu) mp.devices = none;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model || tokens.empty()) {
        std::fprintf(stderr, "visplay_gpu_test --logits: cannot load %s (or no tokens) %s\n", model_path.c_str(), captured_log().c_str());
        return 2;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = cp.n_ubatch = 512;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    llama_context * ctx = llama_init_from_model(model, cp);
    llama_batch batch = llama_batch_init(static_cast<int32_t>(tokens.size()), 0, 1);
    for (size_t i = 0; i < tokens.size(); ++i) {
        batch.token[i] = tokens[i];
        batch.pos[i] = static_cast<llama_pos>(i);
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = true;
    }
    batch.n_tokens = static_cast<int32_t>(tokens.size());
    int rc = ctx ? llama_decode(ctx, batch) : -1;
    if (rc == 0) {
        const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
        FILE * f = std::fopen(out_path.c_str(), "wb");
        for (size_t i = 0; f && i < tokens.size(); ++i) std::fwrite(llama_get_logits_ith(ctx, static_cast<int32_t>(i)), sizeof(float), n_vocab, f);
        if (!f || std::fclose(f) != 0) rc = 3;
        std::printf("{\"ok\":%s,\"tokens\":%zu,\"n_vocab\":%d}\n", rc == 0 ? "true" : "false", tokens.size(), n_vocab);
    } else {
        std::fprintf(stderr, "visplay_gpu_test --logits: decode failed (%d) %s\n", rc, captured_log().c_str());
    }
    llama_batch_free(batch);
    if (ctx) llama_free(ctx);
    llama_model_free(model);
    return rc == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char ** argv) {
    Args args;
    std::string logits_model, logits_tokens, logits_out;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--vocab" && i + 1 < argc) args.vocab = argv[++i];
        else if (a == "--logits" && i + 1 < argc) logits_model = argv[++i];
        else if (a == "--tokens" && i + 1 < argc) logits_tokens = argv[++i];
        else if (a == "--out" && i + 1 < argc) logits_out = argv[++i];
        else if (a == "--dir" && i + 1 < argc) args.dir = argv[++i];
        else if (a == "--cpu") args.cpu = true;
        else if (a == "--require-gpu") args.require_gpu = true;
        else {
            std::fprintf(stderr, "usage: %s [--vocab ggml-vocab-qwen2.gguf] [--dir DIR] [--cpu] [--require-gpu]\n", argv[0]);
            return 2;
        }
    }
    install_log_bridge();
    set_log_level(std::getenv("VISPLAY_LOG") ? std::atoi(std::getenv("VISPLAY_LOG")) : 1);
    llama_backend_init();
    if (!logits_model.empty()) return dump_logits(logits_model, logits_tokens, logits_out, args.cpu);

    ggml_backend_dev_t gpu = args.cpu ? nullptr : first_gpu();
    if (!gpu && args.require_gpu) {
        std::printf("{\"ok\":false,\"error\":\"--require-gpu: no GPU device (build with VISPLAY_CUDA=ON and run on a CUDA machine)\"}\n");
        return 1;
    }
    const bool on_gpu = gpu != nullptr;
    const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    namespace fs = std::filesystem;
    TinyModelConfig files;
    try {
        const fs::path dir = args.dir.empty() ? fs::temp_directory_path() / ("visplay-gpu-test-" + std::to_string(::getpid())) : fs::path(args.dir);
        fs::create_directories(dir);
        files.seed = 1;
        files.vocab_path = args.vocab;
        files.model_path = (dir / "tiny-f32.gguf").string();
        files.mmproj_path = (dir / "mmproj-tiny.gguf").string();
        files.f32_embeddings = true;
        write_tiny_model(files);
    } catch (const std::exception & e) {
        std::printf("{\"ok\":false,\"error\":\"%s\"}\n", json_escape(std::string("writing the tiny model: ") + e.what()).c_str());
        return 2;
    }

    const double tol = on_gpu ? kLogitTol : kLogitTolCpu;
    std::ostringstream js;
    bool ok = true;
    try {
        const auto t0 = std::chrono::steady_clock::now();
        Side ref = open_side("cpu", files, false, on_gpu ? hw : 1);
        Side sub = open_side(on_gpu ? "gpu" : "cpu-threads", files, on_gpu, on_gpu ? hw : std::max(2, hw));
        if (on_gpu && sub.model->gpu_weight_tensors == 0) throw CodedError("ERR_INTERNAL", "no weight tensor went to the GPU");

        std::vector<ImageInput> images = {pattern_image("a", 56, 56, 0), pattern_image("b", 84, 56, 1)};
        std::vector<RequestInput> reqs(3);
        const char * texts[] = {"Describe the picture.", "What colour is it?", "Describe the picture."};
        const int image_of[] = {0, 1, 1};
        for (int r = 0; r < 3; ++r) {
            reqs[r].prompt = user_prompt(texts[r], 1);
            reqs[r].images = {image_of[r]};
            reqs[r].n = 2;
            reqs[r].max_tokens = 32;
            reqs[r].temperature = 0.0f;
            reqs[r].seed = 7;
            reqs[r].ignore_eos = true;
        }

        // (a) + (c)
        GenerateStats st_ref, st_sub;
        auto out_ref = ref.ctx->generate(images, reqs, st_ref, nullptr);
        auto out_sub = sub.ctx->generate(images, reqs, st_sub, nullptr);
        const int n_vocab = ref.ctx->n_vocab();
        int exact = 0, differing = 0, swapped_positions = 0, first_bad_request = -1, first_bad_pos = -1;
        double greedy_lp_diff = 0, worst_gap = 0;
        for (size_t r = 0; r < reqs.size(); ++r) {
            for (size_t i = 0; i < out_ref[r].size(); ++i) {
                const auto & a = out_ref[r][i].tokens;
                const auto & b = out_sub[r][i].tokens;
                if (a == b) {
                    exact++;
                    greedy_lp_diff = std::max(greedy_lp_diff, max_abs_diff(out_ref[r][i].logprobs, out_sub[r][i].logprobs));
                    continue;
                }
                differing++;
                if (first_bad_request < 0) {
                    first_bad_request = static_cast<int>(r);
                    size_t p = 0;
                    while (p < a.size() && p < b.size() && a[p] == b[p]) ++p;
                    first_bad_pos = static_cast<int>(p);
                }
                // Teacher-forced on the reference along the subject's tokens.
                std::vector<float> lg;
                ref.ctx->score(images, reqs[r], b, &lg);
                for (size_t t = 0; t < b.size(); ++t) {
                    const float * row = lg.data() + t * static_cast<size_t>(n_vocab);
                    const double best = *std::max_element(row, row + n_vocab);
                    const double gap = best - row[b[t]];
                    if (gap > 0) swapped_positions++;
                    worst_gap = std::max(worst_gap, gap);
                }
            }
        }
        const bool distinct_answers = out_ref[0][0].tokens != out_ref[2][0].tokens;  // same text, other image
        const bool a_ok = worst_gap <= 2 * tol && distinct_answers;
        const bool c_ok = st_ref.image_encodes == 2 && st_sub.image_encodes == 2;

        // (b) score request 0 with its greedy continuation, logits included
        std::vector<float> logits_ref, logits_sub, logits_other_image;
        const auto & cont = out_ref[0][0].tokens;
        auto lp_ref = ref.ctx->score(images, reqs[0], cont, &logits_ref);
        auto lp_sub = sub.ctx->score(images, reqs[0], cont, &logits_sub);
        const double lp_diff = max_abs_diff(lp_ref, lp_sub);
        const double logit_diff = max_abs_diff(logits_ref, logits_sub);
        double logit_scale = 0;
        for (float x : logits_ref) logit_scale = std::max(logit_scale, std::fabs(static_cast<double>(x)));
        const bool b_ok = lp_diff <= tol && logit_diff <= tol && greedy_lp_diff <= tol;
        // The size of a real fault: the same text and continuation with the other image.
        RequestInput other = reqs[0];
        other.images = {1};
        ref.ctx->score(images, other, cont, &logits_other_image);
        const double fault_diff = max_abs_diff(logits_ref, logits_other_image);
        const bool sensitive = fault_diff > 10 * tol;
        ok = a_ok && b_ok && c_ok && sensitive;
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

        js << "{\"ok\":" << (ok ? "true" : "false")
           << ",\"mode\":\"" << (on_gpu ? "cpu-vs-gpu" : "cpu-vs-cpu") << "\""
           << ",\"device\":\"" << json_escape(on_gpu ? ggml_backend_dev_description(gpu) : "CPU") << "\""
           << ",\"gpu_weight_tensors\":" << sub.model->gpu_weight_tensors
           << ",\"greedy\":{\"ok\":" << (a_ok ? "true" : "false") << ",\"sequences\":6,\"tokens_each\":32"
           << ",\"identical_sequences\":" << exact << ",\"differing_sequences\":" << differing
           << ",\"first_difference_request\":" << first_bad_request << ",\"first_difference_position\":" << first_bad_pos
           << ",\"positions_not_reference_argmax\":" << swapped_positions << ",\"worst_reference_logit_gap\":" << worst_gap
           << ",\"near_tie_margin\":" << 2 * tol << ",\"image_changes_answer\":" << (distinct_answers ? "true" : "false")
           << ",\"max_logprob_diff_identical\":" << greedy_lp_diff << "}"
           << ",\"score\":{\"ok\":" << (b_ok ? "true" : "false") << ",\"tokens\":" << cont.size()
           << ",\"max_logprob_diff\":" << lp_diff << ",\"max_logit_diff\":" << logit_diff
           << ",\"max_abs_logit\":" << logit_scale << ",\"tolerance\":" << tol
           << ",\"other_image_logit_diff\":" << fault_diff << ",\"sensitive\":" << (sensitive ? "true" : "false") << "}"
           << ",\"image_encodes\":{\"ok\":" << (c_ok ? "true" : "false") << ",\"distinct_images\":2"
           << ",\"reference\":" << st_ref.image_encodes << ",\"subject\":" << st_sub.image_encodes << "}"
           << ",\"ms\":{\"reference\":{\"encode\":" << st_ref.encode_ms << ",\"prefill\":" << st_ref.prefill_ms
           << ",\"generate\":" << st_ref.generate_ms << "},\"subject\":{\"encode\":" << st_sub.encode_ms
           << ",\"prefill\":" << st_sub.prefill_ms << ",\"generate\":" << st_sub.generate_ms << "}}"
           << ",\"prompt_tokens\":" << st_ref.prompt_tokens
           << ",\"seconds\":" << seconds << "}";
    } catch (const std::exception & e) {
        std::printf("{\"ok\":false,\"error\":\"%s\"}\n", json_escape(e.what()).c_str());
        return 1;
    }
    std::printf("%s\n", js.str().c_str());
    if (args.dir.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(std::filesystem::path(files.model_path).parent_path(), ec);
    }
    return ok ? 0 : 1;
}
