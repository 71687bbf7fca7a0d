#include "adapter_file.h"

#include "common.h"

#include "gguf.h"
#include "llama-adapter.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace visplay {

namespace {

struct GgufDeleter { void operator()(gguf_context * c) const { gguf_free(c); } };
struct GgmlDeleter { void operator()(ggml_context * c) const { ggml_free(c); } };
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

void fsync_path(const std::string & path, bool directory) {
    const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) {
        if (directory) return;  // some filesystems refuse to open folders; the rename is still atomic
        throw CodedError("ERR_OUTPUT", "cannot reopen " + path + " to sync it: " + std::strerror(errno));
    }
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0 && !directory) throw CodedError("ERR_OUTPUT", "fsync of " + path + " failed: " + std::strerror(err));
}

GgufPtr open_gguf(const std::string & path, ggml_context ** data_ctx, const char * what) {
    if (!std::filesystem::exists(path)) throw CodedError("ERR_FILE_NOT_FOUND", std::string(what) + " not found: " + path);
    gguf_init_params p = {data_ctx == nullptr, data_ctx};
    GgufPtr g(gguf_init_from_file(path.c_str(), p));
    if (!g) throw CodedError("ERR_CHECKPOINT", std::string(what) + " " + path + " is not a readable GGUF file");
    return g;
}

std::string get_str(gguf_context * g, const char * key) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) return "";
    return gguf_get_val_str(g, id);
}

int64_t get_i64(gguf_context * g, const char * key, int64_t fallback) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) return fallback;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
        case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
        case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
        case GGUF_TYPE_UINT64: return static_cast<int64_t>(gguf_get_val_u64(g, id));
        default: return fallback;
    }
}

// Copies a saved file's tensors named as `pair`'s A and B (F32, same shapes) into them.
void copy_saved_pair(ggml_context * data, LoraPair & pair, const std::string & path) {
    for (ggml_tensor * dst : {pair.a, pair.b}) {
        ggml_tensor * src = ggml_get_tensor(data, ggml_get_name(dst));
        if (!src || src->type != GGML_TYPE_F32 || !ggml_are_same_shape(src, dst)) {
            throw CodedError("ERR_CHECKPOINT", path + ": tensor " + ggml_get_name(dst) + " is missing or has another shape or type (an adapter for another model?)");
        }
        ggml_backend_tensor_set(dst, src->data, 0, ggml_nbytes(dst));  // host or GPU memory (a GPU trainer's pairs)
    }
}



void check_fingerprint(gguf_context * g, const std::string & fingerprint, const std::string & path) {
    const std::string saved = get_str(g, "visplay.base.fingerprint");
    if (!saved.empty() && saved != fingerprint) {
        throw CodedError("ERR_CHECKPOINT", path + " was made for another model (" + saved + "), not this one (" + fingerprint + ")");
    }
}

}  // namespace

// gguf_write_to_file ignores fclose(), which writes the last buffered bytes: on a full disk it
// reports success for a truncated file, which write_atomically would then rename into place.
// Write through our own FILE* and check the final flush and close as well.
void write_gguf(const gguf_context * g, const std::string & path, const std::string & what) {
    errno = 0;
    FILE * f = std::fopen(path.c_str(), "wb");
    if (!f) throw CodedError("ERR_OUTPUT", "cannot write " + what + " to " + path + ": " + std::strerror(errno));
    bool ok = gguf_write_to_file_ptr(g, f, false);
    int err = ok ? 0 : errno;
    if (std::fflush(f) != 0 && err == 0) err = errno, ok = false;
    if (std::fclose(f) != 0 && err == 0) err = errno, ok = false;
    if (!ok) throw CodedError("ERR_OUTPUT", "cannot write " + what + " to " + path + ": " + std::strerror(err != 0 ? err : EIO));
}

