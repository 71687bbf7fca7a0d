// The batched rollout engine (see rollout.h) and its JS wrapper.
#include "rollout.h"

#include "common.h"
#include "policy.h"
#include "sampler.h"

#include "mtmd-helper.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <unordered_set>

namespace visplay {

// Tokenizes a templated prompt with its images into mtmd chunks (text and image).
ChunksPtr tokenize_prompt(ModelState & model, const std::string & prompt, const std::vector<const mtmd_bitmap *> & bitmaps) {
    ChunksPtr chunks(mtmd_input_chunks_init());
    mtmd_input_text text = {prompt.c_str(), prompt.size(), /* add_special */ true, /* parse_special */ true};
    const int32_t res = mtmd_tokenize(model.mtmd, chunks.get(), &text, bitmaps.data(), bitmaps.size());
    if (res == 1) {
        throw CodedError("ERR_INVALID_ARG", "the prompt has a different number of image markers than images (" +
                         std::to_string(bitmaps.size()) + " images)");
    }
    if (res != 0) throw CodedError("ERR_IMAGE_DECODE", with_log("mtmd could not preprocess an image of the prompt"));
    return chunks;
}

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

class Batch {  // a llama_batch sized once, refilled every step
  public:
    explicit Batch(int capacity) : batch_(llama_batch_init(capacity, 0, 1)), capacity_(capacity) {}
    ~Batch() { llama_batch_free(batch_); }
    void clear() { batch_.n_tokens = 0; }
    int add(llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
        const int i = batch_.n_tokens++;
        batch_.token[i] = token;
        batch_.pos[i] = pos;
        batch_.n_seq_id[i] = 1;
        batch_.seq_id[i][0] = seq;
        batch_.logits[i] = logits;
        return i;
    }
    int size() const { return batch_.n_tokens; }
    int capacity() const { return capacity_; }
    llama_batch & get() { return batch_; }
  private:
    llama_batch batch_;
    int capacity_;
};

std::string decode_error(int32_t ret) {
    switch (ret) {
        case 1: return "no KV cache slot for the batch (the context is full; raise contextSize)";
        case 2: return "decoding was aborted";
        case -1: return "invalid batch";
        default: return "llama_decode failed with code " + std::to_string(ret);
    }
}

}  // namespace

struct RolloutContextState::Prefill {
    int cells = 0;             // KV cells of the prompt
    llama_pos positions = 0;   // next position after the prompt
    std::vector<float> last_logits;  // distribution of the first response token
};

RolloutContextState::RolloutContextState(std::shared_ptr<ModelState> model, const ContextOptions & options)
    : model_(std::move(model)), options_(options) {
    llama_context_params p = llama_context_default_params();
    p.n_ctx = static_cast<uint32_t>(options.context_size);
    p.n_batch = static_cast<uint32_t>(std::max(options.batch_size, options.parallel));
    p.n_ubatch = p.n_batch;
    p.n_seq_max = static_cast<uint32_t>(2 * options.parallel);  // samples + prefix holders
    p.kv_unified = true;  // one cache: a prefix shared by n samples occupies its cells once
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    p.n_threads = threads;
    p.n_threads_batch = threads;
    p.no_perf = true;
    p.flash_attn_type = static_cast<llama_flash_attn_type>(options.flash_attention);
    if (options.kv_f32) {
        p.type_k = GGML_TYPE_F32;
        p.type_v = GGML_TYPE_F32;
    }
    clear_captured_log();
    ctx_ = llama_init_from_model(model_->model, p);
    if (!ctx_) throw CodedError("ERR_MODEL_LOAD", with_log("failed to create a llama context of " + std::to_string(options.context_size) + " cells"));
    n_vocab_ = llama_vocab_n_tokens(model_->vocab);
    options_.batch_size = static_cast<int>(p.n_batch);
    llama_set_abort_callback(ctx_, exiting_abort_callback, nullptr);  // a decode in flight stops when the process exits
    g_live_contexts++;
}

void RolloutContextState::set_adapter(llama_adapter_lora * adapter, std::shared_ptr<void> owner) {
    float scale = 1.0f;  // llama.cpp multiplies by the adapter's alpha / rank itself
    if (llama_set_adapters_lora(ctx_, adapter ? &adapter : nullptr, adapter ? 1 : 0, &scale) != 0) {
        throw CodedError("ERR_INVALID_ARG", with_log("llama.cpp refused the LoRA adapter"));
    }
    adapter_owner_ = std::move(owner);
}

