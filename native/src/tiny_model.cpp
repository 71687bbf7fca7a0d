// Writes the embedded tiny VLM (see tiny_model.h).
//
// Weights: N(0, 0.02²) matrices from a splitmix64 + Box-Muller stream (bit-identical on every
// platform, unlike std::normal_distribution), unit norm weights, small biases. Tensor names and
// shapes are those of llama.cpp's converter for Qwen2.5-VL (conversion/qwenvl.py); ggml shapes are
// listed fastest dimension first, i.e. {in, out} for a Linear of PyTorch shape (out, in).
#include "tiny_model.h"

#include "common.h"

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace visplay {
namespace {

// Qwen2.5-VL's special tokens past <|im_end|> (151645); the vocab file has [PADn] placeholders there.
// <tool_call> tags are plain added tokens; the rest are control tokens (llama.cpp forces <|...|> to
// control type anyway and warns when a file says otherwise).
struct SpecialToken { int id; const char * text; bool control; };
constexpr SpecialToken kQwen25VlSpecial[] = {
    {151646, "<|object_ref_start|>", true}, {151647, "<|object_ref_end|>", true},
    {151648, "<|box_start|>", true},        {151649, "<|box_end|>", true},
    {151650, "<|quad_start|>", true},       {151651, "<|quad_end|>", true},
    {151652, "<|vision_start|>", true},     {151653, "<|vision_end|>", true},
    {151654, "<|vision_pad|>", true},       {151655, "<|image_pad|>", true},
    {151656, "<|video_pad|>", true},        {151657, "<tool_call>", false},
    {151658, "</tool_call>", false},        {151659, "<|fim_prefix|>", true},
    {151660, "<|fim_middle|>", true},      {151661, "<|fim_suffix|>", true},
    {151662, "<|fim_pad|>", true},         {151663, "<|repo_name|>", true},
    {151664, "<|file_sep|>", true},
};
constexpr int kTokenTypeControl = 3;      // llama_token_type LLAMA_TOKEN_TYPE_CONTROL
constexpr int kTokenTypeUserDefined = 4;  // LLAMA_TOKEN_TYPE_USER_DEFINED
constexpr int kImEnd = 151645;
constexpr int kEndOfText = 151643;

class Rng {
  public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    uint64_t next() {  // splitmix64
        uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
    double normal() {
        if (has_spare_) { has_spare_ = false; return spare_; }
        const double u1 = uniform(), u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        spare_ = r * std::sin(2.0 * M_PI * u2);
        has_spare_ = true;
        return r * std::cos(2.0 * M_PI * u2);
    }
  private:
    uint64_t state_;
    double spare_ = 0.0;
    bool has_spare_ = false;
};

struct GgufDeleter { void operator()(gguf_context * c) const { gguf_free(c); } };
struct GgmlDeleter { void operator()(ggml_context * c) const { ggml_free(c); } };
using GgufPtr = std::unique_ptr<gguf_context, GgufDeleter>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlDeleter>;

// Runs fn(i) for i in [0, n) over `threads` threads (static interleaved split).
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)> & fn) {
    threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
    if (threads == 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { for (int64_t i = t; i < n; i += threads) fn(i); });
    for (auto & th : pool) th.join();
}

// Collects tensors for one GGUF file; every tensor draws from its own stream (seed, name), so
// changing one tensor's shape never changes another tensor's values. With threads <= 1 a tensor
// is one stream (the embedded tiny model's values); with more, each 1M-element chunk has its own
// stream (seed, name, chunk) so the large shapes of the benchmarks are written in seconds.
class TensorWriter {
  public:
    TensorWriter(gguf_context * gguf, size_t n_tensors, uint64_t seed, int threads) : gguf_(gguf), seed_(seed), threads_(threads) {
        ggml_init_params params = {ggml_tensor_overhead() * n_tensors + (1 << 16), nullptr, true};
        ctx_.reset(ggml_init(params));
        if (!ctx_) throw CodedError("ERR_OUTPUT", "could not allocate memory for the tiny model's tensors");
    }

    enum class Init { normal, ones, zeros };

    void add(const std::string & name, std::vector<int64_t> shape, Init init, ggml_type type = GGML_TYPE_F32,
             float std = 0.02f) {
        int64_t ne[4] = {1, 1, 1, 1};
        if (shape.empty() || shape.size() > 4) throw CodedError("ERR_OUTPUT", "bad tensor rank for " + name);
        for (size_t i = 0; i < shape.size(); ++i) ne[i] = shape[i];
        ggml_tensor * t = ggml_new_tensor(ctx_.get(), type, static_cast<int>(shape.size()), ne);
        uint64_t h = seed_ ^ 0xA0761D6478BD642Full;
        for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;  // FNV-1a
        const int64_t n = ggml_nelements(t);
        std::vector<float> f32;
        float * data;
        data_.emplace_back(ggml_nbytes(t));
        if (type == GGML_TYPE_F32) {
            data = reinterpret_cast<float *>(data_.back().data());
        } else {
            f32.resize(n);
            data = f32.data();
        }
        auto fill = [&](Rng & rng, int64_t i0, int64_t i1) {
            for (int64_t i = i0; i < i1; ++i) {
                data[i] = init == Init::normal ? static_cast<float>(rng.normal() * std) : init == Init::ones ? 1.0f : 0.0f;
            }
        };
        constexpr int64_t kChunk = 1 << 20;
        if (threads_ <= 1) {
            Rng rng(h);
            fill(rng, 0, n);
        } else {
            parallel_for((n + kChunk - 1) / kChunk, threads_, [&](int64_t c) {
                Rng rng(h ^ ((static_cast<uint64_t>(c) + 1) * 0x9E3779B97F4A7C15ull));
                fill(rng, c * kChunk, std::min(n, (c + 1) * kChunk));
            });
        }
        if (type == GGML_TYPE_F16) {
            ggml_fp32_to_fp16_row(data, reinterpret_cast<ggml_fp16_t *>(data_.back().data()), n);
        } else if (type != GGML_TYPE_F32) {
            // Quantized (the benchmarks' Q4_K / Q8_0 shapes): ggml's own quantizer, rows split over threads.
            const int64_t n_per_row = ne[0], n_rows = n / ne[0];
            if (n_per_row % ggml_blck_size(type) != 0 || ggml_quantize_requires_imatrix(type)) {
                throw CodedError("ERR_INVALID_ARG", name + ": cannot quantize rows of " + std::to_string(n_per_row) + " to " + ggml_type_name(type));
            }
            ggml_quantize_init(type);
            const int64_t rows_per_job = std::max<int64_t>(1, kChunk / n_per_row);
            uint8_t * dst = data_.back().data();
            parallel_for((n_rows + rows_per_job - 1) / rows_per_job, std::max(1, threads_), [&](int64_t j) {
                const int64_t r0 = j * rows_per_job, nr = std::min(rows_per_job, n_rows - r0);
                ggml_quantize_chunk(type, data, dst, r0 * n_per_row, nr, n_per_row, nullptr);
            });
        }
        ggml_set_name(t, name.c_str());
        gguf_add_tensor(gguf_, t);
        gguf_set_tensor_data(gguf_, name.c_str(), data_.back().data());
    }

  private:
    gguf_context * gguf_;
    uint64_t seed_;
    int threads_;
    GgmlPtr ctx_;
    std::deque<std::vector<uint8_t>> data_;  // each tensor's bytes, until the file is written
};

void write_atomically(gguf_context * gguf, const std::string & path) {
    const std::string tmp = path + ".tmp";
    if (!gguf_write_to_file(gguf, tmp.c_str(), false)) {
        std::remove(tmp.c_str());
        throw CodedError("ERR_OUTPUT", "could not write " + tmp + " (is the folder writable and is there space?)");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw CodedError("ERR_OUTPUT", "could not move " + tmp + " to " + path);
    }
}

// GPT-2's byte-level alphabet, which Qwen2's BPE uses: the text of the token that stands for byte b
// (printable bytes are themselves; the others are moved to code points 256 and up, in byte order).
std::string byte_token_text(int b) {
    auto printable = [](int x) { return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255); };
    int cp = b;
    if (!printable(b)) {
        cp = 256;
        for (int x = 0; x < b; ++x) cp += printable(x) ? 0 : 1;
    }
    std::string out;
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else {  // cp < 0x800 here
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return out;
}

// One line of tokenizer.ggml.merges, "left right" (byte-level token texts hold no space; llama.cpp
// splits at the first space after the first character, as here).
struct Merge {
    std::string line;
    size_t space;
    explicit Merge(std::string l) : line(std::move(l)), space(line.find(' ', 1)) {}
    bool valid() const { return space != std::string::npos; }
    std::string left() const { return line.substr(0, space); }
    std::string right() const { return line.substr(space + 1); }
    std::string result() const { return left() + right(); }
};

// The Qwen2 token ids that `texts` need, with everything that keeps their tokenization exact.
//
// A BPE tokenizer whose merge list is a subset, in the same order, tokenizes a word exactly as the
// full one does when every merge the full one applies to that word is in the subset (at each step
// the lowest-ranked applicable merge is the same). Every merge applied to a word makes a token that
// is, or is merged into, one of the word's final tokens; so keeping each kept token's every split
// (a, b) with a + b = token, recursively, keeps them all. The 256 byte tokens stay so that any
// other text still tokenizes (one token per byte), which llama.cpp's BPE relies on.
std::vector<char> select_vocabulary(const std::string & vocab_path, const std::vector<std::string> & tokens,
                                    const std::vector<Merge> & merges, int n_regular,
                                    const std::vector<std::string> & texts) {
    std::unordered_map<std::string, int> id_of;
    for (int i = 0; i < n_regular; ++i) id_of.emplace(tokens[i], i);
    // token text -> the merges that make it
    std::unordered_map<std::string, std::vector<const Merge *>> splits;
    for (const Merge & m : merges) {
        if (m.valid()) splits[m.result()].push_back(&m);
    }
    std::vector<char> keep(n_regular, 0);
    std::vector<int> work;
    auto add = [&](int id) {
        if (id >= 0 && id < n_regular && !keep[id]) {
            keep[id] = 1;
            work.push_back(id);
        }
    };
    for (int b = 0; b < 256; ++b) {
        auto it = id_of.find(byte_token_text(b));
        if (it == id_of.end()) throw CodedError("ERR_UNSUPPORTED_MODEL", vocab_path + " lacks the byte token of byte " + std::to_string(b));
        add(it->second);
    }

    llama_model_params params = llama_model_default_params();
    params.vocab_only = true;
    std::unique_ptr<llama_model, decltype(&llama_model_free)> model(llama_model_load_from_file(vocab_path.c_str(), params), &llama_model_free);
    if (!model) throw CodedError("ERR_MODEL_LOAD", "could not load the vocabulary " + vocab_path);
    const llama_vocab * vocab = llama_model_get_vocab(model.get());
    std::vector<llama_token> ids;
    for (const auto & text : texts) {
        const int n = -llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), nullptr, 0, false, false);
        if (n <= 0) continue;
        ids.resize(n);
        if (llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), ids.data(), n, false, false) != n) {
            throw CodedError("ERR_OUTPUT", "could not tokenize a vocabulary text");
        }
        for (llama_token id : ids) add(id);
    }
    while (!work.empty()) {
        const int id = work.back();
        work.pop_back();
        auto it = splits.find(tokens[id]);
        if (it == splits.end()) continue;
        for (const Merge * m : it->second) {
            auto ia = id_of.find(m->left()), ib = id_of.find(m->right());
            if (ia != id_of.end() && ib != id_of.end()) {
                add(ia->second);
                add(ib->second);
            }
        }
    }
    return keep;
}

