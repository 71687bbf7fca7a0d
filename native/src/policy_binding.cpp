// JS wrapper of PolicyState: AddonPolicy, created by model.createPolicy(options) -> Promise.
// Every slow call runs in a worker thread and returns a Promise; a policy runs one call at a time
// (ERR_BUSY otherwise) and dispose() never frees memory a worker still uses (shared_ptr).
#include "common.h"
#include "policy.h"
#include "rollout.h"

#include <cmath>
#include <functional>

namespace visplay {

std::atomic<int> g_live_policies{0};

namespace {

// A worker that runs `execute` off the main thread and resolves with `resolve(env)`.
class PromiseWorker : public Napi::AsyncWorker {
  public:
    PromiseWorker(Napi::Env env, const char * name, std::function<void()> execute, std::function<Napi::Value(Napi::Env)> resolve,
                  std::function<void()> done = nullptr)
        : Napi::AsyncWorker(env, name), execute_(std::move(execute)), resolve_(std::move(resolve)), done_(std::move(done)),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    ~PromiseWorker() override {
        if (done_) done_();
    }
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        clear_captured_log();
        try {
            execute_();
        } catch (const CodedError & e) {
            SetError(coded_message(e.code, e.what()));
        } catch (const std::bad_alloc &) {
            SetError(coded_message("ERR_OUT_OF_MEMORY", "out of memory"));
        } catch (const std::exception & e) {
            SetError(coded_message("ERR_INTERNAL", e.what()));
        }
    }
    void OnOK() override { deferred_.Resolve(resolve_(Env())); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }
    void keep(const Napi::Object & o) { refs_.push_back(Napi::Persistent(o)); }

