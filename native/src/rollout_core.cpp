// The batched rollout engine, Node-free (see rollout_core.h; rollout.cpp is its JS wrapper).
#include "rollout_core.h"

#include "core_common.h"
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
    if (!sampling_pool_) sampling_pool_ = std::make_unique<WorkerPool>(n_sampling_threads);
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
        const auto t_sample = Clock::now();
        stats.decode_ms += std::chrono::duration<double, std::milli>(t_sample - t0).count();
        // At least 2 rows a worker: one row (~150K exps) is about the cost of waking a thread.
        const int n_workers = static_cast<int>(std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(n_sampling_threads), n_live / 2)));
        sampling_pool_->run(n_workers, [&](int w) {
            for (size_t i = n_live * w / n_workers; i < n_live * (w + 1) / n_workers; ++i) {
                drawn[i] = draw(live[i], logits_of[i], scratches[w]);
            }
        });
        stats.sample_ms += ms_since(t_sample);
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

}  // namespace visplay
