// visplay_train_test: the GRPO trainer (PolicyState) on the GPU against the same trainer on the CPU,
// its gradients for an independent reference, and its step time, with no Node.js (GPU machines
// often have none). Links the Node-free core (visplay_core).
//
//   visplay_train_test [--vocab V] [--dir DIR] [--cpu] [--require-gpu]
//       Trainer parity. Writes the tiny VLM twice: every weight F32 (with a rank-4 projector
//       adapter too), and with the blocks' matrices in Q8_0 (the backward pass through a quantized
//       frozen weight: on the GPU, our ggml-cuda OUT_PROD patch, native/patches/0003). For each,
//       the reference is the CPU trainer (no device at all) and the subject the GPU trainer (every
//       layer and the output on the GPU; --cpu or no CUDA device: the CPU at another thread count),
//       the subject's head backward by out_prod from W_out, the reference's by a transposed copy.
//       Same seed, LoRA B set to the same random values (B = 0 would zero every A gradient), three
//       groups (two with images, one given as token ids), kl_coef 0.01 (the reference pass runs).
//       Checks: (a) per-token log-probs; (b) every LoRA gradient, as ||g_sub - g_ref|| / ||g_ref||
//       per tensor; (c) after one AdamW step on each side (our CUDA kernel on the GPU), the
//       parameter updates, same measure; (d) on the subject, save + restore into a new policy and
//       one more step on both gives bitwise-equal parameters (moments and step survive the round
//       trip through host files); and, so that the tolerances are known to be small against a
//       real fault, the reference's gradients with every advantage's sign flipped must differ by
//       more than 10 x the gradient tolerance.
//   visplay_train_test --grads MODEL.gguf --batch BATCH.json --out OUT.json [--cpu]
//       One GRPO step's loss, log-probs and LoRA gradients of a text-only model for a reference
//       (scripts/device/peft_reference.py: PEFT + PyTorch autograd). BATCH.json: {rank, alpha,
//       seed, b_std, prompt: [ids], samples: [{tokens, advantage, old_logprobs?}], clip_low,
//       clip_high, dual_clip, kl_coef, aggregation}. OUT.json: {device, loss, pg_loss,
//       clip_fraction, logprobs, lora_scale, tensors: [{name, base, kind, shape, value, grad}]}.
//   visplay_train_test --bench tiny|3b [--type q4_k|q8_0|f16|f32] [--groups 2] [--samples 8]
//       [--prompt 256] [--response 64] [--rank 16] [--steps 5] [--warmup 2] [--micro-batch 2048]
//       [--round] [--cpu] [--dir DIR] [--threads N]
//       GRPO step time of random-weight models of the tiny or Qwen2.5-VL-3B shape (text-only
//       prompts as token ids; the peer is scripts/device/peft_bench.py on the same shape and batch)
//       and the device memory in use at its peak (polled). --round adds a VisPlay round's GPU work
//       with the 3B shape's vision tower: questioner rollouts for 8 images x 4, a step on them,
//       reasoner rollouts 8 x 8, a step on them, all with the trained LoRA live in the rollouts.
//       The model files are written once per --dir (shape, type and seed name them) and reused.
//       --round-lora 0 samples without the live LoRA, --kv-f32 with an F32 KV cache, --context N
//       the rollout context (default 8192 cells, RolloutEngine's), --release frees the trainer's
//       compute buffers after every step (PolicyOptions::release_buffers). The report's memory_mib
//       gives the device memory in use after each stage and the trainer's buffers by ggml's
//       accounting; each round phase its rollout and training peaks. --profile adds one step run
//       node by node (PolicyState::set_op_profiling): device time per op type. --frozen-matmul
//       llama multiplies by the quantized weights with llama.cpp's kernels instead of BF16 cuBLAS.
//
// Tolerances (parity): log-probs absolute, gradients and updates relative per tensor.
//   CPU vs GPU: 1e-2 and 3e-2. ggml-cuda multiplies F32 matrices in TF32 (unit roundoff
//     4.9e-4; native/test/gpu_test.cpp, docs/gpu.md): ~1e-3 at the logits, and the backward pass
//     adds as many matmuls again. The fault (advantages' signs flipped) moves the gradients by ~2.
//     The Q8_0 model's products with its weights: BF16 inputs (unit roundoff 3.9e-3, F32 sums) by
//     default, or llama.cpp's MMQ, whose activations are rounded to 8 bits per block of 32 (q8_0-llama).
//   CPU vs CPU at another thread count: 1e-5 and 1e-4 (float32, summation order only: the head's
//     backward sums the vocabulary by out_prod on one side and by a matmul on the other; measured
//     1e-5). The update: 1e-3 there. Relative per tensor, it weights the elements of small gradient
//     (|g| << eps, where the update is lr g / eps) as much as the large, whose own relative error is
//     larger than the tensor's (measured 9.6e-5 with gradients within 1.2e-5).
// Prints one JSON object (last line of stdout); exit 0 when every check passes, 1 otherwise, 2 on
// a usage or setup error.
#include "core_common.h"
#include "model_core.h"
#include "policy.h"
#include "rollout_core.h"
#include "test_support.h"
#include "tiny_model.h"

