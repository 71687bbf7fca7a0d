// The JS wrapper of the batched rollout engine (see rollout.h; the engine is rollout_core.cpp).
#include "rollout.h"

#include "common.h"
#include "policy.h"

#include <algorithm>
#include <cstring>
namespace visplay {

// ---- JS wrapper ------------------------------------------------------------------------------

std::vector<ImageInput> read_images(Napi::Env env, const Napi::Value & v) {
    std::vector<ImageInput> images;
    if (v.IsUndefined() || v.IsNull()) return images;
    if (!v.IsArray()) throw_js(env, "ERR_INVALID_ARG", "images must be an array");
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Object o = arr.Get(i).As<Napi::Object>();
        ImageInput im;
        im.key = o.Get("key").ToString().Utf8Value();
        im.width = o.Get("width").As<Napi::Number>().Uint32Value();
        im.height = o.Get("height").As<Napi::Number>().Uint32Value();
        Napi::Value rgb = o.Get("rgb");
        if (!rgb.IsTypedArray() || rgb.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
            throw_js(env, "ERR_INVALID_ARG", "image " + std::to_string(i) + ": rgb must be a Uint8Array or Buffer");
        }
        Napi::Uint8Array bytes = rgb.As<Napi::Uint8Array>();
        if (im.width == 0 || im.height == 0 || bytes.ElementLength() != static_cast<size_t>(im.width) * im.height * 3) {
            throw_js(env, "ERR_INVALID_ARG", "image " + std::to_string(i) + ": rgb must hold width * height * 3 bytes");
        }
        im.rgb.assign(bytes.Data(), bytes.Data() + bytes.ElementLength());
        images.push_back(std::move(im));
    }
    return images;
}

