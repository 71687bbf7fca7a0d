// Module registration: the functions and classes of the binding typed in src/native.ts.
#include <napi.h>

#include "common.h"
#include "kernels_binding.h"
#include "model.h"
#include "policy.h"
#include "rollout.h"
#include "tiny_model.h"

namespace visplay {
Napi::Value merge_lora_js(const Napi::CallbackInfo & info);  // merge_lora.cpp
Napi::Value merge_projector_js(const Napi::CallbackInfo & info);  // merge_lora.cpp
}

#include "ggml-backend.h"
#include "llama.h"

#include <cstdio>
#include <mutex>

// libuv's default loop (the main thread's), exported by the node binary; node_api.h declares the type.
extern "C" struct uv_loop_s * uv_default_loop(void);

namespace visplay {
namespace {

Napi::Value system_info(const Napi::CallbackInfo & info) {
    return Napi::String::New(info.Env(), llama_print_system_info());
}

Napi::Value set_log_level_js(const Napi::CallbackInfo & info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_js(info.Env(), "ERR_INVALID_ARG", "setLogLevel expects a number 0..4");
    set_log_level(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
}

Napi::Value gpu_info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
#ifdef GGML_USE_CUDA
    out.Set("cudaBuild", true);
#else
    out.Set("cudaBuild", false);
#endif
    Napi::Array devices = Napi::Array::New(env);
    uint32_t k = 0;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_GPU) continue;
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        Napi::Object d = Napi::Object::New(env);
        d.Set("name", std::string(ggml_backend_dev_description(dev)));
        d.Set("memoryTotal", static_cast<double>(total));
        d.Set("memoryFree", static_cast<double>(free));
        devices.Set(k++, d);
    }
    out.Set("devices", devices);
    return out;
}

Napi::Value live_objects(const Napi::CallbackInfo & info) {
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("models", g_live_models.load());
    out.Set("contexts", g_live_contexts.load());
    out.Set("policies", g_live_policies.load());
    return out;
}

class TinyModelWorker : public Napi::AsyncWorker {
  public:
    TinyModelWorker(Napi::Env env, TinyModelConfig config)
        : Napi::AsyncWorker(env, "visplay.makeTinyModel"), config_(std::move(config)), deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        try {
            write_tiny_model(config_);
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        } catch (const std::exception & e) {
            SetError(coded_message("ERR_OUTPUT", e.what()));
        }
    }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }
  private:
    TinyModelConfig config_;
    Napi::Promise::Deferred deferred_;
};

Napi::Value make_tiny_model(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "makeTinyModel expects a config object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto str = [&](const char * key) {
        if (!o.Get(key).IsString()) throw_js(env, "ERR_INVALID_ARG", std::string("makeTinyModel: ") + key + " must be a string");
        return o.Get(key).As<Napi::String>().Utf8Value();
    };
    auto num = [&](const char * key, int fallback) {
        Napi::Value v = o.Get(key);
        return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
    };
    TinyModelConfig c;
    c.seed = static_cast<uint64_t>(o.Get("seed").IsNumber() ? o.Get("seed").As<Napi::Number>().Int64Value() : 1);
    c.vocab_path = str("vocabPath");
    if (o.Has("vocabularyTexts") && !o.Get("vocabularyTexts").IsUndefined()) {
        if (!o.Get("vocabularyTexts").IsArray()) throw_js(env, "ERR_INVALID_ARG", "makeTinyModel: vocabularyTexts must be an array of strings");
        Napi::Array texts = o.Get("vocabularyTexts").As<Napi::Array>();
        for (uint32_t i = 0; i < texts.Length(); ++i) {
            if (!texts.Get(i).IsString()) throw_js(env, "ERR_INVALID_ARG", "makeTinyModel: vocabularyTexts must be an array of strings");
            c.vocabulary_texts.push_back(texts.Get(i).As<Napi::String>().Utf8Value());
        }
    }
    c.model_path = str("modelPath");
    c.mmproj_path = str("mmprojPath");
    c.chat_template = str("chatTemplate");
    c.n_embd = num("embeddingSize", c.n_embd);
    c.n_layer = num("layerCount", c.n_layer);
    c.n_head = num("headCount", c.n_head);
    c.n_head_kv = num("headCountKv", c.n_head_kv);
    c.n_ff = num("feedForwardSize", c.n_ff);
    c.n_ctx_train = num("contextLength", c.n_ctx_train);
    c.v_embd = num("visionEmbeddingSize", c.v_embd);
    c.v_layer = num("visionLayerCount", c.v_layer);
    c.v_head = num("visionHeadCount", c.v_head);
    c.v_ff = num("visionFeedForwardSize", c.v_ff);
    c.image_size = num("imageSize", c.image_size);
    c.patch_size = num("patchSize", c.patch_size);
    if (o.Get("outputStd").IsNumber()) c.output_std = o.Get("outputStd").As<Napi::Number>().FloatValue();
    if (o.Get("blockStd").IsNumber()) c.block_std = o.Get("blockStd").As<Napi::Number>().FloatValue();
    c.f32_embeddings = o.Get("embeddingType").IsString() && o.Get("embeddingType").As<Napi::String>().Utf8Value() == "f32";
    auto * worker = new TinyModelWorker(env, std::move(c));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