#include "ggml-backend.h"
#include "llama.h"
#include "mtmd.h"

#include "nlohmann/json.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef VISPLAY_DEFAULT_VOCAB
#define VISPLAY_DEFAULT_VOCAB "native/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf"
#endif

using namespace visplay;
using namespace visplay::test;
using json = nlohmann::json;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

int hw_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A small deterministic stream (the tests' B values and token ids; not the trainer's RNG).
struct Lcg {
    uint64_t s;
    explicit Lcg(uint64_t seed) : s(seed * 6364136223846793005ull + 1442695040888963407ull) {}
    uint32_t next() { s = s * 6364136223846793005ull + 1442695040888963407ull; return static_cast<uint32_t>(s >> 33); }
    double uniform() { return (next() + 0.5) / 2147483648.0; }  // (0, 1)
    double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform()); }
};

std::shared_ptr<ModelState> load(const std::string & model, const std::string & mmproj, bool gpu, int threads) {
    LoadOptions lo = load_options(model, mmproj, gpu, threads);
    lo.repack = false;  // the CPU trainer reads the weights in place
    return ModelState::load(lo);
}

// ||a - b|| / ||b|| (b the reference); NaN/size mismatch -> infinity.
double rel_err(const std::vector<float> & a, const std::vector<float> & b) {
    if (a.size() != b.size()) return INFINITY;
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = static_cast<double>(a[i]) - b[i];
        num += d * d;
        den += static_cast<double>(b[i]) * b[i];
    }
    const double r = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    return std::isfinite(r) ? r : INFINITY;
}

void set_random_b(PolicyState & p, uint64_t seed, double std) {
    Lcg rng(seed);
    for (const std::string & name : p.tensor_names()) {
        if (name.size() < 7 || name.compare(name.size() - 7, 7, ".lora_b") != 0) continue;
        std::vector<float> v = p.get_tensor(name);
        for (float & x : v) x = static_cast<float>(rng.normal() * std);
        p.set_tensor(name, v);
    }
}

// ---- peak device memory --------------------------------------------------------------------------

