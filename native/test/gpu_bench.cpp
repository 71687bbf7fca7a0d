// visplay_gpu_bench: generated tokens/s of our batched rollouts at 1, 8 and 32 parallel sequences, with
// the vendored llama-batched-bench on the same model and the same token counts as the peer, in the
// same run. No Node.js (the GPU machines may have none): it links the Node-free core. The C++ twin of
// bench/rollouts.ts, for the GPU:
//
//   visplay_gpu_bench --batched-bench build/bin/llama-batched-bench [--vocab V] [--model M --mmproj P]
//                     [--parallel 1,8,32] [--pp 128] [--tg 64] [--repeats 5] [--threads N] [--cpu]
//                     [--temperature 1] [--json FILE]
//
// Both sides: prompt of pp tokens shared by all sequences (our engine: one request with n = p samples
// of a prompt evaluated once; batched-bench: -pps), tg tokens generated per sequence (end of text
// ignored), batch 512, flash attention off, context p * (pp + tg) + 256, all layers on the GPU
// (-ngl 99; --cpu: both on the CPU). Ours: (generated tokens - p) / generation time (the first token
// of each sequence comes from the prompt's logits), including sampling from the full vocabulary on
// the CPU (T = 1 by default; --temperature 0 is greedy) and each token's log-prob (a log-sum-exp over
// the vocabulary in every case); batched-bench's speed_tg samples nothing. Median of
// `repeats` runs after one warm-up run, each side.
#include "core_common.h"
#include "model_core.h"
#include "rollout_core.h"
#include "test_support.h"
#include "tiny_model.h"

#include "ggml-backend.h"
#include "llama.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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

namespace {

struct Stat { double median = 0, min = 0, max = 0; };
Stat stat_of(std::vector<double> xs) {
    Stat s;
    if (xs.empty()) return s;
    std::sort(xs.begin(), xs.end());
    s.median = xs[xs.size() / 2];
    s.min = xs.front();
    s.max = xs.back();
    return s;
}

std::vector<int> parse_list(const std::string & s) {
    std::vector<int> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) v.push_back(std::atoi(item.c_str()));
    return v;
}

// speed_tg of the last JSONL line of llama-batched-bench, or a negative value.
double run_peer(const std::string & cmd, std::string & error) {
    FILE * f = popen(cmd.c_str(), "r");
    if (!f) { error = "could not start llama-batched-bench"; return -1; }
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    const int rc = pclose(f);
    double speed = -1;
    std::stringstream ss(out);
    std::string line;
    while (std::getline(ss, line)) {
        const size_t k = line.find("\"speed_tg\":");
        if (line.rfind("{", 0) == 0 && k != std::string::npos) speed = std::atof(line.c_str() + k + 11);
    }
    if (rc != 0 || speed < 0) error = "llama-batched-bench failed (exit " + std::to_string(rc) + ")";
    return speed;
}

}  // namespace

