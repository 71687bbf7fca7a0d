// The JS model object: async load, metadata, tokenizer, and the factories of contexts and
// policies (see model.h; the loading itself is model_core.cpp).
#include "model.h"
#include "policy.h"

#include "common.h"
#include "rollout.h"

#include <algorithm>

namespace visplay {

// ---- async load ------------------------------------------------------------------------------

namespace {

class LoadWorker : public Napi::AsyncWorker {
  public:
    LoadWorker(Napi::Env env, LoadOptions options)
        : Napi::AsyncWorker(env, "visplay.loadModel"), options_(std::move(options)), deferred_(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        clear_captured_log();
        try {
            state_ = ModelState::load(options_);
        } catch (const CodedError & e) {
            state_.reset();
            SetError(coded_message(e.code, e.what()));
        } catch (const std::exception & e) {
            state_.reset();
            SetError(coded_message("ERR_MODEL_LOAD", with_log(std::string("failed to load the model: ") + e.what())));
        }
    }
    void OnOK() override { deferred_.Resolve(AddonModel::create(Env(), std::move(state_))); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    LoadOptions options_;
    std::shared_ptr<ModelState> state_;
    Napi::Promise::Deferred deferred_;
};

std::string get_string(const Napi::Object & o, const char * key) {
    Napi::Value v = o.Get(key);
    if (!v.IsString()) throw_js(o.Env(), "ERR_INVALID_ARG", std::string("Expected string for ") + key);
    return v.As<Napi::String>().Utf8Value();
}
int get_int(const Napi::Object & o, const char * key, int fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
}
bool get_bool(const Napi::Object & o, const char * key, bool fallback) {
    Napi::Value v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

}  // namespace

Napi::Value load_model(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "loadModel expects an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    LoadOptions options;
    options.model_path = get_string(o, "modelPath");
    options.mmproj_path = get_string(o, "mmprojPath");
    options.gpu_layers = get_int(o, "gpuLayers", 0);
    options.repack = !o.Has("repackWeights") || o.Get("repackWeights").ToBoolean();
    options.threads = get_int(o, "threads", 0);
    options.use_gpu_for_vision = get_bool(o, "useGpuForVision", true);
    options.image_min_tokens = get_int(o, "imageMinTokens", 0);
    options.image_max_tokens = get_int(o, "imageMaxTokens", 0);
    options.warmup = get_bool(o, "warmup", false);
    auto * worker = new LoadWorker(env, std::move(options));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

// ---- the JS object -----------------------------------------------------------------------------

Napi::Function AddonModel::define(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "AddonModel", {
        InstanceMethod<&AddonModel::info>("info"),
        InstanceMethod<&AddonModel::tokenize>("tokenize"),
        InstanceMethod<&AddonModel::detokenize>("detokenize"),
        InstanceMethod<&AddonModel::measure_prompt>("measurePrompt"),
        InstanceMethod<&AddonModel::apply_chat_template>("applyChatTemplate"),
        InstanceMethod<&AddonModel::create_context>("createContext"),
        InstanceMethod<&AddonModel::create_policy>("createPolicy"),
        InstanceMethod<&AddonModel::dispose>("dispose"),
        InstanceAccessor<&AddonModel::disposed>("disposed"),
    });
    addon_data(env).model_constructor = Napi::Persistent(ctor);
    return ctor;
}

// Pending state handed from create() to the constructor (both run on the JS thread).
static thread_local std::shared_ptr<ModelState> t_pending_state;

Napi::Object AddonModel::create(Napi::Env env, std::shared_ptr<ModelState> state) {
    t_pending_state = std::move(state);
    Napi::Object obj = addon_data(env).model_constructor.New({});
    t_pending_state.reset();
    return obj;
}

AddonModel::AddonModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonModel>(info) {
    if (!t_pending_state) throw_js(info.Env(), "ERR_INVALID_ARG", "AddonModel cannot be constructed from JS; use loadModel()");
    state_ = std::move(t_pending_state);
}

AddonModel::~AddonModel() = default;

std::shared_ptr<ModelState> AddonModel::state(Napi::Env env) const {
    if (!state_) throw_js(env, "ERR_DISPOSED", "the model is disposed");
    return state_;
}

Napi::Value AddonModel::dispose(const Napi::CallbackInfo & info) {
    state_.reset();  // contexts and workers that still hold the state keep it alive until they finish
    return info.Env().Undefined();
}

Napi::Value AddonModel::disposed(const Napi::CallbackInfo & info) {
    return Napi::Boolean::New(info.Env(), !state_);
}

static std::string meta_string(const llama_model * model, const char * key) {
    char buf[512];
    const int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n >= 0 ? std::string(buf) : std::string();
}

Napi::Value AddonModel::info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    const llama_model * m = s->model;
    Napi::Object o = Napi::Object::New(env);
    o.Set("architecture", meta_string(m, "general.architecture"));
    o.Set("name", meta_string(m, "general.name"));
    char desc[256];
    llama_model_desc(m, desc, sizeof(desc));
    o.Set("description", std::string(desc));
    o.Set("trainContextSize", llama_model_n_ctx_train(m));
    o.Set("vocabSize", llama_vocab_n_tokens(s->vocab));
    o.Set("embeddingSize", llama_model_n_embd(m));
    o.Set("layerCount", llama_model_n_layer(m));
    o.Set("headCount", llama_model_n_head(m));
    o.Set("headCountKv", llama_model_n_head_kv(m));
    o.Set("parameterCount", static_cast<double>(llama_model_n_params(m)));
    o.Set("sizeBytes", static_cast<double>(llama_model_size(m)));
    const char * tmpl = llama_model_chat_template(m, nullptr);
    o.Set("chatTemplate", tmpl ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
    Napi::Array eog = Napi::Array::New(env);
    const int32_t n_vocab = llama_vocab_n_tokens(s->vocab);
    uint32_t k = 0;
    for (int32_t t = 0; t < n_vocab; ++t) {
        if (llama_vocab_is_eog(s->vocab, t)) eog.Set(k++, t);
    }
    o.Set("eogTokens", eog);
    o.Set("bosToken", llama_vocab_bos(s->vocab));
    o.Set("eosToken", llama_vocab_eos(s->vocab));
    o.Set("addBos", llama_vocab_get_add_bos(s->vocab));
    o.Set("gpuWeightTensors", s->gpu_weight_tensors);
    Napi::Object p = Napi::Object::New(env);
    p.Set("type", s->projector.type);
    p.Set("embeddingSize", s->projector.embedding_size);
    p.Set("imageSize", s->projector.image_size);
    p.Set("patchSize", s->projector.patch_size);
    p.Set("usesMRope", s->projector.uses_mrope);
    p.Set("marker", std::string(mtmd_default_marker()));
    o.Set("projector", p);
    return o;
}

Napi::Value AddonModel::tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsString()) throw_js(env, "ERR_INVALID_ARG", "tokenize expects a string");
    const bool add_special = info.Length() > 1 && info[1].ToBoolean();
    const bool parse_special = info.Length() > 2 && info[2].ToBoolean();
    auto tokens = tokenize_text(s->vocab, info[0].As<Napi::String>().Utf8Value(), add_special, parse_special);
    Napi::Int32Array out = Napi::Int32Array::New(env, tokens.size());
    std::copy(tokens.begin(), tokens.end(), out.Data());
    return out;
}

// Reads an Int32Array or an array of numbers, checking every id against the vocabulary (an id out
// of range would trip an assert inside llama.cpp and abort the process).
std::vector<llama_token> read_tokens(Napi::Env env, const Napi::Value & v, int32_t n_vocab) {
    std::vector<llama_token> tokens;
    if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
        Napi::Int32Array a = v.As<Napi::Int32Array>();
        tokens.assign(a.Data(), a.Data() + a.ElementLength());
    } else if (v.IsArray()) {
        Napi::Array a = v.As<Napi::Array>();
        tokens.resize(a.Length());
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value e = a.Get(i);
            if (!e.IsNumber()) throw_js(env, "ERR_INVALID_ARG", "token ids must be integers");
            tokens[i] = e.As<Napi::Number>().Int32Value();
        }
    } else {
        throw_js(env, "ERR_INVALID_ARG", "expected an Int32Array or an array of token ids");
    }
    for (llama_token t : tokens) {
        if (t < 0 || t >= n_vocab) {
            throw_js(env, "ERR_INVALID_ARG", "token id " + std::to_string(t) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
        }
    }
    return tokens;
}

