#include "lm_graph.h"

#include "common.h"

// Internal llama.cpp headers: the trainer reads the loaded weights and hyper-parameters in place
// instead of loading the GGUF a second time. Built from the same vendored tree, so the layout agrees.
#include "llama-model.h"

#include <cmath>

namespace visplay {

namespace {

const std::vector<std::string> kModules = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

}  // namespace

const std::vector<std::string> & lora_module_names() { return kModules; }

LmView make_lm_view(const llama_model * model) {
    const llama_hparams & hp = model->hparams;
    LmView v;
    char buf[128] = {0};
    llama_model_meta_val_str(model, "general.architecture", buf, sizeof(buf));
    v.arch = buf;
    if (v.arch != "qwen2vl" && v.arch != "qwen2" && v.arch != "llama") {
        throw CodedError("ERR_UNSUPPORTED_MODEL", "training supports the qwen2vl, qwen2 and llama language-model architectures, not '" +
                                                      v.arch + "'");
    }
    for (const auto & [name, t] : model->tensors_by_name) v.by_name[name] = t;

    v.n_embd = static_cast<int>(hp.n_embd);
    v.n_layer = static_cast<int>(hp.n_layer());
    v.n_head = static_cast<int>(hp.n_head(0));
    v.n_head_kv = static_cast<int>(hp.n_head_kv(0));
    v.head_dim = static_cast<int>(hp.n_embd_head_k());
    v.n_ff = static_cast<int>(hp.n_ff(0));
    v.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    v.n_ctx_train = static_cast<int>(hp.n_ctx_train);
    v.rms_eps = hp.f_norm_rms_eps;
    if (v.head_dim * v.n_head != v.n_embd || static_cast<int>(hp.n_embd_head_v()) != v.head_dim) {
        throw CodedError("ERR_UNSUPPORTED_MODEL", "training needs head size * heads == embedding size");
    }
    if (llama_model_n_embd_inp(model) != v.n_embd) {
        throw CodedError("ERR_UNSUPPORTED_MODEL", "training does not support models whose input embedding width differs from n_embd");
    }

    // RoPE parameters as llama_context derives them (src/llama-context.cpp) with default context params.
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_YARN || hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_LONGROPE) {
        throw CodedError("ERR_UNSUPPORTED_MODEL", "training does not support YaRN/LongRoPE context extension");
    }
    v.rope_mode = hp.rope_type;
    v.mrope = hp.rope_type == LLAMA_ROPE_TYPE_MROPE;
    if (hp.rope_type != LLAMA_ROPE_TYPE_MROPE && hp.rope_type != LLAMA_ROPE_TYPE_NEOX && hp.rope_type != LLAMA_ROPE_TYPE_NORM) {
        throw CodedError("ERR_UNSUPPORTED_MODEL", "unsupported RoPE type " + std::to_string(hp.rope_type));
    }
    v.n_rot = static_cast<int>(hp.n_rot(0));
    v.n_ctx_orig = static_cast<int>(hp.n_ctx_orig_yarn != 0 ? hp.n_ctx_orig_yarn : hp.n_ctx_train);
    for (int i = 0; i < 4; ++i) v.sections[i] = hp.rope_sections[i];
    v.freq_base = hp.rope_freq_base_train;
    v.freq_scale = hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_NONE ? 1.0f : hp.rope_freq_scale_train;
    v.ext_factor = 0.0f;
    v.attn_factor = hp.yarn_attn_factor * hp.rope_attn_factor;
    v.beta_fast = hp.yarn_beta_fast;
    v.beta_slow = hp.yarn_beta_slow;

    v.tok_embd = model->tok_embd;
    v.output_norm = model->output_norm;
    v.output = model->output ? model->output : model->tok_embd;
    if (!v.tok_embd || !v.output_norm || !v.output) throw CodedError("ERR_UNSUPPORTED_MODEL", "the model lacks token_embd/output_norm weights");
    if (model->output_b) throw CodedError("ERR_UNSUPPORTED_MODEL", "output bias is not supported by the training graph");