// quantizeModel({ input, output, type, threads }) -> Promise<void>: llama.cpp's own quantizer
// (llama_model_quantize), for training on quantized base weights and for tests of that path.
class QuantizeWorker : public Napi::AsyncWorker {
  public:
    QuantizeWorker(Napi::Env env, std::string input, std::string output, llama_ftype ftype, int threads)
        : Napi::AsyncWorker(env, "visplay.quantizeModel"), input_(std::move(input)), output_(std::move(output)), ftype_(ftype), threads_(threads),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        clear_captured_log();
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.ftype = ftype_;
        p.nthread = threads_;
        const std::string tmp = output_ + ".tmp-quantize";
        if (llama_model_quantize(input_.c_str(), tmp.c_str(), &p) != 0) {
            std::remove(tmp.c_str());
            SetError(coded_message("ERR_MODEL_LOAD", with_log("quantizing " + input_ + " failed")));
            return;
        }
        if (std::rename(tmp.c_str(), output_.c_str()) != 0) SetError(coded_message("ERR_OUTPUT", "cannot write " + output_));
    }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    std::string input_, output_;
    llama_ftype ftype_;
    int threads_;
    Napi::Promise::Deferred deferred_;
};

Napi::Value quantize_model(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "quantizeModel expects { input, output, type }");
    Napi::Object o = info[0].As<Napi::Object>();
    if (!o.Get("input").IsString() || !o.Get("output").IsString() || !o.Get("type").IsString()) {
        throw_js(env, "ERR_INVALID_ARG", "quantizeModel: input, output and type must be strings");
    }
    const std::string type = o.Get("type").As<Napi::String>().Utf8Value();
    static const std::pair<const char *, llama_ftype> kTypes[] = {
        {"f16", LLAMA_FTYPE_MOSTLY_F16}, {"bf16", LLAMA_FTYPE_MOSTLY_BF16}, {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0}, {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    };
    llama_ftype ftype = LLAMA_FTYPE_ALL_F32;
    bool found = false;
    for (const auto & [name, ft] : kTypes) {
        if (type == name) {
            ftype = ft;
            found = true;
        }
    }
    if (!found) throw_js(env, "ERR_INVALID_ARG", "quantizeModel: type must be one of f16, bf16, q8_0, q4_0, q4_k_m");
    const int threads = o.Get("threads").IsNumber() ? o.Get("threads").As<Napi::Number>().Int32Value() : 0;
    auto * w = new QuantizeWorker(env, o.Get("input").As<Napi::String>().Utf8Value(), o.Get("output").As<Napi::String>().Utf8Value(), ftype, threads);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
    static std::once_flag backend_once;  // process-wide; the addon may be loaded by several worker threads
    std::call_once(backend_once, [] {
        install_log_bridge();
        llama_backend_init();
    });
    env.SetInstanceData(new AddonData());
    // The main thread's loop is libuv's default loop; a worker thread's own exit ends only that
    // thread, so only the main thread's 'exit' stops native work everywhere (see g_exiting).
    uv_loop_s * loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop == uv_default_loop()) {
        Napi::Object process = env.Global().Get("process").As<Napi::Object>();
        auto on_exit = Napi::Function::New(env, [](const Napi::CallbackInfo & info) -> Napi::Value {
            g_exiting = true;
            return info.Env().Undefined();
        }, "visplayStopNativeWork");
        process.Get("on").As<Napi::Function>().Call(process, {Napi::String::New(env, "exit"), on_exit});
    }
    exports.Set("systemInfo", Napi::Function::New(env, system_info));
    exports.Set("setLogLevel", Napi::Function::New(env, set_log_level_js));
    exports.Set("gpuInfo", Napi::Function::New(env, gpu_info));
    exports.Set("liveObjects", Napi::Function::New(env, live_objects));
    exports.Set("loadModel", Napi::Function::New(env, load_model));
    exports.Set("makeTinyModel", Napi::Function::New(env, make_tiny_model));
    exports.Set("quantizeModel", Napi::Function::New(env, quantize_model));
    exports.Set("mergeLora", Napi::Function::New(env, merge_lora_js));
    exports.Set("mergeProjector", Napi::Function::New(env, merge_projector_js));
    exports.Set("AddonModel", AddonModel::define(env));
    exports.Set("AddonRolloutContext", define_rollout_context(env));
    exports.Set("AddonPolicy", define_policy(env));
    init_kernels(env, exports);
    return exports;
}

}  // namespace
}  // namespace visplay

// NODE_API_MODULE pastes the function name into an identifier: it must be unqualified.
static Napi::Object InitVisplay(Napi::Env env, Napi::Object exports) { return visplay::init(env, exports); }
NODE_API_MODULE(visplay, InitVisplay)