Napi::Value AddonModel::detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1) throw_js(env, "ERR_INVALID_ARG", "detokenize expects token ids");
    auto tokens = read_tokens(env, info[0], llama_vocab_n_tokens(s->vocab));
    std::string text;
    for (llama_token t : tokens) text += token_piece(s->vocab, t, false);
    return Napi::String::New(env, text);
}

Napi::Value AddonModel::measure_prompt(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray()) throw_js(env, "ERR_INVALID_ARG", "measurePrompt(prompt, images)");
    const std::string prompt = info[0].As<Napi::String>().Utf8Value();
    Napi::Array arr = info[1].As<Napi::Array>();
    std::vector<std::pair<uint32_t, uint32_t>> sizes;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object im = arr.Get(i).As<Napi::Object>();
        sizes.emplace_back(im.Get("width").As<Napi::Number>().Uint32Value(), im.Get("height").As<Napi::Number>().Uint32Value());
    }
    PromptMeasure m;
    try {
        m = measure_prompt_tokens(*s, prompt, sizes);
    } catch (const CodedError & e) {
        throw_js(env, e.code, e.what());
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", m.tokens);
    o.Set("positions", m.positions);
    return o;
}

Napi::Value AddonModel::apply_chat_template(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsArray()) throw_js(env, "ERR_INVALID_ARG", "applyChatTemplate(messages, addAssistant)");
    Napi::Array arr = info[0].As<Napi::Array>();
    const bool add_assistant = info.Length() > 1 && info[1].ToBoolean();
    std::vector<std::string> roles, contents;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object m = arr.Get(i).As<Napi::Object>();
        roles.push_back(m.Get("role").ToString().Utf8Value());
        contents.push_back(m.Get("content").ToString().Utf8Value());
    }
    std::vector<llama_chat_message> msgs;
    for (size_t i = 0; i < roles.size(); ++i) msgs.push_back({roles[i].c_str(), contents[i].c_str()});
    const char * tmpl = llama_model_chat_template(s->model, nullptr);
    if (!tmpl) throw_js(env, "ERR_INVALID_ARG", "the model has no chat template (tokenizer.chat_template)");
    std::vector<char> buf(4096);
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, buf.data(), static_cast<int32_t>(buf.size()));
    if (n > static_cast<int32_t>(buf.size())) {
        buf.resize(n);
        n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, buf.data(), static_cast<int32_t>(buf.size()));
    }
    if (n < 0) throw_js(env, "ERR_INVALID_ARG", "llama.cpp does not know this model's chat template; pass a chat family explicitly");
    return Napi::String::New(env, std::string(buf.data(), n));
}

Napi::Value AddonModel::create_context(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "createContext expects an options object");
    return create_rollout_context(env, s, info[0].As<Napi::Object>(), info.This().As<Napi::Object>());
}

Napi::Value AddonModel::create_policy(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "createPolicy expects an options object");
    // Where the trainer runs (CPU, or the GPU that holds every weight) and ERR_GPU_WEIGHTS for a
    // model split between them: PolicyState's constructor.
    return visplay::create_policy(env, s, info[0].As<Napi::Object>(), info.This().As<Napi::Object>());
}

}  // namespace visplay