  private:
    std::function<void()> execute_;
    std::function<Napi::Value(Napi::Env)> resolve_;
    std::function<void()> done_;
    Napi::Promise::Deferred deferred_;
    std::vector<Napi::ObjectReference> refs_;
};

double num(const Napi::Object & o, const char * key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

Napi::Object obj(const Napi::Value & v) { return v.IsObject() ? v.As<Napi::Object>() : Napi::Object(); }

std::vector<float> read_floats(Napi::Env env, const Napi::Value & v, const std::string & what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw_js(env, "ERR_INVALID_ARG", what + " must be a Float32Array");
    }
    Napi::Float32Array a = v.As<Napi::Float32Array>();
    return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

Napi::Float32Array js_floats(Napi::Env env, const std::vector<float> & v) {
    Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
    std::copy(v.begin(), v.end(), a.Data());
    return a;
}

LossConfig read_loss(Napi::Env env, const Napi::Value & v) {
    LossConfig c;
    if (!v.IsObject()) return c;
    Napi::Object o = v.As<Napi::Object>();
    c.clip_low = num(o, "clipLow", c.clip_low);
    c.clip_high = num(o, "clipHigh", c.clip_high);
    c.dual_clip = num(o, "dualClip", c.dual_clip);
    c.kl_coef = num(o, "klCoef", c.kl_coef);
    Napi::Value kind = o.Get("kind");
    if (kind.IsString()) {
        const std::string k = kind.As<Napi::String>().Utf8Value();
        if (k == "sft") c.kind = LossKind::sft;
        else if (k != "grpo") throw_js(env, "ERR_INVALID_ARG", "loss.kind must be 'grpo' or 'sft'");
    }
    Napi::Value agg = o.Get("aggregation");
    if (agg.IsString()) {
        const std::string a = agg.As<Napi::String>().Utf8Value();
        if (a == "token-mean") c.aggregation = LossAggregation::token_mean;
        else if (a == "seq-mean-token-mean") c.aggregation = LossAggregation::seq_mean_token_mean;
        else throw_js(env, "ERR_INVALID_ARG", "loss.aggregation must be 'token-mean' or 'seq-mean-token-mean'");
    }
    return c;
}

OptimizerConfig read_optimizer(Napi::Env env, const Napi::Value & v) {
    OptimizerConfig c;
    if (!v.IsObject()) return c;
    Napi::Object o = v.As<Napi::Object>();
    c.lr = num(o, "lr", c.lr);
    c.beta1 = num(o, "beta1", c.beta1);
    c.beta2 = num(o, "beta2", c.beta2);
    c.eps = num(o, "eps", c.eps);
    c.weight_decay = num(o, "weightDecay", c.weight_decay);
    c.max_grad_norm = num(o, "maxGradNorm", c.max_grad_norm);
    c.warmup_steps = static_cast<int64_t>(num(o, "warmupSteps", 0));
    c.total_steps = static_cast<int64_t>(num(o, "totalSteps", 0));
    c.min_lr_ratio = num(o, "minLrRatio", 0);
    Napi::Value s = o.Get("schedule");
    if (s.IsString()) {
        const std::string name = s.As<Napi::String>().Utf8Value();
        if (name == "cosine") c.schedule = LrSchedule::cosine;
        else if (name != "constant") throw_js(env, "ERR_INVALID_ARG", "optimizer.schedule must be 'constant' or 'cosine'");
    }
    return c;
}

// { prompt, <key>: [image indices] }: "images" inside a batch's groups, "imageIndices" in calls
// whose "images" field holds the decoded images themselves.
TrainGroup read_group_prompt(Napi::Env env, const Napi::Object & o, size_t n_images, const char * key) {
    TrainGroup g;
    if (!o.Get("prompt").IsString()) throw_js(env, "ERR_INVALID_ARG", "prompt must be a string");
    g.prompt = o.Get("prompt").As<Napi::String>().Utf8Value();
    Napi::Value imgs = o.Get(key);
    if (imgs.IsArray()) {
        Napi::Array a = imgs.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            if (!a.Get(i).IsNumber()) throw_js(env, "ERR_INVALID_ARG", std::string(key) + " must hold image indices");
            const int idx = a.Get(i).As<Napi::Number>().Int32Value();
            if (idx < 0 || static_cast<size_t>(idx) >= n_images) throw_js(env, "ERR_INVALID_ARG", "image index out of range");
            g.images.push_back(idx);
        }
    }
    return g;
}

TrainBatch read_batch(Napi::Env env, const Napi::Value & v, int32_t n_vocab) {
    if (!v.IsObject()) throw_js(env, "ERR_INVALID_ARG", "expected a batch { images, groups }");
    Napi::Object o = v.As<Napi::Object>();
    TrainBatch b;
    b.images = read_images(env, o.Get("images"));
    if (!o.Get("groups").IsArray()) throw_js(env, "ERR_INVALID_ARG", "batch.groups must be an array");
    Napi::Array groups = o.Get("groups").As<Napi::Array>();
    for (uint32_t gi = 0; gi < groups.Length(); ++gi) {
        Napi::Object go = obj(groups.Get(gi));
        if (go.IsEmpty()) throw_js(env, "ERR_INVALID_ARG", "batch.groups[" + std::to_string(gi) + "] must be an object");
        TrainGroup g = read_group_prompt(env, go, b.images.size(), "images");
        if (!go.Get("samples").IsArray()) throw_js(env, "ERR_INVALID_ARG", "batch.groups[" + std::to_string(gi) + "].samples must be an array");
        Napi::Array samples = go.Get("samples").As<Napi::Array>();
        for (uint32_t si = 0; si < samples.Length(); ++si) {
            Napi::Object so = obj(samples.Get(si));
            const std::string where = "batch.groups[" + std::to_string(gi) + "].samples[" + std::to_string(si) + "]";
            if (so.IsEmpty()) throw_js(env, "ERR_INVALID_ARG", where + " must be an object");
            TrainSample s;
            s.tokens = read_tokens(env, so.Get("tokens"), n_vocab);
            Napi::Value lp = so.Get("logprobs");
            if (!lp.IsUndefined() && !lp.IsNull()) s.old_logprobs = read_floats(env, lp, where + ".logprobs");
            if (!so.Get("advantage").IsNumber()) throw_js(env, "ERR_INVALID_ARG", where + ".advantage must be a number");
            s.advantage = so.Get("advantage").As<Napi::Number>().DoubleValue();
            g.samples.push_back(std::move(s));
        }
        b.groups.push_back(std::move(g));
    }
    return b;
}

Napi::Object js_stats(Napi::Env env, const RunStats & s) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", s.loss);
    o.Set("pgLoss", s.pg_loss);
    o.Set("kl", s.kl);
    o.Set("clipFraction", s.clip_fraction);
    o.Set("dualClipFraction", s.dual_clip_fraction);
    o.Set("gradNorm", s.grad_norm);
    o.Set("lr", s.lr);
    o.Set("seconds", s.seconds);
    o.Set("tokens", static_cast<double>(s.tokens));
    o.Set("tokensPerSecond", s.seconds > 0 ? static_cast<double>(s.tokens) / s.seconds : 0.0);
    o.Set("sequences", static_cast<double>(s.sequences));
    o.Set("packedRows", static_cast<double>(s.packed_rows));
    o.Set("microBatches", static_cast<double>(s.micro_batches));
    o.Set("imageEncodes", static_cast<double>(s.image_encodes));
    o.Set("step", static_cast<double>(s.step));
    o.Set("skippedSteps", static_cast<double>(s.skipped_steps));
    o.Set("applied", s.applied);
    if (!s.skip_reason.empty()) o.Set("skipReason", s.skip_reason);
    return o;
}