std::string adapter_fingerprint(const LmView & lm) {
    return lm.arch + ":embd=" + std::to_string(lm.n_embd) + ",layers=" + std::to_string(lm.n_layer) + ",heads=" + std::to_string(lm.n_head) + "/" +
           std::to_string(lm.n_head_kv) + ",ff=" + std::to_string(lm.n_ff) + ",vocab=" + std::to_string(lm.n_vocab);
}

void write_atomically(const std::string & path, const std::function<void(const std::string &)> & write) {
    const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
    try {
        write(tmp);
        fsync_path(tmp, false);
        std::filesystem::rename(tmp, path);
    } catch (const std::filesystem::filesystem_error & e) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw CodedError("ERR_OUTPUT", "cannot write " + path + ": " + e.code().message());
    } catch (...) {
        std::error_code ec;
        std::filesystem::remove(tmp, ec);
        throw;
    }
    fsync_path(std::filesystem::path(path).parent_path().string().empty() ? "." : std::filesystem::path(path).parent_path().string(), true);
}

void write_adapter_file(const std::string & path, const std::string & arch, const PolicyOptions & options,
                        const std::vector<LoraPair> & pairs, const std::string & fingerprint, int64_t step) {
    GgufPtr g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.architecture", arch.c_str());
    gguf_set_val_str(g.get(), "general.type", "adapter");
    gguf_set_val_str(g.get(), "general.name", "visplay-native LoRA");
    gguf_set_val_str(g.get(), "adapter.type", "lora");
    gguf_set_val_f32(g.get(), "adapter.lora.alpha", options.alpha);
    gguf_set_val_u32(g.get(), "visplay.lora.rank", static_cast<uint32_t>(options.rank));
    std::vector<const char *> targets;
    for (const auto & t : options.targets) targets.push_back(t.c_str());
    gguf_set_arr_str(g.get(), "visplay.lora.targets", targets.data(), targets.size());
    gguf_set_val_u64(g.get(), "visplay.lora.seed", options.seed);
    gguf_set_val_u32(g.get(), "visplay.projector.rank", static_cast<uint32_t>(options.projector_rank));
    gguf_set_val_i64(g.get(), "visplay.step", step);
    gguf_set_val_str(g.get(), "visplay.base.fingerprint", fingerprint.c_str());
    // gguf's writer reads a tensor that has a backend buffer through ggml_backend_tensor_get, so the
    // GPU trainer's pairs are written from GPU memory as they are (overriding such a tensor's data
    // pointer with a host copy would make the writer read a host address as a device one).
    for (const auto & lp : pairs) {
        gguf_add_tensor(g.get(), lp.a);
        gguf_add_tensor(g.get(), lp.b);
    }
    write_atomically(path, [&](const std::string & tmp) {
        write_gguf(g.get(), tmp, "the adapter");
    });
}

int64_t read_adapter_into(const std::string & path, const std::string & arch, const std::string & fingerprint, std::vector<LoraPair> & pairs) {
    ggml_context * data = nullptr;
    GgufPtr g = open_gguf(path, &data, "LoRA adapter");
    GgmlPtr data_owner(data);
    if (get_str(g.get(), "general.type") != "adapter" || get_str(g.get(), "adapter.type") != "lora") {
        throw CodedError("ERR_CHECKPOINT", path + " is not a LoRA adapter (general.type/adapter.type)");
    }
    if (get_str(g.get(), "general.architecture") != arch) {
        throw CodedError("ERR_CHECKPOINT", path + " is an adapter for architecture '" + get_str(g.get(), "general.architecture") + "', not '" + arch + "'");
    }
    check_fingerprint(g.get(), fingerprint, path);
    const int64_t n_file = gguf_get_n_tensors(g.get());
    if (n_file != static_cast<int64_t>(pairs.size() * 2)) {
        throw CodedError("ERR_CHECKPOINT", path + " holds " + std::to_string(n_file) + " LoRA tensors, the policy has " + std::to_string(pairs.size() * 2));
    }
    for (auto & lp : pairs) copy_saved_pair(data, lp, path);
    return get_i64(g.get(), "visplay.step", 0);
}