// Polls the GPU's free memory every 2 ms: used = total - free, relative to the value at start().
class MemoryPeak {
  public:
    explicit MemoryPeak(ggml_backend_dev_t dev) : dev_(dev) {
        if (!dev_) return;
        size_t free = 0;
        ggml_backend_dev_memory(dev_, &free, &total_);
        base_used_ = total_ - free;
        peak_used_ = base_used_;
        thread_ = std::thread([this] {
            while (!stop_) {
                const size_t used = used_bytes();
                size_t prev = peak_used_.load();
                while (used > prev && !peak_used_.compare_exchange_weak(prev, used)) {}
                prev = phase_peak_.load();
                while (used > prev && !phase_peak_.compare_exchange_weak(prev, used)) {}
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
        });
    }
    ~MemoryPeak() { stop(); }
    void stop() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    double peak_mib() const { return above_start_mib(peak_used_.load()); }
    // In use now, relative to start().
    double used_mib() const { return dev_ ? above_start_mib(used_bytes()) : 0; }
    // The peak since the last call (or start), then starts a new phase from what is in use now.
    double take_phase_peak_mib() {
        if (!dev_) return 0;
        return std::max(above_start_mib(phase_peak_.exchange(0)), used_mib());
    }
    double total_mib() const { return total_ / (1024.0 * 1024.0); }

  private:
    size_t used_bytes() const {
        size_t f = 0, t = 0;
        ggml_backend_dev_memory(dev_, &f, &t);
        return t - f;
    }
    double above_start_mib(size_t used) const { return (static_cast<double>(used) - base_used_) / (1024.0 * 1024.0); }

    ggml_backend_dev_t dev_;
    size_t total_ = 0, base_used_ = 0;
    std::atomic<size_t> peak_used_{0}, phase_peak_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// ---- parity --------------------------------------------------------------------------------------

TrainBatch parity_batch(const std::vector<ImageInput> & images) {
    TrainBatch b;
    b.images = images;
    Lcg rng(11);
    auto sample = [&](int len, double adv) {
        TrainSample s;
        for (int i = 0; i < len; ++i) s.tokens.push_back(static_cast<int32_t>(rng.next() % 150000));
        s.advantage = adv;
        return s;
    };
    TrainGroup g0;
    g0.prompt = user_prompt("Describe the picture.", 1);
    g0.images = {0};
    g0.samples = {sample(5, 1.0), sample(8, -0.7), sample(3, 0.4)};
    TrainGroup g1;
    g1.prompt = user_prompt("What colour is it?", 1);
    g1.images = {1};
    g1.samples = {sample(6, 0.5), sample(4, -0.5)};
    TrainGroup g2;  // text only, as token ids
    for (int i = 0; i < 10; ++i) g2.prompt_tokens.push_back(static_cast<int32_t>(rng.next() % 150000));
    g2.samples = {sample(7, 0.9), sample(2, -1.1)};
    b.groups = {g0, g1, g2};
    return b;
}

struct VariantResult {
    json report;
    bool ok = true;
};

VariantResult parity_variant(const std::string & label, const TinyModelConfig & files, bool projector, PolicyOptions::FrozenMatmul frozen_matmul,
                             bool on_gpu, int threads_sub, double tol_lp, double tol_rel, double tol_upd, const fs::path & dir) {
    VariantResult res;
    json & r = res.report;
    r["variant"] = label;
    auto ref_model = load(files.model_path, files.mmproj_path, false, on_gpu ? hw_threads() : 1);
    auto sub_model = load(files.model_path, files.mmproj_path, on_gpu, threads_sub);
    PolicyOptions po;
    po.rank = 8;
    po.alpha = 16;
    po.seed = 3;
    po.projector_rank = projector ? 4 : 0;
    po.frozen_matmul = frozen_matmul;  // the subject's products with quantized weights (the CPU ignores it)
    po.threads = on_gpu ? hw_threads() : 1;
    PolicyState ref(ref_model, po);
    po.threads = threads_sub;
    // The subject's head backward is out_prod from W_out (the GPU trainer's way, and on the CPU a
    // test of that graph), the reference's the transposed copy.
    po.head_backward = PolicyOptions::HeadBackward::out_prod;
    PolicyState sub(sub_model, po);
    r["subject_on_gpu"] = sub.on_gpu();
    if (on_gpu && !sub.on_gpu()) throw CodedError("ERR_INTERNAL", "the subject trainer did not start on the GPU");
    set_random_b(ref, 5, 0.02);
    set_random_b(sub, 5, 0.02);

    const std::vector<ImageInput> images = {pattern_image("a", 56, 56, 0), pattern_image("b", 84, 56, 1)};
    TrainBatch batch = parity_batch(images);
    LossConfig loss;
    loss.kl_coef = 0.01;
    OptimizerConfig opt;
    opt.lr = 1e-3;
    // AdamW's first step is lr * g / (|g| + eps): sign(g) wherever |g| >> eps, so a gradient element
    // near 0 that TF32 rounding moves across 0 flips its update by 2 lr (device run 2: 9-14 % relative
    // at eps 1e-8 with gradients within 0.2-1.6 %). With eps at the gradients' own scale the update is
    // a smooth function of g and compares like the gradients; the kernel itself is checked elementwise
    // against its CPU reference by visplay_kernels_test.
    opt.eps = 1e-2;

    // (a) + (b): log-probs and gradients, old = current (ρ = 1)
    RunOutputs a_ref = ref.run(batch, loss, opt, false, true);
    RunOutputs a_sub = sub.run(batch, loss, opt, false, true);
    double lp = 0;
    for (size_t s = 0; s < a_ref.logprobs.size(); ++s) {
        for (size_t t = 0; t < a_ref.logprobs[s].size(); ++t) lp = std::max(lp, std::fabs(static_cast<double>(a_ref.logprobs[s][t]) - a_sub.logprobs[s][t]));
    }
    // Second batch: old log-probs offset so that tokens fall on both sides of the clip range.
    TrainBatch batch2 = batch;
    const double offsets[] = {-0.5, -0.1, 0.1, 0.5};
    int k = 0;
    for (size_t g = 0, s_all = 0; g < batch2.groups.size(); ++g) {
        for (auto & smp : batch2.groups[g].samples) {
            smp.old_logprobs.clear();
            for (float x : a_ref.logprobs[s_all]) smp.old_logprobs.push_back(static_cast<float>(x + offsets[k++ % 4]));
            s_all++;
        }
    }
    RunOutputs b_ref = ref.run(batch2, loss, opt, false, true);
    RunOutputs b_sub = sub.run(batch2, loss, opt, false, true);
    double grad_rel = 0;
    std::string worst;
    const auto names = ref.tensor_names();
    for (size_t p = 0; p < names.size(); ++p) {
        const double e = std::max(rel_err(a_sub.grads[p], a_ref.grads[p]), rel_err(b_sub.grads[p], b_ref.grads[p]));
        if (e > grad_rel || !std::isfinite(e)) { grad_rel = e; worst = names[p]; }
    }
    // fault size: the reference's gradients with the advantages' signs flipped
    TrainBatch flipped = batch2;
    for (auto & g : flipped.groups) for (auto & smp : g.samples) smp.advantage = -smp.advantage;
    RunOutputs f_ref = ref.run(flipped, loss, opt, false, true);
    double fault = INFINITY;
    for (size_t p = 0; p < names.size(); ++p) fault = std::min(fault, rel_err(f_ref.grads[p], b_ref.grads[p]));

    // (c) one AdamW step on each side
    std::vector<std::vector<float>> before(names.size());
    for (size_t p = 0; p < names.size(); ++p) before[p] = ref.get_tensor(names[p]);
    RunOutputs s_ref = ref.run(batch2, loss, opt, true, false);
    RunOutputs s_sub = sub.run(batch2, loss, opt, true, false);
    double upd_rel = 0;
    std::string worst_upd;
    for (size_t p = 0; p < names.size(); ++p) {
        std::vector<float> dr = ref.get_tensor(names[p]), ds = sub.get_tensor(names[p]);
        for (size_t i = 0; i < dr.size(); ++i) {
            dr[i] -= before[p][i];
            ds[i] -= before[p][i];
        }
        const double e = rel_err(ds, dr);
        if (e > upd_rel || !std::isfinite(e)) { upd_rel = e; worst_upd = names[p]; }
    }

    // (d) save + restore on the subject, then one more step on both: bitwise equal
    const std::string ckpt = (dir / ("ckpt-" + label)).string();
    sub.save(ckpt, opt);
    PolicyState restored(sub_model, po);  // a second policy of the same loaded model
    restored.restore(ckpt);
    sub.run(batch2, loss, opt, true, false);
    restored.run(batch2, loss, opt, true, false);
    bool restore_equal = restored.step() == sub.step();
    for (const auto & n : names) restore_equal = restore_equal && restored.get_tensor(n) == sub.get_tensor(n);

    r["logprob_max_diff"] = lp;
    r["grad_max_rel_err"] = grad_rel;
    r["grad_worst_tensor"] = worst;
    r["update_max_rel_err"] = upd_rel;
    r["update_worst_tensor"] = worst_upd;
    r["flipped_advantages_min_rel_diff"] = fault;
    r["loss"] = {b_ref.stats.loss, b_sub.stats.loss};
    r["clip_fraction"] = {b_ref.stats.clip_fraction, b_sub.stats.clip_fraction};
    r["grad_norm"] = {b_ref.stats.grad_norm, b_sub.stats.grad_norm};
    r["step_applied"] = {s_ref.stats.applied, s_sub.stats.applied};
    r["restore_bitwise_equal"] = restore_equal;
    r["tensors"] = names.size();
    r["tolerance"] = {{"logprob_abs", tol_lp}, {"grad_rel", tol_rel}, {"update_rel", tol_upd}};
    res.ok = lp <= tol_lp && grad_rel <= tol_rel && upd_rel <= tol_upd && fault > 10 * tol_rel && restore_equal &&
             s_ref.stats.applied && s_sub.stats.applied && b_ref.stats.clip_fraction > 0 &&
             std::fabs(b_ref.stats.clip_fraction - b_sub.stats.clip_fraction) < 1e-12;
    r["ok"] = res.ok;
    return res;
}

int parity(const std::string & vocab, const std::string & dir_arg, bool cpu, bool require_gpu) {
    ggml_backend_dev_t gpu = cpu ? nullptr : first_gpu();
    if (!gpu && require_gpu) {
        std::printf("{\"ok\":false,\"error\":\"--require-gpu: no GPU device (build with VISPLAY_CUDA=ON and run on a CUDA machine)\"}\n");
        return 1;
    }
    const bool on_gpu = gpu != nullptr;
    const fs::path dir = dir_arg.empty() ? fs::temp_directory_path() / ("visplay-train-test-" + std::to_string(::getpid())) : fs::path(dir_arg);
    fs::create_directories(dir);
    json out;
    out["mode"] = on_gpu ? "cpu-vs-gpu" : "cpu-vs-cpu";
    if (gpu) out["device"] = ggml_backend_dev_description(gpu);
    const double tol_lp = on_gpu ? 1e-2 : 1e-5, tol_rel = on_gpu ? 3e-2 : 1e-4, tol_upd = on_gpu ? 3e-2 : 1e-3;
    bool ok = true;
    const auto t0 = Clock::now();
    try {
        TinyModelConfig f32;
        f32.seed = 1;
        f32.vocab_path = vocab;
        f32.model_path = (dir / "tiny-f32.gguf").string();
        f32.mmproj_path = (dir / "mmproj-tiny.gguf").string();
        f32.f32_embeddings = true;
        write_tiny_model(f32);
        TinyModelConfig q8 = f32;
        q8.model_path = (dir / "tiny-q8_0.gguf").string();
        q8.mmproj_path = (dir / "mmproj-tiny-q8.gguf").string();
        q8.weight_type = GGML_TYPE_Q8_0;
        write_tiny_model(q8);
        const int threads_sub = on_gpu ? hw_threads() : std::max(2, hw_threads());
        json variants = json::array();
        // q8_0: the quantized weights' products in BF16 on the GPU (the default); q8_0-llama:
        // llama.cpp's MMQ and TF32 kernels for them (GPU only: on the CPU the two are the same run).
        using FM = PolicyOptions::FrozenMatmul;
        std::vector<std::tuple<const char *, TinyModelConfig, bool, FM>> cases = {
            {"f32+projector", f32, true, FM::bf16}, {"q8_0", q8, false, FM::bf16}};
        if (on_gpu) cases.emplace_back("q8_0-llama", q8, false, FM::llama);
        for (auto [label, files, projector, fm] : cases) {
            VariantResult v = parity_variant(label, files, projector, fm, on_gpu, threads_sub, tol_lp, tol_rel, tol_upd, dir);
            ok = ok && v.ok;
            variants.push_back(v.report);
        }
        out["variants"] = variants;
    } catch (const std::exception & e) {
        ok = false;
        out["error"] = e.what();
    }
    out["seconds"] = seconds_since(t0);
    out["ok"] = ok;
    std::printf("%s\n", out.dump().c_str());
    return ok ? 0 : 1;
}

// ---- gradients for an independent reference -----------------------------------------------------

int grads(const std::string & model_path, const std::string & batch_path, const std::string & out_path, bool cpu) {
    json in;
    {
        std::ifstream f(batch_path);
        if (!f) {
            std::printf("{\"ok\":false,\"error\":\"cannot read %s\"}\n", batch_path.c_str());
            return 2;
        }
        in = json::parse(f);
    }
    const bool gpu = !cpu && first_gpu() != nullptr;
    auto model = load(model_path, "", gpu, hw_threads());
    PolicyOptions po;
    po.rank = in.value("rank", 8);
    po.alpha = in.value("alpha", 16.0f);
    po.seed = in.value("seed", 1);
    po.threads = hw_threads();
    PolicyState policy(model, po);
    const double b_std = in.value("b_std", 0.02);
    if (b_std > 0) set_random_b(policy, po.seed + 100, b_std);

    TrainBatch batch;
    TrainGroup g;
    g.prompt_tokens = in.at("prompt").get<std::vector<int32_t>>();
    for (const auto & s : in.at("samples")) {
        TrainSample ts;
        ts.tokens = s.at("tokens").get<std::vector<int32_t>>();
        ts.advantage = s.at("advantage").get<double>();
        if (s.contains("old_logprobs")) ts.old_logprobs = s.at("old_logprobs").get<std::vector<float>>();
        g.samples.push_back(ts);
    }
    batch.groups.push_back(g);
    LossConfig loss;
    loss.clip_low = in.value("clip_low", 0.2);
    loss.clip_high = in.value("clip_high", 0.3);
    loss.dual_clip = in.value("dual_clip", 3.0);
    loss.kl_coef = in.value("kl_coef", 0.0);
    loss.aggregation = in.value("aggregation", std::string("seq_mean_token_mean")) == "token_mean" ? LossAggregation::token_mean
                                                                                                   : LossAggregation::seq_mean_token_mean;
    OptimizerConfig opt;
    RunOutputs o = policy.run(batch, loss, opt, false, true);

    json out;
    out["device"] = policy.on_gpu() ? std::string(ggml_backend_dev_description(first_gpu())) : std::string("cpu");
    out["on_gpu"] = policy.on_gpu();
    out["loss"] = o.stats.loss;
    out["pg_loss"] = o.stats.pg_loss;
    out["clip_fraction"] = o.stats.clip_fraction;
    out["logprobs"] = o.logprobs;
    out["lora_scale"] = policy.lora_scale();
    json tensors = json::array();
    const auto names = policy.tensor_names();
    for (size_t p = 0; p < names.size(); ++p) {
        const std::string & n = names[p];
        const bool is_a = n.compare(n.size() - 7, 7, ".lora_a") == 0;
        tensors.push_back({{"name", n}, {"base", n.substr(0, n.size() - 7)}, {"kind", is_a ? "a" : "b"},
                           {"shape", policy.tensor_shape(n)}, {"value", policy.get_tensor(n)}, {"grad", o.grads[p]}});
    }
    out["tensors"] = tensors;
    std::ofstream f(out_path);
    f << out.dump();
    f.close();
    if (!f) {
        std::printf("{\"ok\":false,\"error\":\"cannot write %s\"}\n", out_path.c_str());
        return 2;
    }
    std::printf("{\"ok\":true,\"on_gpu\":%s,\"tensors\":%zu,\"loss\":%.9g}\n", policy.on_gpu() ? "true" : "false", names.size(), o.stats.loss);
    return 0;
}

// ---- benchmark -----------------------------------------------------------------------------------

struct BenchArgs {
    std::string shape = "tiny", type = "q4_k", dir, vocab;
    int groups = 2, samples = 8, prompt = 256, response = 64, rank = 16, steps = 5, warmup = 2, micro_batch = 2048, threads = 0;
    int context = 8192;  // the round's rollout context: RolloutEngine's default
    bool round = false, cpu = false, round_lora = true, kv_f32 = false, release = false, profile = false;
    std::string frozen_matmul = "bf16";  // PolicyOptions::frozen_matmul: bf16 or llama
};

ggml_type parse_type(const std::string & t) {
    if (t == "q4_k") return GGML_TYPE_Q4_K;
    if (t == "q8_0") return GGML_TYPE_Q8_0;
    if (t == "q4_0") return GGML_TYPE_Q4_0;
    if (t == "f16") return GGML_TYPE_F16;
    if (t == "f32") return GGML_TYPE_F32;
    throw CodedError("ERR_INVALID_ARG", "unknown --type " + t + " (q4_k, q8_0, q4_0, f16, f32)");
}

double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

int bench(const BenchArgs & a) {
    json out;
    ggml_backend_dev_t gpu = a.cpu ? nullptr : first_gpu();
    const int threads = a.threads > 0 ? a.threads : hw_threads();
    out["shape"] = a.shape;
    out["type"] = a.type;
    out["device"] = gpu ? ggml_backend_dev_description(gpu) : "cpu";
    bool ok = true;
    try {
        const fs::path dir = a.dir.empty() ? fs::temp_directory_path() / ("visplay-train-bench-" + std::to_string(::getpid())) : fs::path(a.dir);
        fs::create_directories(dir);
        TinyModelConfig c;
        c.seed = 1;
        c.vocab_path = a.vocab;
        c.threads = threads;
        c.model_path = (dir / ("bench-" + a.shape + "-" + a.type + ".gguf")).string();
        c.mmproj_path = (dir / ("bench-" + a.shape + "-mmproj.gguf")).string();
        c.weight_type = parse_type(a.type);
        c.block_std = 0.02f;
        if (a.shape == "3b") {  // Qwen2.5-VL-3B: text 2048 wide, 36 layers, 16 heads, 2 KV heads, FFN 11008, tied head
            c.n_embd = 2048;
            c.n_layer = 36;
            c.n_head = 16;
            c.n_head_kv = 2;
            c.n_ff = 11008;
            c.tied_output = true;
            c.embd_type = c.weight_type == GGML_TYPE_Q4_K ? GGML_TYPE_Q6_K : c.weight_type;  // as a Q4_K_M file
            // its ViT: 32 blocks 1280 wide, 16 heads, FFN 3420, F16 (as the published mmproj files)
            c.v_embd = 1280;
            c.v_layer = 32;
            c.v_head = 16;
            c.v_ff = 3420;
            c.vision_type = GGML_TYPE_F16;
            c.image_size = 448;
        } else if (a.shape != "tiny") {
            throw CodedError("ERR_INVALID_ARG", "--bench takes tiny or 3b");
        } else {
            c.embd_type = c.weight_type == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
        }
        // The files are a function of shape, type and seed: a second run in the same --dir reuses them.
        const auto tw = Clock::now();
        const bool reuse = fs::exists(c.model_path) && fs::exists(c.mmproj_path);
        if (!reuse) write_tiny_model(c);
        out["write_seconds"] = seconds_since(tw);
        out["reused_files"] = reuse;
        out["model_bytes"] = fs::file_size(c.model_path);

        MemoryPeak mem(gpu);
        const auto tl = Clock::now();
        auto model = load(c.model_path, c.mmproj_path, gpu != nullptr, threads);
        out["load_seconds"] = seconds_since(tl);
        PolicyOptions po;
        po.rank = a.rank;
        po.alpha = 2.0f * a.rank;
        po.seed = 1;
        po.threads = threads;
        po.micro_batch_tokens = a.micro_batch;
        po.release_buffers = a.release;
        if (a.frozen_matmul != "bf16" && a.frozen_matmul != "llama") throw CodedError("ERR_INVALID_ARG", "--frozen-matmul takes bf16 or llama");
        po.frozen_matmul = a.frozen_matmul == "llama" ? PolicyOptions::FrozenMatmul::llama : PolicyOptions::FrozenMatmul::bf16;
        out["frozen_matmul"] = a.frozen_matmul;
        const double mib_model = mem.used_mib();
        auto policy = std::make_shared<PolicyState>(model, po);
        const double mib_policy = mem.used_mib();
        out["on_gpu"] = policy->on_gpu();
        set_random_b(*policy, 9, 0.01);
        out["lora_parameters"] = [&] {
            int64_t n = 0;
            for (const auto & name : policy->tensor_names()) {
                const auto s = policy->tensor_shape(name);
                n += s[0] * s[1];
            }
            return n;
        }();

        Lcg rng(21);
        TrainBatch batch;
        for (int g = 0; g < a.groups; ++g) {
            TrainGroup grp;
            for (int i = 0; i < a.prompt; ++i) grp.prompt_tokens.push_back(static_cast<int32_t>(rng.next() % 150000));
            for (int s = 0; s < a.samples; ++s) {
                TrainSample ts;
                for (int i = 0; i < a.response; ++i) ts.tokens.push_back(static_cast<int32_t>(rng.next() % 150000));
                ts.advantage = (s % 2 ? -1.0 : 1.0) * (0.5 + rng.uniform());
                grp.samples.push_back(ts);
            }
            batch.groups.push_back(grp);
        }
        LossConfig loss;
        loss.kl_coef = 0;  // as the peer: no reference pass
        OptimizerConfig opt;
        opt.lr = 1e-6;
        std::vector<double> times;
        RunStats last;
        for (int i = 0; i < a.warmup + a.steps; ++i) {
            const auto t0 = Clock::now();
            last = policy->run(batch, loss, opt, true, false).stats;
            if (i >= a.warmup) times.push_back(seconds_since(t0));
        }
        const double tokens = static_cast<double>(a.groups) * a.samples * a.response;
        const double med = median(times);
        out["train"] = {{"groups", a.groups}, {"samples", a.samples}, {"prompt", a.prompt}, {"response", a.response}, {"rank", a.rank},
                        {"micro_batch_tokens", a.micro_batch}, {"micro_batches", last.micro_batches}, {"packed_rows", last.packed_rows},
                        {"step_seconds_median", med}, {"step_seconds_min", *std::min_element(times.begin(), times.end())},
                        {"step_seconds_max", *std::max_element(times.begin(), times.end())}, {"response_tokens_per_second", tokens / med},
                        {"loss", last.loss}, {"applied", last.applied},
                        // the last step's phases (RunStats): what the step's time went to
                        {"last_step_phases_seconds", {{"total", last.seconds}, {"forward", last.forward_seconds}, {"head", last.head_seconds},
                                                      {"backward", last.backward_seconds}, {"reference", last.reference_seconds},
                                                      {"optimizer", last.optimizer_seconds}}}};
        ok = ok && last.applied && std::isfinite(last.loss);
        out["peak_device_mib_train"] = mem.peak_mib();
        if (a.profile) {
            // One more step, node by node: where the device time goes, per op.
            policy->set_op_profiling(true);
            const RunStats ps = policy->run(batch, loss, opt, true, false).stats;
            policy->set_op_profiling(false);
            json ops = json::array();
            for (const auto & t : policy->op_profile()) ops.push_back({{"op", t.op}, {"count", t.count}, {"seconds", t.seconds}});
            out["op_profile"] = {{"step_seconds_node_by_node", ps.seconds}, {"ops", ops}};
        }
        // Where the memory goes (MiB): the device's used memory after each stage, and the trainer's
        // own buffers by ggml's accounting (compute buffers at their largest so far).
        const auto mib = [](size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
        const PolicyMemory pm = policy->memory();
        json breakdown = {{"after_model_load", mib_model}, {"after_policy", mib_policy}, {"after_steps", mem.used_mib()},
                          {"trainer_lora_state", mib(pm.lora_state)}, {"trainer_transposed_head", mib(pm.transposed_head)},
                          {"trainer_trunk_buffer", mib(pm.trunk)}, {"trainer_head_buffers", mib(pm.head)}};
        out["release_buffers"] = a.release;
        (void)mem.take_phase_peak_mib();

        if (a.round) {
            // A VisPlay round's GPU work: rollouts with the live LoRA, then a step, for both roles.
            ContextOptions co;
            co.context_size = a.context;
            out["round_context"] = a.context;
            co.parallel = 32;
            co.threads = threads;
            co.flash_attention = 0;
            co.kv_f32 = a.kv_f32;
            RolloutContextState ctx(model, co);
            breakdown["after_rollout_context"] = mem.used_mib();
            if (a.round_lora) ctx.set_adapter(policy->live_adapter(), policy);
            out["round_lora"] = a.round_lora;
            out["round_kv_f32"] = a.kv_f32;
            std::vector<ImageInput> images;
            for (int i = 0; i < 8; ++i) images.push_back(pattern_image("img" + std::to_string(i), 448, 448, i % 5));
            auto roll = [&](int n, int max_tokens, const char * text, double & secs, GenerateStats & st) {
                std::vector<RequestInput> reqs(images.size());
                for (size_t r = 0; r < reqs.size(); ++r) {
                    reqs[r].prompt = user_prompt(text, 1);
                    reqs[r].images = {static_cast<int>(r)};
                    reqs[r].n = n;
                    reqs[r].max_tokens = max_tokens;
                    reqs[r].temperature = 1.0f;
                    reqs[r].seed = 100 + r;
                    reqs[r].ignore_eos = true;
                }
                const auto t0 = Clock::now();
                auto o = ctx.generate(images, reqs, st, nullptr);
                secs = seconds_since(t0);
                TrainBatch tb;
                tb.images = images;
                for (size_t r = 0; r < reqs.size(); ++r) {
                    TrainGroup grp;
                    grp.prompt = reqs[r].prompt;
                    grp.images = reqs[r].images;
                    for (size_t i = 0; i < o[r].size(); ++i) {
                        TrainSample ts;
                        ts.tokens = o[r][i].tokens;
                        ts.old_logprobs = o[r][i].logprobs;
                        ts.advantage = (i % 2 ? -1.0 : 1.0);
                        grp.samples.push_back(ts);
                    }
                    tb.groups.push_back(grp);
                }
                return tb;
            };
            LossConfig rl;
            rl.kl_coef = 0.01;  // VisPlay's default: the reference pass runs
            json phases = json::array();
            for (auto [role, n, max_tokens, text] : {std::tuple<const char *, int, int, const char *>{"questioner", 4, 64, "Ask a hard question about this image."},
                                                     std::tuple<const char *, int, int, const char *>{"reasoner", 8, 32, "How many objects are there?"}}) {
                double secs = 0;
                GenerateStats st;
                TrainBatch tb = roll(n, max_tokens, text, secs, st);
                const double rollout_peak = mem.take_phase_peak_mib();
                const auto t0 = Clock::now();
                RunStats rs = policy->run(tb, rl, opt, true, false).stats;
                const double train_secs = seconds_since(t0);
                const double train_peak = mem.take_phase_peak_mib();
                const PolicyMemory pr = policy->memory();
                phases.push_back({{"role", role}, {"sequences", 8 * n}, {"generated_tokens", st.generated_tokens}, {"rollout_seconds", secs},
                                  {"image_encodes", st.image_encodes}, {"train_seconds", train_secs}, {"applied", rs.applied},
                                  {"micro_batches", rs.micro_batches}, {"rollout_peak_device_mib", rollout_peak},
                                  {"train_peak_device_mib", train_peak}, {"trainer_trunk_buffer_mib", mib(pr.trunk)},
                                  {"trainer_head_buffers_mib", mib(pr.head)},
                                  {"train_phases_seconds", {{"forward", rs.forward_seconds}, {"head", rs.head_seconds}, {"backward", rs.backward_seconds},
                                                            {"reference", rs.reference_seconds}, {"optimizer", rs.optimizer_seconds}}}});
                ok = ok && rs.applied;
            }
            out["round"] = phases;
        }
        out["memory_mib"] = breakdown;
        mem.stop();
        out["peak_device_mib"] = mem.peak_mib();
        out["device_total_mib"] = mem.total_mib();
    } catch (const std::exception & e) {
        ok = false;
        out["error"] = e.what();
    }
    out["ok"] = ok;
    std::printf("%s\n", out.dump().c_str());
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char ** argv) {
    std::string vocab = VISPLAY_DEFAULT_VOCAB, dir, grads_model, batch_path, out_path;
    bool cpu = false, require_gpu = false, do_bench = false;
    BenchArgs ba;
    auto usage = [&] {
        std::fprintf(stderr,
                     "usage: %s [--vocab V] [--dir DIR] [--cpu] [--require-gpu]\n"
                     "       %s --grads MODEL.gguf --batch BATCH.json --out OUT.json [--cpu]\n"
                     "       %s --bench tiny|3b [--type q4_k] [--groups 2] [--samples 8] [--prompt 256] [--response 64] [--rank 16]\n"
                     "          [--steps 5] [--warmup 2] [--micro-batch 2048] [--threads N] [--round] [--context 8192]\n"
                     "          [--release] [--round-lora 0|1] [--kv-f32] [--profile] [--frozen-matmul bf16|llama]\n"
                     "          [--cpu] [--dir DIR]\n",
                     argv[0], argv[0], argv[0]);
        return 2;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        auto next_int = [&]() { return std::atoi(next().c_str()); };
        if (a == "--vocab") vocab = next();
        else if (a == "--dir") dir = next();
        else if (a == "--cpu") cpu = true;
        else if (a == "--require-gpu") require_gpu = true;
        else if (a == "--grads") grads_model = next();
        else if (a == "--batch") batch_path = next();
        else if (a == "--out") out_path = next();
        else if (a == "--bench") { do_bench = true; ba.shape = next(); }
        else if (a == "--type") ba.type = next();
        else if (a == "--groups") ba.groups = next_int();
        else if (a == "--samples") ba.samples = next_int();
        else if (a == "--prompt") ba.prompt = next_int();
        else if (a == "--response") ba.response = next_int();
        else if (a == "--rank") ba.rank = next_int();
        else if (a == "--steps") ba.steps = next_int();
        else if (a == "--warmup") ba.warmup = next_int();
        else if (a == "--micro-batch") ba.micro_batch = next_int();
        else if (a == "--threads") ba.threads = next_int();
        else if (a == "--round") ba.round = true;
        else if (a == "--round-lora") ba.round_lora = next_int() != 0;
        else if (a == "--kv-f32") ba.kv_f32 = true;
        else if (a == "--release") ba.release = true;
        else if (a == "--profile") ba.profile = true;
        else if (a == "--frozen-matmul") ba.frozen_matmul = next();
        else if (a == "--context") ba.context = next_int();
        else return usage();
    }
    install_log_bridge();
    set_log_level(std::getenv("VISPLAY_LOG") ? std::atoi(std::getenv("VISPLAY_LOG")) : 1);
    llama_backend_init();
    try {
        if (!grads_model.empty()) {
            if (batch_path.empty() || out_path.empty()) return usage();
            return grads(grads_model, batch_path, out_path, cpu);
        }
        if (do_bench) {
            if (ba.steps < 1 || ba.groups < 1 || ba.samples < 1 || ba.prompt < 1 || ba.response < 1) return usage();
            ba.vocab = vocab;
            ba.dir = dir;
            ba.cpu = cpu;
            return bench(ba);
        }
        return parity(vocab, dir, cpu, require_gpu);
    } catch (const std::exception & e) {
        json o;
        o["ok"] = false;
        o["error"] = e.what();
        std::printf("%s\n", o.dump().c_str());
        return 2;
    }
}