thread_local std::shared_ptr<PolicyState> t_pending_policy;

class AddonPolicy : public Napi::ObjectWrap<AddonPolicy> {
  public:
    explicit AddonPolicy(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonPolicy>(info) {
        if (!t_pending_policy) throw_js(info.Env(), "ERR_INVALID_ARG", "AddonPolicy cannot be constructed from JS; use model.createPolicy()");
        state_ = std::move(t_pending_policy);
        g_live_policies++;
    }
    ~AddonPolicy() override { g_live_policies--; }

    std::shared_ptr<PolicyState> state(Napi::Env env) const {
        if (!state_) throw_js(env, "ERR_DISPOSED", "the policy has been disposed");
        return state_;
    }

    // Marks the policy busy for the lifetime of one call; the worker clears it when it is destroyed.
    std::function<void()> claim(Napi::Env env, const std::shared_ptr<PolicyState> & s) {
        bool expected = false;
        if (!s->busy.compare_exchange_strong(expected, true)) {
            throw_js(env, "ERR_BUSY", "the policy is already running a step, evaluation or save; await it first");
        }
        return [s] { s->busy = false; };
    }

    // Claims the policy, runs `execute` in a worker thread and resolves with `resolve`; the JS
    // object stays referenced (and the policy busy) until the worker is done.
    Napi::Value queue(const Napi::CallbackInfo & info, const std::shared_ptr<PolicyState> & s, const char * name, std::function<void()> execute,
                      std::function<Napi::Value(Napi::Env)> resolve) {
        auto release = claim(info.Env(), s);
        auto * w = new PromiseWorker(info.Env(), name, std::move(execute), std::move(resolve), release);
        w->keep(info.This().As<Napi::Object>());
        Napi::Promise p = w->promise();
        w->Queue();
        return p;
    }

    Napi::Value run(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        TrainBatch batch = read_batch(env, info[0], s->lm().n_vocab);
        Napi::Object o = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        LossConfig loss = read_loss(env, o.Get("loss"));
        OptimizerConfig opt = read_optimizer(env, o.Get("optimizer"));
        const bool apply = o.Get("apply").ToBoolean();
        const bool grads = o.Get("gradients").ToBoolean();
        auto out = std::make_shared<RunOutputs>();
        return queue(info, s, "visplay.policy.run",
            [s, batch = std::move(batch), loss, opt, apply, grads, out] { *out = s->run(batch, loss, opt, apply, grads); },
            [s, out](Napi::Env e) -> Napi::Value {
                Napi::Object r = js_stats(e, out->stats);
                Napi::Array lps = Napi::Array::New(e, out->logprobs.size());
                for (size_t i = 0; i < out->logprobs.size(); ++i) lps.Set(i, js_floats(e, out->logprobs[i]));
                r.Set("logprobs", lps);
                if (!out->ref_logprobs.empty()) {
                    Napi::Array refs = Napi::Array::New(e, out->ref_logprobs.size());
                    for (size_t i = 0; i < out->ref_logprobs.size(); ++i) refs.Set(i, js_floats(e, out->ref_logprobs[i]));
                    r.Set("refLogprobs", refs);
                }
                if (!out->grads.empty()) {
                    Napi::Object g = Napi::Object::New(e);
                    const auto names = s->tensor_names();
                    for (size_t i = 0; i < names.size(); ++i) g.Set(names[i], js_floats(e, out->grads[i]));
                    r.Set("gradients", g);
                }
                return r;
            });
    }

    Napi::Value prompt_inputs(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "promptInputs expects { images, prompt, imageIndices }");
        Napi::Object o = info[0].As<Napi::Object>();
        std::vector<ImageInput> images = read_images(env, o.Get("images"));
        TrainGroup g = read_group_prompt(env, o, images.size(), "imageIndices");
        auto out = std::make_shared<PromptInputs>();
        return queue(info, s, "visplay.policy.promptInputs", [s, images = std::move(images), g, out] { *out = s->prompt_inputs(images, g); },
            [s, out](Napi::Env e) -> Napi::Value {
                Napi::Object r = Napi::Object::New(e);
                r.Set("tokens", out->n_tokens);
                r.Set("nextPosition", out->next_pos);
                r.Set("embeddings", js_floats(e, out->embd));
                Napi::Int32Array pos = Napi::Int32Array::New(e, out->pos.size());
                std::copy(out->pos.begin(), out->pos.end(), pos.Data());
                r.Set("positions", pos);
                r.Set("positionStreams", s->lm().mrope ? 4 : 1);
                return r;
            });
    }