int main(int argc, char ** argv) {
    std::string vocab = VISPLAY_DEFAULT_VOCAB, model_path, mmproj_path, peer_bin, json_path, dir;
    std::vector<int> levels = {1, 8, 32};
    int pp = 128, tg = 64, repeats = 5, threads = 0;
    float temperature = 1.0f;
    bool cpu = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--vocab") vocab = next();
        else if (a == "--model") model_path = next();
        else if (a == "--mmproj") mmproj_path = next();
        else if (a == "--batched-bench") peer_bin = next();
        else if (a == "--parallel") levels = parse_list(next());
        else if (a == "--pp") pp = std::atoi(next().c_str());
        else if (a == "--tg") tg = std::atoi(next().c_str());
        else if (a == "--repeats") repeats = std::max(1, std::atoi(next().c_str()));
        else if (a == "--threads") threads = std::atoi(next().c_str());
        else if (a == "--temperature") temperature = static_cast<float>(std::atof(next().c_str()));
        else if (a == "--json") json_path = next();
        else if (a == "--dir") dir = next();
        else if (a == "--cpu") cpu = true;
        else {
            std::fprintf(stderr, "usage: %s --batched-bench PATH [--vocab V] [--model M --mmproj P] [--parallel 1,8,32] "
                                 "[--pp 128] [--tg 64] [--repeats 5] [--threads N] [--temperature T] [--cpu] [--json FILE] [--dir DIR]\n", argv[0]);
            return 2;
        }
    }
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    install_log_bridge();
    set_log_level(1);
    llama_backend_init();

    std::string device = "CPU";
    if (!cpu) {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_GPU) { device = ggml_backend_dev_description(d); break; }
        }
        if (device == "CPU") {
            std::fprintf(stderr, "visplay_gpu_bench: no GPU device (a CUDA build on a CUDA machine is needed; --cpu runs on the CPU)\n");
            return 2;
        }
    }

    namespace fs = std::filesystem;
    if (model_path.empty()) {  // the tiny model, as bench/rollouts.ts uses it (seed 1, F16 embeddings)
        const fs::path d = dir.empty() ? fs::temp_directory_path() / ("visplay-gpu-bench-" + std::to_string(::getpid())) : fs::path(dir);
        fs::create_directories(d);
        TinyModelConfig c;
        c.seed = 1;
        c.vocab_path = vocab;
        c.model_path = (d / "tiny-qwen2.5-vl.gguf").string();
        c.mmproj_path = (d / "mmproj-tiny-qwen2.5-vl.gguf").string();
        try {
            write_tiny_model(c);
        } catch (const std::exception & e) {
            std::fprintf(stderr, "visplay_gpu_bench: writing the tiny model: %s\n", e.what());
            return 2;
        }
        model_path = c.model_path;
        mmproj_path = c.mmproj_path;
    }

    const LoadOptions lo = visplay::test::load_options(model_path, mmproj_path, !cpu, threads);
    std::shared_ptr<ModelState> model;
    try {
        model = ModelState::load(lo);
    } catch (const std::exception & e) {
        std::fprintf(stderr, "visplay_gpu_bench: %s\n", e.what());
        return 2;
    }
    // A prompt of exactly pp tokens: " the" repeated (as bench/rollouts.ts).
    const auto unit = tokenize_text(model->vocab, " the", false, false);
    std::string prompt;
    for (int i = 0; i < pp; ++i) prompt += token_piece(model->vocab, unit.at(0), false);

    // Per decode step, medians over the repeats: in llama_decode and drawing the tokens (host).
    struct Row { int parallel; Stat ours, peer; std::string peer_error; double decode_step_ms = 0, sample_step_ms = 0; };
    std::vector<Row> rows;
    const int max_level = *std::max_element(levels.begin(), levels.end());
    const int context = max_level * (pp + tg) + 256;
    for (int p : levels) {
        Row row;
        row.parallel = p;
        std::vector<double> ours, decode_step, sample_step;
        try {
            ContextOptions co;
            co.context_size = context;
            co.parallel = p;
            co.batch_size = 512;
            co.threads = threads;
            co.flash_attention = 0;
            RolloutContextState ctx(model, co);
            RequestInput req;
            req.prompt = prompt;
            req.n = p;
            req.max_tokens = tg;
            req.temperature = temperature;
            req.ignore_eos = true;
            for (int r = 0; r <= repeats; ++r) {
                req.seed = static_cast<uint64_t>(r);
                GenerateStats st;
                ctx.generate({}, {req}, st, nullptr);
                if (r > 0) {
                    ours.push_back(static_cast<double>(st.generated_tokens - p) / (st.generate_ms / 1000.0));
                    const double steps = std::max(1, st.decode_calls - 1);  // the prompt's decode is not a generation step
                    decode_step.push_back(st.decode_ms / steps);
                    sample_step.push_back(st.sample_ms / steps);
                }
            }
        } catch (const std::exception & e) {
            std::fprintf(stderr, "visplay_gpu_bench: our engine at %d: %s\n", p, e.what());
            return 1;
        }
        row.ours = stat_of(ours);
        row.decode_step_ms = stat_of(decode_step).median;
        row.sample_step_ms = stat_of(sample_step).median;
        if (!peer_bin.empty()) {
            std::ostringstream cmd;
            cmd << "'" << peer_bin << "' -m '" << model_path << "' -c " << context << " -b 512 -ub 512 -npp " << pp
                << " -ntg " << tg << " -npl " << p << " -pps -t " << threads << " -fa off -ngl " << (cpu ? 0 : 99)
                << " --output-format jsonl 2>/dev/null";
            std::vector<double> peer;
            for (int r = 0; r <= repeats && row.peer_error.empty(); ++r) {
                const double s = run_peer(cmd.str(), row.peer_error);
                if (r > 0 && s >= 0) peer.push_back(s);
            }
            row.peer = stat_of(peer);
        } else {
            row.peer_error = "no --batched-bench given";
        }
        rows.push_back(row);
    }

    std::ostringstream js;
    js << "{\"benchmark\":\"gpu-rollouts\",\"device\":\"" << device << "\",\"model\":\"" << model_path << "\",\"pp\":" << pp
       << ",\"tg\":" << tg << ",\"repeats\":" << repeats << ",\"threads\":" << threads << ",\"temperature\":" << temperature
       << ",\"rows\":[";
    for (size_t i = 0; i < rows.size(); ++i) {
        const Row & r = rows[i];
        js << (i ? "," : "") << "{\"parallel\":" << r.parallel << ",\"ours\":{\"median\":" << r.ours.median << ",\"min\":" << r.ours.min
           << ",\"max\":" << r.ours.max << "},\"decode_ms_per_step\":" << r.decode_step_ms << ",\"sample_ms_per_step\":" << r.sample_step_ms;
        if (r.peer_error.empty()) {
            js << ",\"peer\":{\"median\":" << r.peer.median << ",\"min\":" << r.peer.min << ",\"max\":" << r.peer.max
               << "},\"ratio\":" << (r.peer.median > 0 ? r.ours.median / r.peer.median : 0);
        } else {
            js << ",\"peer_error\":\"" << r.peer_error << "\"";
        }
        js << "}";
    }
    js << "]}";
    if (!json_path.empty()) std::ofstream(json_path) << js.str() << "\n";

    std::printf("rollout throughput on %s, generated tokens/s (median of %d, [min-max]); prompt %d shared, %d generated\n",
                device.c_str(), repeats, pp, tg);
    std::printf("| parallel | visplay-native (T=%g + log-probs) | llama-batched-bench (no sampling) | ratio | ours per step: decode ms | sampling ms |\n"
                "|---:|---:|---:|---:|---:|---:|\n", temperature);
    for (const Row & r : rows) {
        char peer[128] = "-", ratio[32] = "-";
        if (r.peer_error.empty()) {
            std::snprintf(peer, sizeof(peer), "%.0f [%.0f-%.0f]", r.peer.median, r.peer.min, r.peer.max);
            std::snprintf(ratio, sizeof(ratio), "%.2f", r.ours.median / r.peer.median);
        } else {
            std::snprintf(peer, sizeof(peer), "%s", r.peer_error.c_str());
        }
        std::printf("| %d | %.0f [%.0f-%.0f] | %s | %s | %.3f | %.3f |\n", r.parallel, r.ours.median, r.ours.min, r.ours.max, peer, ratio,
                    r.decode_step_ms, r.sample_step_ms);
    }
    std::printf("%s\n", js.str().c_str());
    if (dir.empty() && model_path.find("visplay-gpu-bench-") != std::string::npos) {
        std::error_code ec;
        fs::remove_all(fs::path(model_path).parent_path(), ec);
    }
    return 0;
}