void write_projector_file(const std::string & path, const LoraPair & projector, const std::string & fingerprint, int64_t step) {
    GgufPtr g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.type", "adapter");
    gguf_set_val_str(g.get(), "general.name", "visplay-native projector adapter");
    gguf_set_val_str(g.get(), "adapter.type", "visplay-projector");
    gguf_set_val_u32(g.get(), "visplay.projector.rank", static_cast<uint32_t>(projector.a->ne[1]));
    gguf_set_val_i64(g.get(), "visplay.step", step);
    gguf_set_val_str(g.get(), "visplay.base.fingerprint", fingerprint.c_str());
    gguf_add_tensor(g.get(), projector.a);  // host or GPU memory, as in write_adapter_file
    gguf_add_tensor(g.get(), projector.b);
    write_atomically(path, [&](const std::string & tmp) { write_gguf(g.get(), tmp, "the projector adapter"); });
}

int64_t read_projector_into(const std::string & path, const std::string & fingerprint, LoraPair & projector) {
    ggml_context * data = nullptr;
    GgufPtr g = open_gguf(path, &data, "projector adapter");
    GgmlPtr data_owner(data);
    if (get_str(g.get(), "adapter.type") != "visplay-projector") throw CodedError("ERR_CHECKPOINT", path + " is not a projector adapter (adapter.type)");
    check_fingerprint(g.get(), fingerprint, path);
    copy_saved_pair(data, projector, path);
    return get_i64(g.get(), "visplay.step", 0);
}

PolicyOptions read_adapter_options(const std::string & path, const PolicyOptions & base) {
    GgufPtr g = open_gguf(path, nullptr, "LoRA adapter");
    PolicyOptions o = base;
    const int64_t alpha_id = gguf_find_key(g.get(), "adapter.lora.alpha");
    if (alpha_id >= 0) o.alpha = gguf_get_val_f32(g.get(), alpha_id);
    o.rank = static_cast<int>(get_i64(g.get(), "visplay.lora.rank", 0));
    o.projector_rank = static_cast<int>(get_i64(g.get(), "visplay.projector.rank", 0));
    const int64_t seed_id = gguf_find_key(g.get(), "visplay.lora.seed");
    if (seed_id >= 0) o.seed = gguf_get_val_u64(g.get(), seed_id);
    const int64_t t_id = gguf_find_key(g.get(), "visplay.lora.targets");
    if (t_id >= 0) {
        o.targets.clear();
        for (size_t i = 0; i < gguf_get_arr_n(g.get(), t_id); ++i) o.targets.emplace_back(gguf_get_arr_str(g.get(), t_id, i));
    }
    if (o.rank <= 0) {
        // An adapter from elsewhere: rank from a lora_b tensor (ne [rank, n_out]), targets from the names.
        o.targets.clear();
        for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
            std::string name = gguf_get_tensor_name(g.get(), i);
            for (const auto & m : lora_module_names()) {
                if (name.find("." + m + ".weight.lora_a") != std::string::npos &&
                    std::find(o.targets.begin(), o.targets.end(), m) == o.targets.end()) {
                    o.targets.push_back(m);
                }
            }
        }
        ggml_context * data = nullptr;
        GgufPtr g2 = open_gguf(path, &data, "LoRA adapter");
        GgmlPtr owner(data);
        for (ggml_tensor * t = ggml_get_first_tensor(data); t; t = ggml_get_next_tensor(data, t)) {
            if (std::string(ggml_get_name(t)).find(".lora_b") != std::string::npos) {
                o.rank = static_cast<int>(t->ne[0]);
                break;
            }
        }
        if (o.rank <= 0 || o.targets.empty()) throw CodedError("ERR_CHECKPOINT", path + " holds no LoRA tensors this trainer understands");
    }
    return o;
}