RolloutContextState::~RolloutContextState() {
    if (ctx_) llama_free(ctx_);
    g_live_contexts--;
}

// Evaluates one request's prompt into sequence `seq`, encoding images not yet in the cache.
RolloutContextState::Prefill RolloutContextState::prefill(const RequestInput & request, const std::vector<ImageInput> & images,
                                                          llama_seq_id seq, GenerateStats & stats) {
    std::vector<BitmapPtr> owned;
    std::vector<const mtmd_bitmap *> bitmaps;
    for (int idx : request.images) {
        const ImageInput & im = images[idx];
        owned.emplace_back(mtmd_bitmap_init(im.width, im.height, im.rgb.data()));
        mtmd_bitmap_set_id(owned.back().get(), im.key.c_str());
        bitmaps.push_back(owned.back().get());
    }
    ChunksPtr chunks = tokenize_prompt(*model_, request.prompt, bitmaps);

    Prefill out;
    llama_pos n_past = 0;
    const size_t n_chunks = mtmd_input_chunks_size(chunks.get());
    const int n_batch = options_.batch_size;
    Batch batch(n_batch);
    int last_logits_index = -1;
    for (size_t ci = 0; ci < n_chunks; ++ci) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks.get(), ci);
        const auto type = mtmd_input_chunk_get_type(chunk);
        if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n_tokens = 0;
            const llama_token * tokens = mtmd_input_chunk_get_tokens_text(chunk, &n_tokens);
            const auto t0 = Clock::now();
            for (size_t i = 0; i < n_tokens; i += n_batch) {
                batch.clear();
                const size_t end = std::min(n_tokens, i + n_batch);
                for (size_t j = i; j < end; ++j) {
                    const bool last = ci == n_chunks - 1 && j == n_tokens - 1;
                    const int bi = batch.add(tokens[j], n_past++, seq, last);
                    if (last) last_logits_index = bi;
                }
                const int32_t ret = llama_decode(ctx_, batch.get());
                stats.decode_calls++;
                if (ret != 0) throw CodedError("ERR_DECODE", with_log("prompt evaluation failed: " + decode_error(ret)));
            }
            out.cells += static_cast<int>(n_tokens);
            stats.prefill_ms += ms_since(t0);
        } else {
            const std::string key = mtmd_input_chunk_get_id(chunk) ? mtmd_input_chunk_get_id(chunk) : "";
            const size_t n_tokens = mtmd_input_chunk_get_n_tokens(chunk);
            auto it = embeddings_.find(key);
            if (it == embeddings_.end() || key.empty()) {
                const auto t0 = Clock::now();
                std::lock_guard<std::mutex> lock(model_->encode_mutex);
                if (mtmd_encode_chunk(model_->mtmd, chunk) != 0) {
                    throw CodedError("ERR_DECODE", with_log("image encoding failed"));
                }
                const size_t n_floats = n_tokens * static_cast<size_t>(llama_model_n_embd_inp(model_->model));
                const float * embd = mtmd_get_output_embd(model_->mtmd);
                it = embeddings_.emplace(key, std::vector<float>(embd, embd + n_floats)).first;
                stats.image_encodes++;
                stats.encode_ms += ms_since(t0);
            }
            const auto t0 = Clock::now();
            llama_pos new_n_past = n_past;
            const int32_t ret = mtmd_helper_decode_image_chunk(model_->mtmd, ctx_, chunk, it->second.data(), n_past, seq,
                                                               n_batch, &new_n_past, nullptr, nullptr);
            stats.decode_calls++;
            if (ret != 0) throw CodedError("ERR_DECODE", with_log("decoding the image embeddings failed: " + decode_error(ret)));
            n_past = new_n_past;
            out.cells += static_cast<int>(n_tokens);
            stats.prefill_ms += ms_since(t0);
        }
    }
    if (last_logits_index < 0) throw CodedError("ERR_INVALID_ARG", "the prompt must end with text (the assistant turn's opening)");
    const float * logits = llama_get_logits_ith(ctx_, last_logits_index);
    out.last_logits.assign(logits, logits + n_vocab_);
    out.positions = n_past;
    stats.prompt_tokens += out.cells;
    return out;
}

