// mergeLora: folds a saved LoRA adapter into a copy of its base model's GGUF, W' = W + (alpha / r) B A,
// so the result is a plain model: the base of a later training run whose reference policy (the KL
// term's "LoRA off") is the merged model, and which llama.cpp's tools load without --lora.
// mergeProjector: folds a saved projector adapter (image rows x = e + B A e, PolicyOptions::
// projector_rank) into a copy of the mmproj's last linear layer e = W2 h + b2:
//   W2' = (I + B A) W2,  b2' = (I + B A) b2.
//
// Shapes (ggml order, ne0 first): base W [n_in, n_out], lora_a A [n_in, r], lora_b B [r, n_out];
// row o of W (n_in values) gains scale * sum_k B[o, k] * A[k, :]. The sum is accumulated in double
// and added in the base tensor's own type (F32, F16 or BF16): a quantized base cannot take a dense
// delta without re-quantizing, so it is rejected with a message saying so.
#include "common.h"
#include "adapter_file.h"

#include "ggml.h"
#include "gguf.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace visplay {
namespace {

struct GgufFile {
    gguf_context * gguf = nullptr;
    ggml_context * ctx = nullptr;
    ~GgufFile() {
        if (gguf) gguf_free(gguf);
        if (ctx) ggml_free(ctx);
    }
};

std::unique_ptr<GgufFile> read_whole(const std::string & path, const char * what) {
    auto f = std::make_unique<GgufFile>();
    gguf_init_params params = {/*no_alloc*/ false, &f->ctx};
    f->gguf = gguf_init_from_file(path.c_str(), params);
    if (!f->gguf) throw CodedError("ERR_GGUF_CORRUPT", std::string("cannot read the ") + what + " " + path + " as GGUF");
    return f;
}

// A base weight as float, and back, for the types a dense delta can be added to.
void to_float(const ggml_tensor * t, std::vector<float> & out) {
    const int64_t n = ggml_nelements(t);
    out.resize(static_cast<size_t>(n));
    if (t->type == GGML_TYPE_F32) std::memcpy(out.data(), t->data, n * sizeof(float));
    else if (t->type == GGML_TYPE_F16) ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t *>(t->data), out.data(), n);
    else ggml_bf16_to_fp32_row(static_cast<const ggml_bf16_t *>(t->data), out.data(), n);
}

void from_float(const std::vector<float> & in, ggml_tensor * t) {
    const int64_t n = ggml_nelements(t);
    if (t->type == GGML_TYPE_F32) std::memcpy(t->data, in.data(), n * sizeof(float));
    else if (t->type == GGML_TYPE_F16) ggml_fp32_to_fp16_row(in.data(), static_cast<ggml_fp16_t *>(t->data), n);
    else ggml_fp32_to_bf16_row(in.data(), static_cast<ggml_bf16_t *>(t->data), n);
}

}  // namespace