    Napi::Value logits(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (info.Length() < 1 || !info[0].IsObject()) throw_js(env, "ERR_INVALID_ARG", "logits expects { images, prompt, imageIndices, tokens }");
        Napi::Object o = info[0].As<Napi::Object>();
        std::vector<ImageInput> images = read_images(env, o.Get("images"));
        TrainGroup g = read_group_prompt(env, o, images.size(), "imageIndices");
        std::vector<int32_t> tokens = read_tokens(env, o.Get("tokens"), s->lm().n_vocab);
        auto out = std::make_shared<std::vector<float>>();
        return queue(info, s, "visplay.policy.logits", [s, images = std::move(images), g, tokens, out] { *out = s->logits(images, g, tokens); },
            [out](Napi::Env e) -> Napi::Value { return js_floats(e, *out); });
    }

    Napi::Value save(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (info.Length() < 1 || !info[0].IsString()) throw_js(env, "ERR_INVALID_ARG", "save expects a folder path");
        const std::string dir = info[0].As<Napi::String>().Utf8Value();
        OptimizerConfig opt = read_optimizer(env, info.Length() > 1 ? info[1] : env.Undefined());
        return queue(info, s, "visplay.policy.save", [s, dir, opt] { s->save(dir, opt); }, [](Napi::Env e) -> Napi::Value { return e.Undefined(); });
    }