namespace {

struct SampleState {
    int request = 0;
    int index = 0;          // sample index within its request
    llama_seq_id seq = -1;
    llama_pos n_past = 0;   // position of the next token to decode
    llama_token pending = -1;
    SampleRng rng;
    SampleOutput out;
};

struct RequestState {
    const RequestInput * input = nullptr;
    std::unordered_set<llama_token> stops;
    int cells = 0;            // prefix cells (known after measuring)
    int started = 0;
    int finished = 0;
    llama_seq_id holder = -1;
    llama_pos prefix_positions = 0;
    std::vector<float> first_logits;
};

// Per-sample seed: a hash of (request seed, sample index), so samples differ from each other but
// each one depends on nothing else.
uint64_t sample_seed(uint64_t seed, int index) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
    return z ^ (z >> 29);
}

}  // namespace

PromptMeasure measure_prompt_tokens(ModelState & model, const std::string & prompt,
                                    const std::vector<std::pair<uint32_t, uint32_t>> & image_sizes) {
    std::vector<BitmapPtr> owned;
    std::vector<const mtmd_bitmap *> bitmaps;
    for (auto [w, h] : image_sizes) {
        if (w == 0 || h == 0) throw CodedError("ERR_INVALID_ARG", "image width and height must be positive");
        owned.emplace_back(mtmd_bitmap_init(w, h, nullptr));  // placeholder: counts tokens, holds no pixels
        bitmaps.push_back(owned.back().get());
    }
    ChunksPtr chunks = tokenize_prompt(model, prompt, bitmaps);
    PromptMeasure m;
    m.tokens = static_cast<int>(mtmd_helper_get_n_tokens(chunks.get()));
    m.positions = static_cast<int>(mtmd_helper_get_n_pos(chunks.get()));
    return m;
}

