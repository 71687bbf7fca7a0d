// The GRPO per-token loss of EasyR1/verl (../shared/VISPLAY.md §4) and its derivative with respect
// to the token's log-probability.
//
// The training graph never differentiates this function symbolically: the loss of a token depends
// on the network only through logp, so the trainer evaluates the loss and d loss / d logp here in
// double precision and seeds the backward pass with d loss / d logits = w (onehot - softmax).
// That is exact, costs one forward and one backward, and keeps max/clamp (which ggml cannot
// differentiate) out of the graph.
#pragma once

#include <algorithm>
#include <cmath>

namespace visplay {

enum class LossAggregation { token_mean, seq_mean_token_mean };

// grpo: the policy-gradient loss below; sft: supervised cross-entropy -logp (advantages ignored),
// for pre-training on labeled data with the same graph.
enum class LossKind { grpo, sft };

struct LossConfig {
    double clip_low = 0.2;    // ρ is clipped to [1 - clip_low, 1 + clip_high]
    double clip_high = 0.3;
    double dual_clip = 3.0;   // for A < 0 the loss is capped at -dual_clip * A (0: off)
    double kl_coef = 0.01;    // β of the k3 term to the reference policy (0: no reference pass)
    LossAggregation aggregation = LossAggregation::seq_mean_token_mean;
    LossKind kind = LossKind::grpo;
};

struct TokenLoss {
    double total = 0;     // pg + kl_coef * kl
    double pg = 0;
    double kl = 0;        // k3 estimate (0 without a reference)
    double dtotal_dlogp = 0;
    bool clipped = false;       // the clipped branch won (verl's pg_clipfrac)
    bool dual_clipped = false;  // the dual-clip cap won
};

// logp: current policy; old: behaviour policy; ref: reference policy (ignored when kl_coef == 0).
// Clip fractions count tokens; the caller aggregates them over all tokens of the batch.
inline TokenLoss grpo_token_loss(double logp, double old, double ref, double advantage, const LossConfig & c) {
    TokenLoss r;
    if (c.kind == LossKind::sft) {
        r.pg = -logp;  // reported as the loss's main term
        r.total = -logp;
        r.dtotal_dlogp = -1.0;
        return r;
    }
    // EasyR1 clamps the log-ratio to ±20 before exp (no gradient beyond).
    const double log_ratio_raw = logp - old;
    const double log_ratio = std::clamp(log_ratio_raw, -20.0, 20.0);
    const double ratio = std::exp(log_ratio);
    const bool ratio_clamped = log_ratio != log_ratio_raw;
    const double l1 = -advantage * ratio;
    const double clamped = std::clamp(ratio, 1.0 - c.clip_low, 1.0 + c.clip_high);
    const double l2 = -advantage * clamped;
    r.clipped = l2 > l1;
    double pg = r.clipped ? l2 : l1;
    // d l1 / d logp = -A ρ. The clipped branch only wins where ρ is outside the clip range, where
    // its derivative is 0; inside the range both branches are equal and share -A ρ.
    double dpg = (r.clipped || ratio_clamped) ? 0.0 : -advantage * ratio;
    if (c.dual_clip > 0 && advantage < 0) {
        const double cap = -advantage * c.dual_clip;
        if (cap < pg) {
            pg = cap;
            dpg = 0;
            r.dual_clipped = true;
        }
    }
    r.pg = pg;
    r.total = pg;
    r.dtotal_dlogp = dpg;
    if (c.kl_coef != 0) {
        // EasyR1's "low_var_kl": x = clamp(ref - logp, ±20), k3 = clamp(e^x - x - 1, ±10).
        const double x_raw = ref - logp;
        const double x = std::clamp(x_raw, -20.0, 20.0);
        const double k3_raw = std::exp(x) - x - 1.0;
        const double k3 = std::clamp(k3_raw, -10.0, 10.0);
        const double dx_dlogp = (x == x_raw) ? -1.0 : 0.0;
        const double dk3 = (k3 == k3_raw) ? (std::exp(x) - 1.0) * dx_dlogp : 0.0;
        r.kl = k3;
        r.total += c.kl_coef * k3;
        r.dtotal_dlogp += c.kl_coef * dk3;
    }
    return r;
}

}  // namespace visplay