    Napi::Value tensor_names(const Napi::CallbackInfo & info) {
        auto s = state(info.Env());
        const auto names = s->tensor_names();
        Napi::Array a = Napi::Array::New(info.Env(), names.size());
        for (size_t i = 0; i < names.size(); ++i) a.Set(i, names[i]);
        return a;
    }

    std::string name_arg(const Napi::CallbackInfo & info) {
        if (info.Length() < 1 || !info[0].IsString()) throw_js(info.Env(), "ERR_INVALID_ARG", "expected a tensor name");
        return info[0].As<Napi::String>().Utf8Value();
    }

    template <typename F>
    auto sync_call(Napi::Env env, const std::shared_ptr<PolicyState> & s, F && f) {
        auto release = claim(env, s);
        try {
            auto r = f();
            release();
            return r;
        } catch (const CodedError & e) {
            release();
            throw_js(env, e.code, e.what());
        }
    }

    Napi::Value tensor_shape(const Napi::CallbackInfo & info) {
        auto s = state(info.Env());
        const std::string name = name_arg(info);
        const auto shape = sync_call(info.Env(), s, [&] { return s->tensor_shape(name); });
        Napi::Array a = Napi::Array::New(info.Env(), shape.size());
        for (size_t i = 0; i < shape.size(); ++i) a.Set(i, static_cast<double>(shape[i]));
        return a;
    }

    Napi::Value get_tensor(const Napi::CallbackInfo & info) {
        auto s = state(info.Env());
        const std::string name = name_arg(info);
        return js_floats(info.Env(), sync_call(info.Env(), s, [&] { return s->get_tensor(name); }));
    }

    Napi::Value set_tensor(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        const std::string name = name_arg(info);
        std::vector<float> data = read_floats(env, info.Length() > 1 ? info[1] : env.Undefined(), "data");
        for (float x : data) {
            if (!std::isfinite(x)) throw_js(env, "ERR_INVALID_ARG", "tensor values must be finite");
        }
        sync_call(env, s, [&] {
            s->set_tensor(name, data);
            return 0;
        });
        return env.Undefined();
    }

    Napi::Value info(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        const PolicyOptions & o = s->options();
        Napi::Object r = Napi::Object::New(env);
        r.Set("rank", o.rank);
        r.Set("alpha", o.alpha);
        r.Set("scale", s->lora_scale());
        Napi::Array t = Napi::Array::New(env, o.targets.size());
        for (size_t i = 0; i < o.targets.size(); ++i) t.Set(i, o.targets[i]);
        r.Set("targets", t);
        r.Set("seed", static_cast<double>(o.seed));
        r.Set("contextSize", o.context_size);
        r.Set("microBatchTokens", o.micro_batch_tokens);
        r.Set("step", static_cast<double>(s->step()));
        r.Set("vocabularySize", s->lm().n_vocab);
        r.Set("architecture", s->lm().arch);
        size_t params = 0;
        for (const auto & n : s->tensor_names()) {
            const auto shape = s->tensor_shape(n);
            params += static_cast<size_t>(shape[0] * shape[1]);
        }
        r.Set("parameters", static_cast<double>(params));
        return r;
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        state_.reset();
        return info.Env().Undefined();
    }
    Napi::Value disposed(const Napi::CallbackInfo & info) { return Napi::Boolean::New(info.Env(), !state_); }

  private:
    std::shared_ptr<PolicyState> state_;
};