// Returns the number of base tensors changed. Throws CodedError.
int merge_lora(const std::string & base_path, const std::string & adapter_path, const std::string & out_path) {
    auto base = read_whole(base_path, "base model");
    auto adapter = read_whole(adapter_path, "adapter");
    const int64_t type_id = gguf_find_key(adapter->gguf, "adapter.type");
    if (type_id < 0 || gguf_get_kv_type(adapter->gguf, type_id) != GGUF_TYPE_STRING || std::string(gguf_get_val_str(adapter->gguf, type_id)) != "lora") {
        throw CodedError("ERR_CHECKPOINT", adapter_path + " is not a LoRA adapter (adapter.type is not \"lora\")");
    }
    const int64_t alpha_id = gguf_find_key(adapter->gguf, "adapter.lora.alpha");
    if (alpha_id < 0) throw CodedError("ERR_CHECKPOINT", adapter_path + " has no adapter.lora.alpha");
    const float alpha = gguf_get_val_f32(adapter->gguf, alpha_id);

    int merged = 0;
    int64_t rank = 0;
    std::vector<float> w;
    for (ggml_tensor * a = ggml_get_first_tensor(adapter->ctx); a; a = ggml_get_next_tensor(adapter->ctx, a)) {
        const std::string name = ggml_get_name(a);
        const std::string suffix = ".lora_a";
        if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
        const std::string weight = name.substr(0, name.size() - suffix.size());
        ggml_tensor * b = ggml_get_tensor(adapter->ctx, (weight + ".lora_b").c_str());
        ggml_tensor * wt = ggml_get_tensor(base->ctx, weight.c_str());
        if (!b) throw CodedError("ERR_CHECKPOINT", adapter_path + ": " + name + " has no matching .lora_b");
        if (!wt) throw CodedError("ERR_CHECKPOINT", adapter_path + " adapts " + weight + ", which " + base_path + " does not have");
        if (a->type != GGML_TYPE_F32 || b->type != GGML_TYPE_F32) throw CodedError("ERR_CHECKPOINT", adapter_path + ": " + weight + " is not stored in F32");
        const int64_t n_in = wt->ne[0], n_out = wt->ne[1], r = a->ne[1];
        if (a->ne[0] != n_in || b->ne[0] != r || b->ne[1] != n_out || ggml_n_dims(wt) != 2) {
            throw CodedError("ERR_CHECKPOINT", adapter_path + ": the shapes of " + weight + "'s A/B do not fit the base weight");
        }
        if (wt->type != GGML_TYPE_F32 && wt->type != GGML_TYPE_F16 && wt->type != GGML_TYPE_BF16) {
            throw CodedError("ERR_UNSUPPORTED_MODEL", base_path + ": " + weight + " is " + ggml_type_name(wt->type) +
                             "; a LoRA merges only into F32, F16 or BF16 weights (merge into the unquantized model, then quantize)");
        }
        rank = r;
        const double scale = static_cast<double>(alpha) / static_cast<double>(r);
        const float * A = static_cast<const float *>(a->data);  // [r][n_in]
        const float * B = static_cast<const float *>(b->data);  // [n_out][r]
        to_float(wt, w);
        std::vector<double> row(static_cast<size_t>(n_in));
        for (int64_t o = 0; o < n_out; ++o) {
            std::fill(row.begin(), row.end(), 0.0);
            for (int64_t k = 0; k < r; ++k) {
                const double bk = B[o * r + k];
                if (bk == 0.0) continue;
                const float * ak = A + k * n_in;
                for (int64_t i = 0; i < n_in; ++i) row[i] += bk * ak[i];
            }
            float * wo = w.data() + o * n_in;
            for (int64_t i = 0; i < n_in; ++i) wo[i] = static_cast<float>(wo[i] + scale * row[i]);
        }
        from_float(w, wt);
        ++merged;
    }
    if (merged == 0) throw CodedError("ERR_CHECKPOINT", adapter_path + " has no LoRA tensors");

    // The copy: every key of the base, every tensor (changed or not) in the base's order.
    std::unique_ptr<gguf_context, decltype(&gguf_free)> out(gguf_init_empty(), gguf_free);
    gguf_set_kv(out.get(), base->gguf);
    // What was folded in, without paths (two runs that merge equal adapters write equal files).
    const std::string what = "LoRA rank " + std::to_string(rank) + ", alpha " + std::to_string(alpha) + ", " + std::to_string(merged) + " weights";
    gguf_set_val_str(out.get(), "visplay.merged_lora", what.c_str());
    for (int64_t i = 0; i < gguf_get_n_tensors(base->gguf); ++i) {
        ggml_tensor * t = ggml_get_tensor(base->ctx, gguf_get_tensor_name(base->gguf, i));
        gguf_add_tensor(out.get(), t);
    }
    write_atomically(out_path, [&](const std::string & tmp) {
        write_gguf(out.get(), tmp, "the merged model");
    });
    return merged;
}

// Projector types whose image rows are exactly the output of the linear layer mm.2 (Qwen2-VL's and
// Qwen2.5-VL's patch merger: ... -> mm.0 -> GELU -> mm.2).
const char * const kMergeableProjectors[] = {"qwen2vl_merger", "qwen2.5vl_merger"};