void write_optimizer_file(const std::string & path, const OptimizerState & st, const std::string & fingerprint) {
    GgufPtr g(gguf_init_empty());
    gguf_set_val_str(g.get(), "general.type", "visplay-optimizer");
    gguf_set_val_str(g.get(), "visplay.base.fingerprint", fingerprint.c_str());
    gguf_set_val_i64(g.get(), "visplay.step", st.step);
    gguf_set_val_i64(g.get(), "visplay.skipped_steps", st.skipped_steps);
    for (int i = 0; i < 4; ++i) gguf_set_val_u64(g.get(), ("visplay.rng." + std::to_string(i)).c_str(), st.rng[i]);
    gguf_set_val_f64(g.get(), "visplay.adamw.lr", st.opt.lr);
    gguf_set_val_f64(g.get(), "visplay.adamw.beta1", st.opt.beta1);
    gguf_set_val_f64(g.get(), "visplay.adamw.beta2", st.opt.beta2);
    gguf_set_val_f64(g.get(), "visplay.adamw.eps", st.opt.eps);
    gguf_set_val_f64(g.get(), "visplay.adamw.weight_decay", st.opt.weight_decay);
    gguf_set_val_f64(g.get(), "visplay.adamw.max_grad_norm", st.opt.max_grad_norm);
    ggml_init_params p = {ggml_tensor_overhead() * (st.tensors.size() * 2 + 1), nullptr, true};
    GgmlPtr meta(ggml_init(p));
    for (const auto & t : st.tensors) {
        for (const auto & [suffix, data] : {std::pair<const char *, const std::vector<float> *>{".m", t.m}, {".v", t.v}}) {
            ggml_tensor * tensor = ggml_new_tensor_1d(meta.get(), GGML_TYPE_F32, static_cast<int64_t>(data->size()));
            ggml_set_name(tensor, (t.name + suffix).c_str());
            gguf_add_tensor(g.get(), tensor);
            gguf_set_tensor_data(g.get(), ggml_get_name(tensor), data->data());
        }
    }
    write_atomically(path, [&](const std::string & tmp) {
        write_gguf(g.get(), tmp, "the optimizer state");
    });
}

LoadedOptimizer read_optimizer_file(const std::string & path, const std::string & fingerprint) {
    ggml_context * data = nullptr;
    GgufPtr g = open_gguf(path, &data, "optimizer state");
    GgmlPtr owner(data);
    if (get_str(g.get(), "general.type") != "visplay-optimizer") throw CodedError("ERR_CHECKPOINT", path + " is not a visplay optimizer state");
    check_fingerprint(g.get(), fingerprint, path);
    LoadedOptimizer lo;
    lo.step = get_i64(g.get(), "visplay.step", 0);
    lo.skipped_steps = get_i64(g.get(), "visplay.skipped_steps", 0);
    for (int i = 0; i < 4; ++i) {
        const int64_t id = gguf_find_key(g.get(), ("visplay.rng." + std::to_string(i)).c_str());
        if (id >= 0) lo.rng[i] = gguf_get_val_u64(g.get(), id);
    }
    for (ggml_tensor * t = ggml_get_first_tensor(data); t; t = ggml_get_next_tensor(data, t)) {
        std::string name = ggml_get_name(t);
        if (t->type != GGML_TYPE_F32 || name.size() < 3) continue;
        const std::string base = name.substr(0, name.size() - 2);
        const float * d = static_cast<const float *>(t->data);
        auto & entry = lo.moments[base];
        (name.compare(name.size() - 2, 2, ".m") == 0 ? entry.first : entry.second).assign(d, d + ggml_nelements(t));
    }
    return lo;
}

bool write_adapter_weight(llama_adapter_lora * adapter, const LoraPair & pair) {
    auto it = adapter->ab_map.find(pair.base_name);
    if (it == adapter->ab_map.end()) return false;
    // Host -> device, or device -> device when the trainer runs on the GPU that holds the adapter.
    ggml_backend_tensor_copy(pair.a, it->second.a);
    ggml_backend_tensor_copy(pair.b, it->second.b);
    return true;
}

}  // namespace visplay