PolicyOptions read_policy_options(Napi::Env env, const Napi::Object & o) {
    PolicyOptions p;
    p.rank = static_cast<int>(num(o, "rank", p.rank));
    p.alpha = static_cast<float>(num(o, "alpha", p.alpha));
    p.seed = static_cast<uint64_t>(num(o, "seed", 0));
    p.threads = static_cast<int>(num(o, "threads", 0));
    p.micro_batch_tokens = static_cast<int>(num(o, "microBatchTokens", p.micro_batch_tokens));
    p.head_chunk = static_cast<int>(num(o, "headChunk", p.head_chunk));
    p.context_size = static_cast<int>(num(o, "contextSize", 0));
    p.projector_rank = static_cast<int>(num(o, "projectorRank", 0));
    p.release_buffers = o.Has("releaseBuffers") && o.Get("releaseBuffers").ToBoolean().Value();
    if (o.Has("frozenMatmul") && o.Get("frozenMatmul").IsString()) {
        const std::string fm = o.Get("frozenMatmul").As<Napi::String>().Utf8Value();
        if (fm != "bf16" && fm != "llama") throw_js(env, "ERR_INVALID_ARG", ("frozenMatmul must be 'bf16' or 'llama', not '" + fm + "'").c_str());
        p.frozen_matmul = fm == "llama" ? PolicyOptions::FrozenMatmul::llama : PolicyOptions::FrozenMatmul::bf16;
    }
    Napi::Value t = o.Get("targets");
    if (t.IsArray()) {
        Napi::Array a = t.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            if (!a.Get(i).IsString()) throw_js(env, "ERR_INVALID_ARG", "targets must be strings");
            p.targets.push_back(a.Get(i).As<Napi::String>().Utf8Value());
        }
    }
    return p;
}

}  // namespace

Napi::Function define_policy(Napi::Env env) {
    Napi::Function ctor = AddonPolicy::DefineClass(env, "AddonPolicy", {
        AddonPolicy::InstanceMethod<&AddonPolicy::run>("run"),
        AddonPolicy::InstanceMethod<&AddonPolicy::prompt_inputs>("promptInputs"),
        AddonPolicy::InstanceMethod<&AddonPolicy::logits>("logits"),
        AddonPolicy::InstanceMethod<&AddonPolicy::save>("save"),
        AddonPolicy::InstanceMethod<&AddonPolicy::tensor_names>("tensorNames"),
        AddonPolicy::InstanceMethod<&AddonPolicy::tensor_shape>("tensorShape"),
        AddonPolicy::InstanceMethod<&AddonPolicy::get_tensor>("getTensor"),
        AddonPolicy::InstanceMethod<&AddonPolicy::set_tensor>("setTensor"),
        AddonPolicy::InstanceMethod<&AddonPolicy::info>("info"),
        AddonPolicy::InstanceMethod<&AddonPolicy::dispose>("dispose"),
        AddonPolicy::InstanceAccessor<&AddonPolicy::disposed>("disposed"),
    });
    addon_data(env).policy_constructor = Napi::Persistent(ctor);
    return ctor;
}

std::shared_ptr<PolicyState> unwrap_policy(Napi::Env env, const Napi::Value & v) {
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env).policy_constructor.Value())) {
        throw_js(env, "ERR_INVALID_ARG", "expected a policy (model.createPolicy())");
    }
    return AddonPolicy::Unwrap(v.As<Napi::Object>())->state(env);
}

Napi::Value create_policy(Napi::Env env, std::shared_ptr<ModelState> model, const Napi::Object & options, const Napi::Object & model_object) {
    PolicyOptions opts = read_policy_options(env, options);
    std::string resume;
    if (options.Get("resumeFrom").IsString()) resume = options.Get("resumeFrom").As<Napi::String>().Utf8Value();
    auto state = std::make_shared<std::shared_ptr<PolicyState>>();
    auto * w = new PromiseWorker(
        env, "visplay.createPolicy",
        [model, opts, resume, state] {
            PolicyOptions o = resume.empty() ? opts : PolicyState::read_saved_options(resume, opts);
            auto s = std::make_shared<PolicyState>(model, o);
            if (!resume.empty()) s->restore(resume);
            *state = std::move(s);
        },
        [state](Napi::Env e) -> Napi::Value {
            t_pending_policy = std::move(*state);
            return addon_data(e).policy_constructor.New({});
        });
    w->keep(model_object);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

}  // namespace visplay