int merge_projector(const std::string & mmproj_path, const std::string & projector_path, const std::string & out_path) {
    auto base = read_whole(mmproj_path, "mmproj");
    auto adapter = read_whole(projector_path, "projector adapter");
    const int64_t type_id = gguf_find_key(base->gguf, "clip.projector_type");
    const std::string type = type_id >= 0 && gguf_get_kv_type(base->gguf, type_id) == GGUF_TYPE_STRING ? gguf_get_val_str(base->gguf, type_id) : "";
    bool known = false;
    for (const char * t : kMergeableProjectors) known = known || type == t;
    if (!known) {
        throw CodedError("ERR_UNSUPPORTED_MODEL", mmproj_path + ": projector type '" + type +
                                                      "' cannot take a projector adapter (supported: qwen2vl_merger, qwen2.5vl_merger)");
    }
    ggml_tensor * a = ggml_get_tensor(adapter->ctx, (std::string(kProjectorName) + ".lora_a").c_str());
    ggml_tensor * b = ggml_get_tensor(adapter->ctx, (std::string(kProjectorName) + ".lora_b").c_str());
    if (!a || !b) throw CodedError("ERR_CHECKPOINT", projector_path + " has no projector.lora_a / projector.lora_b");
    ggml_tensor * w2 = ggml_get_tensor(base->ctx, "mm.2.weight");
    ggml_tensor * b2 = ggml_get_tensor(base->ctx, "mm.2.bias");
    if (!w2) throw CodedError("ERR_UNSUPPORTED_MODEL", mmproj_path + " has no mm.2.weight");
    const int64_t n_in = w2->ne[0], n_embd = w2->ne[1], r = a->ne[1];
    if (a->type != GGML_TYPE_F32 || b->type != GGML_TYPE_F32 || a->ne[0] != n_embd || b->ne[0] != r || b->ne[1] != n_embd ||
        (b2 && ggml_nelements(b2) != n_embd)) {
        throw CodedError("ERR_CHECKPOINT", projector_path + ": the projector adapter's shapes do not fit " + mmproj_path + "'s mm.2 (" +
                                               std::to_string(n_in) + " -> " + std::to_string(n_embd) + ")");
    }
    for (ggml_tensor * t : {w2, b2}) {
        if (t && t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16) {
            throw CodedError("ERR_UNSUPPORTED_MODEL", mmproj_path + ": " + ggml_get_name(t) + " is " + ggml_type_name(t->type) + "; only F32, F16 or BF16 take a merge");
        }
    }
    // M = B A: [n_embd][n_embd], M[o][j] = sum_k B[o][k] A[k][j] (A stored [r][n_embd], B [n_embd][r]).
    const float * A = static_cast<const float *>(a->data);
    const float * B = static_cast<const float *>(b->data);
    std::vector<double> M(static_cast<size_t>(n_embd * n_embd), 0.0);
    for (int64_t o = 0; o < n_embd; ++o)
        for (int64_t k = 0; k < r; ++k) {
            const double bk = B[o * r + k];
            for (int64_t j = 0; j < n_embd; ++j) M[o * n_embd + j] += bk * A[k * n_embd + j];
        }
    // Rows of W2 ([n_embd][n_in]) and b2 mix through (I + M); computed from the old values.
    auto mix = [&](ggml_tensor * t, int64_t cols) {
        std::vector<float> old;
        to_float(t, old);
        std::vector<float> mixed(old.size());
        std::vector<double> acc(static_cast<size_t>(cols));
        for (int64_t o = 0; o < n_embd; ++o) {
            for (int64_t i = 0; i < cols; ++i) acc[i] = old[o * cols + i];
            for (int64_t j = 0; j < n_embd; ++j) {
                const double m = M[o * n_embd + j];
                if (m == 0.0) continue;
                const float * src = old.data() + j * cols;
                for (int64_t i = 0; i < cols; ++i) acc[i] += m * src[i];
            }
            for (int64_t i = 0; i < cols; ++i) mixed[o * cols + i] = static_cast<float>(acc[i]);
        }
        from_float(mixed, t);
    };
    mix(w2, n_in);
    if (b2) mix(b2, 1);

    std::unique_ptr<gguf_context, decltype(&gguf_free)> out(gguf_init_empty(), gguf_free);
    gguf_set_kv(out.get(), base->gguf);
    const std::string what = "projector adapter rank " + std::to_string(r) + " into mm.2";
    gguf_set_val_str(out.get(), "visplay.merged_projector", what.c_str());
    for (int64_t i = 0; i < gguf_get_n_tensors(base->gguf); ++i) gguf_add_tensor(out.get(), ggml_get_tensor(base->ctx, gguf_get_tensor_name(base->gguf, i)));
    write_atomically(out_path, [&](const std::string & tmp) { write_gguf(out.get(), tmp, "the merged mmproj"); });
    return b2 ? 2 : 1;
}

namespace {

class MergeLoraWorker : public Napi::AsyncWorker {
  public:
    using MergeFn = int (*)(const std::string &, const std::string &, const std::string &);
    MergeLoraWorker(Napi::Env env, const char * name, MergeFn fn, std::string base, std::string adapter, std::string out)
        : Napi::AsyncWorker(env, name), fn_(fn), base_(std::move(base)), adapter_(std::move(adapter)), out_(std::move(out)),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        try {
            merged_ = fn_(base_, adapter_, out_);
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        } catch (const std::exception & e) {
            SetError(coded_message("ERR_OUTPUT", e.what()));
        }
    }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), merged_)); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }
  private:
    MergeFn fn_;
    std::string base_, adapter_, out_;
    int merged_ = 0;
    Napi::Promise::Deferred deferred_;
};

}  // namespace

// mergeLora(base, adapter, out): Promise<number of merged weights>. Paths are checked in TS first.
Napi::Value merge_lora_js(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString()) {
        throw_js(env, "ERR_INVALID_ARG", "mergeLora expects (base path, adapter path, output path)");
    }
    auto * worker = new MergeLoraWorker(env, "visplay.mergeLora", merge_lora, info[0].As<Napi::String>(), info[1].As<Napi::String>(), info[2].As<Napi::String>());
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

// mergeProjector(mmproj, projector adapter, out): Promise<number of merged tensors>. Paths are checked in TS first.
Napi::Value merge_projector_js(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsString() || !info[2].IsString()) {
        throw_js(env, "ERR_INVALID_ARG", "mergeProjector expects (mmproj path, projector adapter path, output path)");
    }
    auto * worker = new MergeLoraWorker(env, "visplay.mergeProjector", merge_projector, info[0].As<Napi::String>(), info[1].As<Napi::String>(),
                                        info[2].As<Napi::String>());
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

}  // namespace visplay