    auto find = [&](const std::string & name) -> ggml_tensor * {
        auto it = v.by_name.find(name);
        return it == v.by_name.end() ? nullptr : it->second;
    };
    v.layers.resize(v.n_layer);
    for (int il = 0; il < v.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        LmLayer & l = v.layers[il];
        l.attn_norm = find(p + "attn_norm.weight");
        l.wq = find(p + "attn_q.weight");
        l.wk = find(p + "attn_k.weight");
        l.wv = find(p + "attn_v.weight");
        l.wo = find(p + "attn_output.weight");
        l.bq = find(p + "attn_q.bias");
        l.bk = find(p + "attn_k.bias");
        l.bv = find(p + "attn_v.bias");
        l.bo = find(p + "attn_output.bias");
        l.ffn_norm = find(p + "ffn_norm.weight");
        l.ffn_gate = find(p + "ffn_gate.weight");
        l.ffn_up = find(p + "ffn_up.weight");
        l.ffn_down = find(p + "ffn_down.weight");
        if (!l.attn_norm || !l.wq || !l.wk || !l.wv || !l.wo || !l.ffn_norm || !l.ffn_gate || !l.ffn_up || !l.ffn_down) {
            throw CodedError("ERR_UNSUPPORTED_MODEL", "block " + std::to_string(il) +
                                                          " lacks a weight the training graph needs (separate q/k/v, gate/up/down)");
        }
        if (find(p + "attn_q_norm.weight") || find(p + "attn_k_norm.weight") || find(p + "attn_qkv.weight")) {
            throw CodedError("ERR_UNSUPPORTED_MODEL", "block " + std::to_string(il) + " uses q/k norms or fused qkv, which training does not support");
        }
    }
    return v;
}

namespace {

// W x plus the LoRA delta when W is a target. x: [n_in, T] -> [n_out, T].
ggml_tensor * linear(ggml_context * ctx, ggml_tensor * w, ggml_tensor * bias, ggml_tensor * x,
                     const std::map<const ggml_tensor *, const LoraPair *> & loras, float scale) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    auto it = loras.find(w);
    if (it != loras.end()) {
        // s B (A x) with the scale on the rank-sized product: the same value, but the scaling (and
        // its backward) passes over [rank, T] instead of [n_out, T] (on a 3B model's step, 504
        // full-width passes were 8 % of the GPU time).
        ggml_tensor * ax = ggml_scale(ctx, ggml_mul_mat(ctx, it->second->a, x), scale);  // [rank, T]
        ggml_tensor * bax = ggml_mul_mat(ctx, it->second->b, ax);                         // [n_out, T]
        y = ggml_add(ctx, y, bax);
    }
    if (bias) y = ggml_add(ctx, y, bias);
    return y;
}

ggml_tensor * rope(ggml_context * ctx, const LmView & lm, ggml_tensor * x, ggml_tensor * pos) {
    int sections[4];
    std::copy(std::begin(lm.sections), std::end(lm.sections), sections);
    if (lm.mrope) {
        return ggml_rope_multi(ctx, x, pos, nullptr, lm.n_rot, sections, lm.rope_mode, lm.n_ctx_orig, lm.freq_base, lm.freq_scale,
                               lm.ext_factor, lm.attn_factor, lm.beta_fast, lm.beta_slow);
    }
    return ggml_rope_ext(ctx, x, pos, nullptr, lm.n_rot, lm.rope_mode, lm.n_ctx_orig, lm.freq_base, lm.freq_scale, lm.ext_factor,
                         lm.attn_factor, lm.beta_fast, lm.beta_slow);
}

}  // namespace