namespace {

thread_local std::shared_ptr<RolloutContextState> t_pending_context;

class AddonRolloutContext : public Napi::ObjectWrap<AddonRolloutContext> {
  public:
    explicit AddonRolloutContext(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonRolloutContext>(info) {
        if (!t_pending_context) throw_js(info.Env(), "ERR_INVALID_ARG", "AddonRolloutContext cannot be constructed from JS; use model.createContext()");
        state_ = std::move(t_pending_context);
    }

    std::shared_ptr<RolloutContextState> state(Napi::Env env) const {
        if (!state_) throw_js(env, "ERR_DISPOSED", "the rollout context is disposed");
        return state_;
    }

    Napi::Value generate(const Napi::CallbackInfo & info);
    Napi::Value score(const Napi::CallbackInfo & info);
    Napi::Value use_lora(const Napi::CallbackInfo & info);
    Napi::Value dispose(const Napi::CallbackInfo & info) {
        state_.reset();  // a worker in flight keeps the state until it finishes
        return info.Env().Undefined();
    }
    Napi::Value disposed(const Napi::CallbackInfo & info) { return Napi::Boolean::New(info.Env(), !state_); }
    Napi::Value context_size(const Napi::CallbackInfo & info) { return Napi::Number::New(info.Env(), options_.context_size); }
    Napi::Value parallel(const Napi::CallbackInfo & info) { return Napi::Number::New(info.Env(), options_.parallel); }

    ContextOptions options_;

  private:
    std::shared_ptr<RolloutContextState> state_;
};

RequestInput read_request(Napi::Env env, const Napi::Object & o, size_t n_images, int32_t n_vocab) {
    RequestInput r;
    if (!o.Get("prompt").IsString()) throw_js(env, "ERR_INVALID_ARG", "request.prompt must be a string");
    r.prompt = o.Get("prompt").As<Napi::String>().Utf8Value();
    Napi::Value imgs = o.Get("images");
    if (imgs.IsArray()) {
        Napi::Array a = imgs.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            const int idx = a.Get(i).As<Napi::Number>().Int32Value();
            if (idx < 0 || static_cast<size_t>(idx) >= n_images) throw_js(env, "ERR_INVALID_ARG", "request image index out of range");
            r.images.push_back(idx);
        }
    }
    auto num = [&](const char * key, double fallback) {
        Napi::Value v = o.Get(key);
        return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
    };
    r.n = static_cast<int>(num("n", 1));
    r.max_tokens = static_cast<int>(num("maxTokens", 64));
    r.temperature = static_cast<float>(num("temperature", 1.0));
    r.top_p = static_cast<float>(num("topP", 1.0));
    r.top_k = static_cast<int>(num("topK", 0));
    r.seed = static_cast<uint64_t>(num("seed", 0));
    if (r.n < 0 || r.max_tokens < 1) throw_js(env, "ERR_INVALID_ARG", "request.n must be >= 0 and request.maxTokens >= 1");
    r.ignore_eos = o.Get("ignoreEos").ToBoolean();
    Napi::Value stops = o.Get("stopTokens");
    if (stops.IsArray() || stops.IsTypedArray()) r.stop_tokens = read_tokens(env, stops, n_vocab);
    return r;
}

Napi::Value js_samples(Napi::Env env, const std::vector<std::vector<SampleOutput>> & samples) {
    Napi::Array out = Napi::Array::New(env, samples.size());
    for (size_t r = 0; r < samples.size(); ++r) {
        Napi::Array rs = Napi::Array::New(env, samples[r].size());
        for (size_t i = 0; i < samples[r].size(); ++i) {
            const SampleOutput & s = samples[r][i];
            Napi::Object o = Napi::Object::New(env);
            Napi::Int32Array tokens = Napi::Int32Array::New(env, s.tokens.size());
            std::copy(s.tokens.begin(), s.tokens.end(), tokens.Data());
            Napi::Float32Array logprobs = Napi::Float32Array::New(env, s.logprobs.size());
            std::copy(s.logprobs.begin(), s.logprobs.end(), logprobs.Data());
            o.Set("tokens", tokens);
            o.Set("logprobs", logprobs);
            o.Set("text", Napi::String::New(env, s.text));
            o.Set("finish", s.stopped ? "stop" : "length");
            rs.Set(i, o);
        }
        out.Set(r, rs);
    }
    return out;
}

class GenerateWorker : public Napi::AsyncProgressQueueWorker<GenerateProgress> {
  public:
    GenerateWorker(Napi::Env env, std::shared_ptr<RolloutContextState> state, std::vector<ImageInput> images,
                   std::vector<RequestInput> requests, Napi::Function on_progress, Napi::Object self)
        : Napi::AsyncProgressQueueWorker<GenerateProgress>(env),
          state_(std::move(state)), images_(std::move(images)), requests_(std::move(requests)),
          deferred_(Napi::Promise::Deferred::New(env)) {
        if (!on_progress.IsEmpty()) on_progress_ = Napi::Persistent(on_progress);
        self_ = Napi::Persistent(self);  // pin the JS object while the worker runs
    }
    ~GenerateWorker() override { state_->busy = false; }

    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute(const ExecutionProgress & progress) override {
        clear_captured_log();
        try {
            auto last = std::chrono::steady_clock::now();
            int last_done = -1;
            results_ = state_->generate(images_, requests_, stats_, [&](const GenerateProgress & p) {
                // Throttled: on every finished sample, at most every 50 ms otherwise.
                const auto now = std::chrono::steady_clock::now();
                if (p.done != last_done || now - last > std::chrono::milliseconds(50)) {
                    progress.Send(&p, 1);
                    last = now;
                    last_done = p.done;
                }
            });
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        } catch (const std::exception & e) {
            SetError(coded_message("ERR_NATIVE", e.what()));
        }
    }