// Copies the tokenizer.ggml.* keys of the vocab file, with Qwen2.5-VL's special tokens written in;
// with `texts`, only the tokens they need (select_vocabulary), renumbered in Qwen2's order, then the
// 22 special tokens from <|endoftext|> on. Returns the rows the embedding and the head need.
int copy_vocabulary(gguf_context * dst, const std::string & vocab_path, const std::vector<std::string> & texts) {
    gguf_init_params params = {true, nullptr};
    GgufPtr src(gguf_init_from_file(vocab_path.c_str(), params));
    if (!src) throw CodedError("ERR_FILE_NOT_FOUND", "could not read the vocabulary " + vocab_path + " (run `npm run setup`)");

    const int64_t tokens_key = gguf_find_key(src.get(), "tokenizer.ggml.tokens");
    if (tokens_key < 0) throw CodedError("ERR_UNSUPPORTED_MODEL", vocab_path + " has no tokenizer.ggml.tokens");
    const size_t n_src = gguf_get_arr_n(src.get(), tokens_key);
    std::vector<std::string> tokens(n_src);
    for (size_t j = 0; j < n_src; ++j) tokens[j] = gguf_get_arr_str(src.get(), tokens_key, j);
    for (const auto & s : kQwen25VlSpecial) {
        if (static_cast<size_t>(s.id) < n_src) tokens[s.id] = s.text;
    }

    // old_ids[new id] = Qwen2 id; identity without texts.
    std::vector<int> old_ids;
    std::vector<Merge> merges;  // read only when texts select a subset
    if (texts.empty()) {
        old_ids.resize(n_src);
        for (size_t j = 0; j < n_src; ++j) old_ids[j] = static_cast<int>(j);
    } else {
        const int64_t merges_key = gguf_find_key(src.get(), "tokenizer.ggml.merges");
        if (merges_key < 0) throw CodedError("ERR_UNSUPPORTED_MODEL", vocab_path + " has no tokenizer.ggml.merges");
        const size_t n_merges = gguf_get_arr_n(src.get(), merges_key);
        merges.reserve(n_merges);
        for (size_t j = 0; j < n_merges; ++j) merges.emplace_back(gguf_get_arr_str(src.get(), merges_key, j));
        const std::vector<char> keep = select_vocabulary(vocab_path, tokens, merges, kEndOfText, texts);
        for (int j = 0; j < kEndOfText; ++j) {
            if (keep[j]) old_ids.push_back(j);
        }
        const int last_special = kQwen25VlSpecial[std::size(kQwen25VlSpecial) - 1].id;
        for (int j = kEndOfText; j <= last_special; ++j) old_ids.push_back(j);
    }
    const size_t n = old_ids.size();
    std::vector<int> new_id(n_src, -1);
    for (size_t j = 0; j < n; ++j) new_id[old_ids[j]] = static_cast<int>(j);
    std::unordered_set<std::string> kept_text;
    for (int id : old_ids) kept_text.insert(tokens[id]);

    const int64_t n_kv = gguf_get_n_kv(src.get());
    for (int64_t i = 0; i < n_kv; ++i) {
        const std::string key = gguf_get_key(src.get(), i);
        if (key.rfind("tokenizer.ggml.", 0) != 0) continue;
        const gguf_type type = gguf_get_kv_type(src.get(), i);
        if (key == "tokenizer.ggml.tokens") {
            std::vector<const char *> ptrs(n);
            for (size_t j = 0; j < n; ++j) ptrs[j] = tokens[old_ids[j]].c_str();
            gguf_set_arr_str(dst, key.c_str(), ptrs.data(), n);
        } else if (key == "tokenizer.ggml.token_type") {
            const int32_t * types = static_cast<const int32_t *>(gguf_get_arr_data(src.get(), i));
            std::vector<int32_t> all(types, types + gguf_get_arr_n(src.get(), i));
            for (const auto & s : kQwen25VlSpecial) {
                if (static_cast<size_t>(s.id) < all.size()) all[s.id] = s.control ? kTokenTypeControl : kTokenTypeUserDefined;
            }
            std::vector<int32_t> out(n);
            for (size_t j = 0; j < n; ++j) out[j] = all[old_ids[j]];
            gguf_set_arr_data(dst, key.c_str(), GGUF_TYPE_INT32, out.data(), n);
        } else if (key == "tokenizer.ggml.merges" && !texts.empty()) {
            // A merge stays when both parts and the result do, in its original rank order.
            std::vector<const char *> ptrs;
            for (const Merge & m : merges) {
                if (m.valid() && kept_text.count(m.left()) && kept_text.count(m.right()) && kept_text.count(m.result())) ptrs.push_back(m.line.c_str());
            }
            gguf_set_arr_str(dst, key.c_str(), ptrs.data(), ptrs.size());
        } else if (type == GGUF_TYPE_ARRAY && gguf_get_arr_type(src.get(), i) == GGUF_TYPE_STRING) {
            const size_t m = gguf_get_arr_n(src.get(), i);
            std::vector<const char *> ptrs(m);
            for (size_t j = 0; j < m; ++j) ptrs[j] = gguf_get_arr_str(src.get(), i, j);
            gguf_set_arr_str(dst, key.c_str(), ptrs.data(), m);
        } else if (type == GGUF_TYPE_STRING) {
            gguf_set_val_str(dst, key.c_str(), gguf_get_val_str(src.get(), i));
        } else if (type == GGUF_TYPE_UINT32) {
            gguf_set_val_u32(dst, key.c_str(), gguf_get_val_u32(src.get(), i));
        } else if (type == GGUF_TYPE_INT32) {
            gguf_set_val_i32(dst, key.c_str(), gguf_get_val_i32(src.get(), i));
        } else if (type == GGUF_TYPE_BOOL) {
            gguf_set_val_bool(dst, key.c_str(), gguf_get_val_bool(src.get(), i));
        }
    }
    // Qwen2.5-VL-Instruct: a turn ends with <|im_end|>; <|endoftext|> pads; no BOS is added.
    gguf_set_val_u32(dst, "tokenizer.ggml.eos_token_id", new_id[kImEnd]);
    gguf_set_val_u32(dst, "tokenizer.ggml.padding_token_id", new_id[kEndOfText]);
    gguf_set_val_u32(dst, "tokenizer.ggml.bos_token_id", new_id[kEndOfText]);
    gguf_set_val_bool(dst, "tokenizer.ggml.add_bos_token", false);
    // The full vocabulary keeps the head's 151,936 rows of Qwen2.5-VL (the file lists fewer tokens).
    return texts.empty() ? 151936 : static_cast<int>(n);
}