LmGraph build_lm_graph(ggml_context * ctx, const LmView & lm, const std::map<const ggml_tensor *, const LoraPair *> & loras,
                       float lora_scale, int n_tokens, int n_out_rows, const LoraPair * projector) {
    const int64_t T = n_tokens;
    const int hd = lm.head_dim;
    LmGraph g;
    g.in.embd = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, lm.n_embd, T);
    g.in.pos = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, lm.mrope ? 4 * T : T);
    g.in.mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, T, T);
    g.in.out_rows = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_out_rows);
    for (ggml_tensor * t : {g.in.embd, g.in.pos, g.in.mask, g.in.out_rows}) ggml_set_input(t);
    ggml_set_name(g.in.embd, "inp_embd");
    ggml_set_name(g.in.mask, "kq_mask");

    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(hd));
    ggml_tensor * x = g.in.embd;  // [n_embd, T]
    if (projector) {
        g.in.image_rows = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 1, T);
        ggml_set_input(g.in.image_rows);
        ggml_set_name(g.in.image_rows, "image_rows");
        ggml_tensor * ax = ggml_mul_mat(ctx, projector->a, x);    // [rank, T]
        ggml_tensor * bax = ggml_mul_mat(ctx, projector->b, ax);  // [n_embd, T]
        x = ggml_add(ctx, x, ggml_mul(ctx, bax, g.in.image_rows)); // text rows: + 0
    }
    for (int il = 0; il < lm.n_layer; ++il) {
        const LmLayer & L = lm.layers[il];
        ggml_tensor * cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, lm.rms_eps), L.attn_norm);

        ggml_tensor * q = linear(ctx, L.wq, L.bq, cur, loras, lora_scale);
        ggml_tensor * k = linear(ctx, L.wk, L.bk, cur, loras, lora_scale);
        ggml_tensor * v = linear(ctx, L.wv, L.bv, cur, loras, lora_scale);
        q = rope(ctx, lm, ggml_reshape_3d(ctx, q, hd, lm.n_head, T), g.in.pos);     // [hd, n_head, T]
        k = rope(ctx, lm, ggml_reshape_3d(ctx, k, hd, lm.n_head_kv, T), g.in.pos);  // [hd, n_head_kv, T]
        v = ggml_reshape_3d(ctx, v, hd, lm.n_head_kv, T);

        // Attention without flash attention (it has no backward). K/V heads broadcast over the
        // query heads that share them, as llama.cpp's GQA does: query head h reads kv head h / (n_head / n_head_kv).
        ggml_tensor * qp = ggml_permute(ctx, q, 0, 2, 1, 3);                  // [hd, T, n_head]
        ggml_tensor * kp = ggml_permute(ctx, k, 0, 2, 1, 3);                  // [hd, T, n_head_kv]
        ggml_tensor * kq = ggml_mul_mat(ctx, kp, qp);                         // [T_k, T_q, n_head]
        kq = ggml_soft_max_ext(ctx, kq, g.in.mask, kq_scale, 0.0f);
        ggml_tensor * vt = ggml_cont(ctx, ggml_permute(ctx, v, 1, 2, 0, 3));  // [T_k, hd, n_head_kv]
        ggml_tensor * kqv = ggml_mul_mat(ctx, vt, kq);                        // [hd, T_q, n_head]
        ggml_tensor * o = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3)); // [hd, n_head, T]
        o = ggml_reshape_2d(ctx, o, lm.n_embd, T);
        o = linear(ctx, L.wo, L.bo, o, loras, lora_scale);

        if (il == lm.n_layer - 1) {
            // Only the rows that predict response tokens go on (llama.cpp's inp_out_ids).
            o = ggml_get_rows(ctx, o, g.in.out_rows);
            x = ggml_get_rows(ctx, x, g.in.out_rows);
        }
        x = ggml_add(ctx, x, o);

        cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, lm.rms_eps), L.ffn_norm);
        ggml_tensor * gate = linear(ctx, L.ffn_gate, nullptr, cur, loras, lora_scale);
        ggml_tensor * up = linear(ctx, L.ffn_up, nullptr, cur, loras, lora_scale);
        // llama.cpp's own fused op (bitwise the same forward; its split form has a backward).
        ggml_tensor * act = ggml_swiglu_split(ctx, gate, up);
        x = ggml_add(ctx, x, linear(ctx, L.ffn_down, nullptr, act, loras, lora_scale));
    }
    g.hidden = ggml_mul(ctx, ggml_rms_norm(ctx, x, lm.rms_eps), lm.output_norm);  // [n_embd, R]
    ggml_set_name(g.hidden, "hidden");
    ggml_set_output(g.hidden);
    return g;
}

}  // namespace visplay