    void OnProgress(const GenerateProgress * data, size_t count) override {
        if (on_progress_.IsEmpty() || count == 0) return;
        Napi::Env env = Env();
        const GenerateProgress & p = data[count - 1];
        on_progress_.Call({Napi::Number::New(env, p.done), Napi::Number::New(env, p.total), Napi::Number::New(env, static_cast<double>(p.tokens))});
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Object out = Napi::Object::New(env);
        out.Set("samples", js_samples(env, results_));
        Napi::Object st = Napi::Object::New(env);
        st.Set("imageEncodes", stats_.image_encodes);
        st.Set("promptTokens", static_cast<double>(stats_.prompt_tokens));
        st.Set("generatedTokens", static_cast<double>(stats_.generated_tokens));
        st.Set("decodeCalls", stats_.decode_calls);
        st.Set("encodeMs", stats_.encode_ms);
        st.Set("prefillMs", stats_.prefill_ms);
        st.Set("generateMs", stats_.generate_ms);
        st.Set("decodeMs", stats_.decode_ms);
        st.Set("sampleMs", stats_.sample_ms);
        st.Set("maxLiveSequences", stats_.max_live);
        out.Set("stats", st);
        deferred_.Resolve(out);
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    std::shared_ptr<RolloutContextState> state_;
    std::vector<ImageInput> images_;
    std::vector<RequestInput> requests_;
    std::vector<std::vector<SampleOutput>> results_;
    GenerateStats stats_;
    Napi::FunctionReference on_progress_;
    Napi::ObjectReference self_;
    Napi::Promise::Deferred deferred_;
};

class ScoreWorker : public Napi::AsyncWorker {
  public:
    ScoreWorker(Napi::Env env, std::shared_ptr<RolloutContextState> state, std::vector<ImageInput> images, RequestInput prompt,
                std::vector<llama_token> tokens, Napi::Object self)
        : Napi::AsyncWorker(env, "visplay.score"), state_(std::move(state)), images_(std::move(images)), prompt_(std::move(prompt)),
          tokens_(std::move(tokens)), deferred_(Napi::Promise::Deferred::New(env)) {
        self_ = Napi::Persistent(self);
    }
    ~ScoreWorker() override { state_->busy = false; }
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        clear_captured_log();
        try {
            logprobs_ = state_->score(images_, prompt_, tokens_, want_logits_ ? &logits_ : nullptr);
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        } catch (const std::exception & e) {
            SetError(coded_message("ERR_NATIVE", e.what()));
        }
    }
    void OnOK() override {
        Napi::Float32Array out = Napi::Float32Array::New(Env(), logprobs_.size());
        std::copy(logprobs_.begin(), logprobs_.end(), out.Data());
        if (!want_logits_) {
            deferred_.Resolve(out);
            return;
        }
        Napi::Float32Array logits = Napi::Float32Array::New(Env(), logits_.size());
        std::copy(logits_.begin(), logits_.end(), logits.Data());
        Napi::Object r = Napi::Object::New(Env());
        r.Set("logprobs", out);
        r.Set("logits", logits);
        deferred_.Resolve(r);
    }
    bool want_logits_ = false;
    std::vector<float> logits_;
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    std::shared_ptr<RolloutContextState> state_;
    std::vector<ImageInput> images_;
    RequestInput prompt_;
    std::vector<llama_token> tokens_;
    std::vector<float> logprobs_;
    Napi::ObjectReference self_;
    Napi::Promise::Deferred deferred_;
};

void claim(Napi::Env env, RolloutContextState & state) {
    bool expected = false;
    if (!state.busy.compare_exchange_strong(expected, true)) {
        throw_js(env, "ERR_BUSY", "the rollout context is already running a generate or score call; await it first");
    }
}

Napi::Value AddonRolloutContext::generate(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "generate expects { images, requests }");
    Napi::Object input = info[0].As<Napi::Object>();
    std::vector<ImageInput> images = read_images(env, input.Get("images"));
    if (!input.Get("requests").IsArray()) throw_js(env, "ERR_INVALID_ARG", "generate: requests must be an array");
    Napi::Array reqs = input.Get("requests").As<Napi::Array>();
    std::vector<RequestInput> requests;
    for (uint32_t i = 0; i < reqs.Length(); ++i) {
        requests.push_back(read_request(env, reqs.Get(i).As<Napi::Object>(), images.size(), s->n_vocab()));
    }
    Napi::Function on_progress = info.Length() > 1 && info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
    claim(env, *s);
    auto * worker = new GenerateWorker(env, s, std::move(images), std::move(requests), on_progress, info.This().As<Napi::Object>());
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

Napi::Value AddonRolloutContext::score(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "score expects { images, prompt, imageIndices, tokens }");
    Napi::Object input = info[0].As<Napi::Object>();
    std::vector<ImageInput> images = read_images(env, input.Get("images"));
    Napi::Object req = Napi::Object::New(env);
    req.Set("prompt", input.Get("prompt"));
    req.Set("images", input.Get("imageIndices"));
    RequestInput prompt = read_request(env, req, images.size(), s->n_vocab());
    std::vector<llama_token> tokens = read_tokens(env, input.Get("tokens"), s->n_vocab());
    claim(env, *s);
    auto * worker = new ScoreWorker(env, s, std::move(images), std::move(prompt), std::move(tokens), info.This().As<Napi::Object>());
    worker->want_logits_ = input.Get("returnLogits").ToBoolean();
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

// useLora(policy | null): sample with the policy's live adapter (updated in place by every step).
Napi::Value AddonRolloutContext::use_lora(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::shared_ptr<PolicyState> policy;
    if (info.Length() > 0 && !info[0].IsNull() && !info[0].IsUndefined()) {
        policy = unwrap_policy(env, info[0]);
        if (policy->lm().n_vocab != s->n_vocab()) throw_js(env, "ERR_INVALID_ARG", "the policy belongs to another model");
        if (policy->has_projector_adapter()) {
            throw_js(env, "ERR_INVALID_ARG", "a policy with a projector adapter (projectorRank > 0) cannot drive rollouts: llama.cpp's LoRA does not reach the "
                                             "image rows; merge it into the mmproj first (mergeProjector)");
        }
    }
    claim(env, *s);
    try {
        s->set_adapter(policy ? policy->live_adapter() : nullptr, policy);
    } catch (const CodedError & e) {
        s->busy = false;
        throw_js(env, e.code, e.what());
    }
    s->busy = false;
    return env.Undefined();
}

class CreateContextWorker : public Napi::AsyncWorker {
  public:
    CreateContextWorker(Napi::Env env, std::shared_ptr<ModelState> model, ContextOptions options, Napi::Object model_object)
        : Napi::AsyncWorker(env, "visplay.createContext"), model_(std::move(model)), options_(options),
          deferred_(Napi::Promise::Deferred::New(env)) {
        model_object_ = Napi::Persistent(model_object);
    }
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        clear_captured_log();
        try {
            state_ = std::make_shared<RolloutContextState>(model_, options_);
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        }
    }
    void OnOK() override {
        ContextOptions actual = options_;
        actual.context_size = state_->n_ctx();
        t_pending_context = std::move(state_);
        Napi::Object obj = addon_data(Env()).context_constructor.New({});
        AddonRolloutContext::Unwrap(obj)->options_ = actual;
        deferred_.Resolve(obj);
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    std::shared_ptr<ModelState> model_;
    ContextOptions options_;
    std::shared_ptr<RolloutContextState> state_;
    Napi::ObjectReference model_object_;
    Napi::Promise::Deferred deferred_;
};

}  // namespace