void write_language_model(const TinyModelConfig & c) {
    GgufPtr gguf(gguf_init_empty());
    gguf_context * g = gguf.get();
    const int head_dim = c.n_embd / c.n_head;
    const int n_embd_kv = head_dim * c.n_head_kv;

    gguf_set_val_str(g, "general.architecture", "qwen2vl");
    gguf_set_val_str(g, "general.name", "visplay-tiny-qwen2.5-vl");
    gguf_set_val_str(g, "general.description", "random-weight tiny Qwen2.5-VL-shaped model generated by visplay-native");
    gguf_set_val_u32(g, "general.file_type", c.f32_embeddings ? 0 : 1);  // F16 embeddings make it "mostly F16"
    gguf_set_val_u32(g, "general.quantization_version", 2);
    gguf_set_val_u32(g, "qwen2vl.context_length", c.n_ctx_train);
    gguf_set_val_u32(g, "qwen2vl.embedding_length", c.n_embd);
    gguf_set_val_u32(g, "qwen2vl.block_count", c.n_layer);
    gguf_set_val_u32(g, "qwen2vl.feed_forward_length", c.n_ff);
    gguf_set_val_u32(g, "qwen2vl.attention.head_count", c.n_head);
    gguf_set_val_u32(g, "qwen2vl.attention.head_count_kv", c.n_head_kv);
    gguf_set_val_f32(g, "qwen2vl.rope.freq_base", 1000000.0f);
    gguf_set_val_f32(g, "qwen2vl.attention.layer_norm_rms_epsilon", 1e-6f);
    // M-RoPE sections (temporal, height, width, unused) over head_dim/2 rotary pairs, in the
    // proportions of Qwen2.5-VL's [16, 24, 24, 0] for head size 128.
    const int half = head_dim / 2;
    const int t = half / 4, hw = (half - t) / 2;
    const int32_t sections[4] = {t + (half - t - 2 * hw), hw, hw, 0};
    gguf_set_arr_data(g, "qwen2vl.rope.dimension_sections", GGUF_TYPE_INT32, sections, 4);
    gguf_set_val_u32(g, "visplay.tiny.seed", static_cast<uint32_t>(c.seed));
    const int n_vocab = copy_vocabulary(g, c.vocab_path, c.vocabulary_texts);
    gguf_set_val_str(g, "tokenizer.chat_template", c.chat_template.c_str());

    using Init = TensorWriter::Init;
    TensorWriter w(g, c.n_layer * 16 + 8, c.seed, c.threads);
    // Input embedding and a separate output head (as Qwen2.5-VL-7B; a random tied head mostly
    // repeats its input token, which makes outputs blind to the image), both stored F16; or one
    // tied matrix (tied_output, as Qwen2.5-VL-3B).
    const ggml_type embd_type = c.embd_type != GGML_TYPE_COUNT ? c.embd_type : c.f32_embeddings ? GGML_TYPE_F32 : GGML_TYPE_F16;
    const ggml_type wt = c.weight_type;
    w.add("token_embd.weight", {c.n_embd, n_vocab}, Init::normal, embd_type);
    w.add("output_norm.weight", {c.n_embd}, Init::ones);
    if (!c.tied_output) w.add("output.weight", {c.n_embd, n_vocab}, Init::normal, embd_type, c.output_std);
    for (int il = 0; il < c.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        w.add(p + "attn_norm.weight", {c.n_embd}, Init::ones);
        w.add(p + "attn_q.weight", {c.n_embd, c.n_embd}, Init::normal, wt, c.block_std);
        w.add(p + "attn_k.weight", {c.n_embd, n_embd_kv}, Init::normal, wt, c.block_std);
        w.add(p + "attn_v.weight", {c.n_embd, n_embd_kv}, Init::normal, wt, c.block_std);
        w.add(p + "attn_q.bias", {c.n_embd}, Init::normal);
        w.add(p + "attn_k.bias", {n_embd_kv}, Init::normal);
        w.add(p + "attn_v.bias", {n_embd_kv}, Init::normal);
        w.add(p + "attn_output.weight", {c.n_embd, c.n_embd}, Init::normal, wt, c.block_std);
        w.add(p + "ffn_norm.weight", {c.n_embd}, Init::ones);
        w.add(p + "ffn_gate.weight", {c.n_embd, c.n_ff}, Init::normal, wt, c.block_std);
        w.add(p + "ffn_up.weight", {c.n_embd, c.n_ff}, Init::normal, wt, c.block_std);
        w.add(p + "ffn_down.weight", {c.n_ff, c.n_embd}, Init::normal, wt, c.block_std);
    }
    write_atomically(g, c.model_path);
}