std::vector<std::vector<SampleOutput>> RolloutContextState::generate(const std::vector<ImageInput> & images,
                                                                     const std::vector<RequestInput> & requests,
                                                                     GenerateStats & stats,
                                                                     const std::function<void(const GenerateProgress &)> & progress) {
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_clear(mem, true);
    embeddings_.clear();

    const int n_ctx = static_cast<int>(llama_n_ctx(ctx_));
    const int parallel = options_.parallel;
    std::vector<RequestState> reqs(requests.size());
    int total_samples = 0;
    for (size_t r = 0; r < requests.size(); ++r) {
        const RequestInput & in = requests[r];
        reqs[r].input = &in;
        reqs[r].stops.insert(in.stop_tokens.begin(), in.stop_tokens.end());
        std::vector<std::pair<uint32_t, uint32_t>> sizes;
        for (int idx : in.images) sizes.emplace_back(images[idx].width, images[idx].height);
        reqs[r].cells = measure_prompt_tokens(*model_, in.prompt, sizes).tokens;
        if (reqs[r].cells + in.max_tokens > n_ctx) {
            throw CodedError("ERR_PROMPT_TOO_LONG", "request " + std::to_string(r) + ": the prompt takes " + std::to_string(reqs[r].cells) +
                             " tokens (images included) and up to " + std::to_string(in.max_tokens) +
                             " more are generated, but the context holds " + std::to_string(n_ctx) +
                             "; raise the context size (contextSize, --context-size) or shorten the prompt");
        }
        total_samples += in.n;
    }

    std::vector<std::vector<SampleOutput>> results(requests.size());
    for (size_t r = 0; r < requests.size(); ++r) results[r].resize(requests[r].n);

    std::vector<llama_seq_id> free_slots, free_holders;
    for (int s = parallel - 1; s >= 0; --s) free_slots.push_back(s);
    for (int s = 2 * parallel - 1; s >= parallel; --s) free_holders.push_back(s);

    std::vector<SampleState> live;
    live.reserve(parallel);
    int reserved = 0;           // KV cells promised to admitted prefixes and started samples
    size_t next_request = 0;
    std::deque<size_t> admitted;  // requests with a holder whose samples are not all started
    GenerateProgress prog;
    prog.total = total_samples;
    SamplerScratch scratch;
    Batch batch(std::max(parallel, 1));

    auto finish_sample = [&](SampleState & s, bool stopped) {
        s.out.stopped = stopped;
        llama_memory_seq_rm(mem, s.seq, -1, -1);
        free_slots.push_back(s.seq);
        RequestState & rq = reqs[s.request];
        reserved -= rq.input->max_tokens;
        rq.finished++;
        if (rq.finished == rq.input->n) reserved -= rq.cells;  // the last sharer freed the prefix cells
        results[s.request][s.index] = std::move(s.out);
        prog.done++;
    };

    // Records token `t` for sample `s`; returns false when the sample is finished.
    auto apply = [&](SampleState & s, const SampledToken & t) {
        const RequestInput & in = *reqs[s.request].input;
        s.out.tokens.push_back(t.token);
        s.out.logprobs.push_back(t.logprob);
        stats.generated_tokens++;
        prog.tokens++;
        if ((!in.ignore_eos && llama_vocab_is_eog(model_->vocab, t.token)) || reqs[s.request].stops.count(t.token)) {
            finish_sample(s, true);
            return false;
        }
        s.out.text += token_piece(model_->vocab, t.token, false);
        if (static_cast<int>(s.out.tokens.size()) >= in.max_tokens) {
            finish_sample(s, false);
            return false;
        }
        s.pending = t.token;
        return true;
    };
    auto draw = [&](SampleState & s, const float * logits, SamplerScratch & scr) {
        const RequestInput & in = *reqs[s.request].input;
        return sample_token(logits, n_vocab_, SamplingParams{in.temperature, in.top_p, in.top_k}, s.rng, scr);
    };
    auto advance = [&](SampleState & s, const float * logits) { return apply(s, draw(s, logits, scratch)); };

    // Sampling after a decode step touches only each sample's own RNG and a per-thread scratch, so
    // it is spread over the context's threads (ggml's are idle between decodes); recording the
    // tokens stays sequential.
    const int n_sampling_threads = std::max(1, options_.threads > 0 ? options_.threads : static_cast<int>(std::thread::hardware_concurrency()));
    std::vector<SamplerScratch> scratches(static_cast<size_t>(n_sampling_threads));
    std::vector<SampledToken> drawn;

    while (prog.done < total_samples) {
        if (g_exiting) throw CodedError("ERR_DISPOSED", "the process is exiting");
        // Fill free slots: first with samples of admitted requests, then by admitting new ones.
        for (;;) {
            bool progressed = false;
            while (!admitted.empty() && !free_slots.empty()) {
                RequestState & rq = reqs[admitted.front()];
                if (reserved + rq.input->max_tokens > n_ctx) break;
                SampleState s;
                s.request = static_cast<int>(admitted.front());
                s.index = rq.started++;
                s.seq = free_slots.back();
                free_slots.pop_back();
                s.n_past = rq.prefix_positions;
                s.rng = SampleRng(sample_seed(rq.input->seed, s.index));
                reserved += rq.input->max_tokens;
                llama_memory_seq_cp(mem, rq.holder, s.seq, -1, -1);
                if (rq.started == rq.input->n) {
                    llama_memory_seq_rm(mem, rq.holder, -1, -1);  // cells stay: the samples share them
                    free_holders.push_back(rq.holder);
                    rq.holder = -1;
                    admitted.pop_front();
                }
                if (advance(s, rq.first_logits.data())) live.push_back(std::move(s));
                if (rq.holder < 0) std::vector<float>().swap(rq.first_logits);
                progressed = true;
            }
            if (next_request < reqs.size() && !free_slots.empty() && !free_holders.empty() &&
                (admitted.empty() || admitted.back() != next_request)) {
                RequestState & rq = reqs[next_request];
                if (reserved + rq.cells + rq.input->max_tokens <= n_ctx) {
                    rq.holder = free_holders.back();
                    free_holders.pop_back();
                    reserved += rq.cells;
                    Prefill pf = prefill(*rq.input, images, rq.holder, stats);
                    rq.prefix_positions = pf.positions;
                    rq.first_logits = std::move(pf.last_logits);
                    if (rq.input->n == 0) {
                        llama_memory_seq_rm(mem, rq.holder, -1, -1);
                        free_holders.push_back(rq.holder);
                        reserved -= rq.cells;
                    } else {
                        admitted.push_back(next_request);
                    }
                    next_request++;
                    progressed = true;
                }
            }
            if (!progressed) break;
        }
        if (progress) progress(prog);
        if (live.empty()) {
            if (prog.done >= total_samples) break;
            throw CodedError("ERR_DECODE", "the rollout scheduler could not place any sequence (context " + std::to_string(n_ctx) + " cells)");
        }

        // One decode for every live sample.
        const auto t0 = Clock::now();
        batch.clear();
        for (auto & s : live) batch.add(s.pending, s.n_past, s.seq, true);
        stats.max_live = std::max(stats.max_live, static_cast<int>(live.size()));
        const int32_t ret = llama_decode(ctx_, batch.get());
        stats.decode_calls++;
        if (ret != 0) throw CodedError("ERR_DECODE", with_log("generation step failed: " + decode_error(ret)));
        drawn.resize(live.size());
        const size_t n_live = live.size();
        // llama_get_logits_ith may synchronize the backend: call it here, not in the workers.
        std::vector<const float *> logits_of(n_live);
        for (size_t i = 0; i < n_live; ++i) logits_of[i] = llama_get_logits_ith(ctx_, static_cast<int32_t>(i));
        const int n_workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(n_sampling_threads), n_live / 2));
        auto draw_range = [&](int w, int n_parts) {
            for (size_t i = n_live * w / n_parts; i < n_live * (w + 1) / n_parts; ++i) {
                drawn[i] = draw(live[i], logits_of[i], scratches[w]);
            }
        };
        if (n_workers > 1) {
            std::vector<std::thread> workers;
            for (int w = 1; w < n_workers; ++w) workers.emplace_back(draw_range, w, n_workers);
            draw_range(0, n_workers);
            for (auto & t : workers) t.join();
        } else {
            draw_range(0, 1);
        }
        std::vector<SampleState> still;
        still.reserve(live.size());
        for (size_t i = 0; i < live.size(); ++i) {
            SampleState & s = live[i];
            s.n_past++;
            if (apply(s, drawn[i])) still.push_back(std::move(s));
        }
        live.swap(still);
        stats.generate_ms += ms_since(t0);
    }
    if (progress) progress(prog);
    llama_memory_clear(mem, true);
    embeddings_.clear();
    return results;
}