Napi::Function define_rollout_context(Napi::Env env) {
    Napi::Function ctor = AddonRolloutContext::DefineClass(env, "AddonRolloutContext", {
        AddonRolloutContext::InstanceMethod<&AddonRolloutContext::generate>("generate"),
        AddonRolloutContext::InstanceMethod<&AddonRolloutContext::score>("score"),
        AddonRolloutContext::InstanceMethod<&AddonRolloutContext::use_lora>("useLora"),
        AddonRolloutContext::InstanceMethod<&AddonRolloutContext::dispose>("dispose"),
        AddonRolloutContext::InstanceAccessor<&AddonRolloutContext::disposed>("disposed"),
        AddonRolloutContext::InstanceAccessor<&AddonRolloutContext::context_size>("contextSize"),
        AddonRolloutContext::InstanceAccessor<&AddonRolloutContext::parallel>("parallel"),
    });
    addon_data(env).context_constructor = Napi::Persistent(ctor);
    return ctor;
}

Napi::Value create_rollout_context(Napi::Env env, std::shared_ptr<ModelState> model, const Napi::Object & o,
                                   const Napi::Object & model_object) {
    ContextOptions options;
    auto num = [&](const char * key, int fallback) {
        Napi::Value v = o.Get(key);
        return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
    };
    options.context_size = num("contextSize", 4096);
    options.parallel = num("parallel", 8);
    options.batch_size = num("batchSize", 512);
    options.threads = num("threads", 0);
    options.flash_attention = num("flashAttention", -1);
    options.kv_f32 = o.Get("kvCacheF32").ToBoolean();
    if (options.flash_attention < -1 || options.flash_attention > 1) throw_js(env, "ERR_INVALID_ARG", "flashAttention must be -1 (auto), 0 (off) or 1 (on)");
    if (options.context_size < 16) throw_js(env, "ERR_INVALID_ARG", "contextSize must be at least 16");
    if (options.parallel < 1 || options.parallel > 128) throw_js(env, "ERR_INVALID_ARG", "parallel must be between 1 and 128");
    if (options.batch_size < 1) throw_js(env, "ERR_INVALID_ARG", "batchSize must be positive");
    auto * worker = new CreateContextWorker(env, std::move(model), options, model_object);
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

}  // namespace visplay