void write_projector(const TinyModelConfig & c) {
    GgufPtr gguf(gguf_init_empty());
    gguf_context * g = gguf.get();
    gguf_set_val_str(g, "general.architecture", "clip");
    gguf_set_val_str(g, "general.name", "visplay-tiny-qwen2.5-vl-mmproj");
    gguf_set_val_u32(g, "general.file_type", 0);
    gguf_set_val_str(g, "clip.projector_type", "qwen2.5vl_merger");
    gguf_set_val_bool(g, "clip.has_vision_encoder", true);
    gguf_set_val_bool(g, "clip.use_silu", true);
    gguf_set_val_u32(g, "clip.vision.image_size", c.image_size);
    gguf_set_val_u32(g, "clip.vision.patch_size", c.patch_size);
    gguf_set_val_u32(g, "clip.vision.embedding_length", c.v_embd);
    gguf_set_val_u32(g, "clip.vision.feed_forward_length", c.v_ff);
    gguf_set_val_u32(g, "clip.vision.block_count", c.v_layer);
    gguf_set_val_u32(g, "clip.vision.attention.head_count", c.v_head);
    gguf_set_val_f32(g, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
    gguf_set_val_u32(g, "clip.vision.projection_dim", c.n_embd);
    // Full attention in every n_wa_pattern-th block, windowed (112 px) attention in the others.
    gguf_set_val_u32(g, "clip.vision.n_wa_pattern", c.v_layer);
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    gguf_set_arr_data(g, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, mean, 3);
    gguf_set_arr_data(g, "clip.vision.image_std", GGUF_TYPE_FLOAT32, stdv, 3);

    using Init = TensorWriter::Init;
    const int merged = c.v_embd * 4;  // the 2x2 patch merger concatenates four patches
    const size_t params = static_cast<size_t>(2) * c.patch_size * c.patch_size * 3 * c.v_embd +
        static_cast<size_t>(c.v_layer) * (2 * c.v_embd + 4 * c.v_embd * c.v_embd + 4 * c.v_embd + 3 * c.v_embd * c.v_ff + 2 * c.v_ff + c.v_embd) +
        c.v_embd + static_cast<size_t>(merged) * merged + merged + static_cast<size_t>(merged) * c.n_embd + c.n_embd;
    (void)params;
    TensorWriter w(g, c.v_layer * 20 + 16, c.seed + 1, c.threads);
    const ggml_type vt = c.vision_type;
    // Conv3D patch embedding (temporal patch 2) split into two Conv2D kernels {kw, kh, c_in, c_out}.
    w.add("v.patch_embd.weight", {c.patch_size, c.patch_size, 3, c.v_embd}, Init::normal);
    w.add("v.patch_embd.weight.1", {c.patch_size, c.patch_size, 3, c.v_embd}, Init::normal);
    for (int il = 0; il < c.v_layer; ++il) {
        const std::string p = "v.blk." + std::to_string(il) + ".";
        w.add(p + "ln1.weight", {c.v_embd}, Init::ones);
        w.add(p + "ln2.weight", {c.v_embd}, Init::ones);
        for (const char * qkvo : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            w.add(p + qkvo + ".weight", {c.v_embd, c.v_embd}, Init::normal, vt);
            w.add(p + qkvo + ".bias", {c.v_embd}, Init::normal);
        }
        w.add(p + "ffn_gate.weight", {c.v_embd, c.v_ff}, Init::normal, vt);
        w.add(p + "ffn_gate.bias", {c.v_ff}, Init::normal);
        w.add(p + "ffn_up.weight", {c.v_embd, c.v_ff}, Init::normal, vt);
        w.add(p + "ffn_up.bias", {c.v_ff}, Init::normal);
        w.add(p + "ffn_down.weight", {c.v_ff, c.v_embd}, Init::normal, vt);
        w.add(p + "ffn_down.bias", {c.v_embd}, Init::normal);
    }
    w.add("v.post_ln.weight", {c.v_embd}, Init::ones);  // the merger's ln_q (RMSNorm)
    w.add("mm.0.weight", {merged, merged}, Init::normal);
    w.add("mm.0.bias", {merged}, Init::normal);
    w.add("mm.2.weight", {merged, c.n_embd}, Init::normal);
    w.add("mm.2.bias", {c.n_embd}, Init::normal);
    write_atomically(g, c.mmproj_path);
}

}  // namespace

void write_tiny_model(const TinyModelConfig & c) {
    if (c.n_embd % c.n_head != 0 || c.n_head % c.n_head_kv != 0 || (c.n_embd / c.n_head) % 8 != 0) {
        throw CodedError("ERR_INVALID_ARG", "tiny model: n_embd/n_head must be a multiple of 8 and n_head a multiple of n_head_kv");
    }
    if (c.v_embd % c.v_head != 0 || (c.v_embd / c.v_head) % 4 != 0 || c.v_ff == c.v_embd) {
        throw CodedError("ERR_INVALID_ARG", "tiny model: the vision head size must be divisible by 4 and the vision FFN size differ from its width");
    }
    write_language_model(c);
    write_projector(c);
}

}  // namespace visplay