std::vector<float> RolloutContextState::score(const std::vector<ImageInput> & images, const RequestInput & prompt,
                                              const std::vector<llama_token> & tokens, std::vector<float> * logits_out) {
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_clear(mem, true);
    embeddings_.clear();
    GenerateStats stats;
    std::vector<std::pair<uint32_t, uint32_t>> sizes;
    for (int idx : prompt.images) sizes.emplace_back(images[idx].width, images[idx].height);
    const int cells = measure_prompt_tokens(*model_, prompt.prompt, sizes).tokens;
    if (cells + static_cast<int>(tokens.size()) > static_cast<int>(llama_n_ctx(ctx_))) {
        throw CodedError("ERR_PROMPT_TOO_LONG", "prompt (" + std::to_string(cells) + " tokens) plus " + std::to_string(tokens.size()) +
                         " scored tokens exceed the context of " + std::to_string(llama_n_ctx(ctx_)));
    }
    Prefill pf = prefill(prompt, images, 0, stats);
    std::vector<float> out;
    out.reserve(tokens.size());
    if (tokens.empty()) return out;
    out.push_back(static_cast<float>(pf.last_logits[tokens[0]] - logsumexp(pf.last_logits.data(), n_vocab_, nullptr)));
    if (logits_out) logits_out->assign(pf.last_logits.begin(), pf.last_logits.end());
    // Token i's distribution is the output after token i-1; the last token needs no output.
    const int n_batch = options_.batch_size;
    Batch batch(n_batch);
    llama_pos pos = pf.positions;
    for (size_t i = 0; i + 1 < tokens.size(); i += n_batch) {
        batch.clear();
        const size_t end = std::min(tokens.size() - 1, i + n_batch);
        for (size_t j = i; j < end; ++j) batch.add(tokens[j], pos++, 0, true);
        const int32_t ret = llama_decode(ctx_, batch.get());
        if (ret != 0) throw CodedError("ERR_DECODE", with_log("scoring failed: " + decode_error(ret)));
        for (size_t j = i; j < end; ++j) {
            const float * logits = llama_get_logits_ith(ctx_, static_cast<int32_t>(j - i));
            out.push_back(static_cast<float>(logits[tokens[j + 1]] - logsumexp(logits, n_vocab_, nullptr)));
            if (logits_out) logits_out->insert(logits_out->end(), logits, logits + n_vocab_);
        }
    }
    llama_memory_clear(mem, true);
    embeddings_.clear();
    return out;
}

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
