#!/usr/bin/env python3
"""Self-checks of the PyTorch GRPO reference (grpo_reference.py); needs only torch and numpy.

  /usr/bin/python3 test/reference/check_reference.py MODEL.gguf

MODEL.gguf: a qwen2vl model, e.g. the tiny one (`makeTinyModel` in src/tiny-model.ts). Checks:
  1. gradients: float64 autograd against (five-point) central differences of the loss on sampled LoRA
     entries (relative error <= 1e-6), on cases with the clip inactive (on-policy) and active
     (including the dual clip), with and without the KL term, for both aggregations;
  2. LoRA wiring: B = 0 gives exactly the base model; LoRA equals the merged weight
     W + (alpha/rank) B A; each adapter changes the logits;
  3. M-RoPE against a transcription of ggml's CPU loop (ggml_mrope_cache_init + rotate_pairs);
  4. GQA: query head h reads kv head h // (n_head / n_head_kv); the mask is causal;
  5. the loss against a per-token scalar transcription of EasyR1's formulas.
Prints one line per check and a summary; exits 1 if any check fails.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_reference import (Lora, LossConfig, MRope, TextModel, aggregation_weights,  # noqa: E402
                            case_loss, causal_gqa_attention, fixed_logprobs, grpo_loss, load_case, text_positions)
from make_case import image_prompt_positions, write_case  # noqa: E402

FD_STEP = 1e-3   # five-point stencil: truncation error O(h^4), roundoff ~1e-14 / h
FD_TOLERANCE = 1e-6


class Report:
    def __init__(self):
        self.failures = 0
        self.count = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.count += 1
        self.failures += not ok
        print(f'[{"PASS" if ok else "FAIL"}] {name}: {detail}', flush=True)


# ---- 1. gradients against finite differences --------------------------------------------------

def fd_check(report: Report, model: TextModel, case_dir: Path, label: str, gen: np.random.Generator,
             n_tensors: int = 3) -> dict:
    """Autograd vs five-point central differences on 2 entries (the largest-gradient one and a random one
    among those with |grad| >= 1e-3 max |grad|; smaller ones are all roundoff) of A and of B in
    n_tensors random adapters. Old and reference log-probs are fixed at the unperturbed point, as
    they are constants of the loss."""
    case, _ = load_case(case_dir, model)
    olds, refs = fixed_logprobs(model, case)
    params = case.lora.parameters()
    for p in params:
        p.requires_grad_(True)
    loss, metrics, _ = case_loss(model, case, olds, refs)
    loss.backward()
    worst, n = 0.0, 0
    names = sorted(case.lora.tensors)
    with torch.no_grad():
        for name in gen.choice(names, size=min(n_tensors, len(names)), replace=False):
            for p in case.lora.tensors[name]:
                g = p.grad.abs()
                candidates = (g >= 1e-3 * g.max()).nonzero()
                picks = [tuple(int(i) for i in (g == g.max()).nonzero()[0]),
                         tuple(int(i) for i in candidates[gen.integers(len(candidates))])]
                for idx in picks:
                    x0 = p[idx].item()
                    f = {}
                    for k in (-2, -1, 1, 2):
                        p[idx] = x0 + k * FD_STEP
                        f[k] = case_loss(model, case, olds, refs)[0].item()
                    p[idx] = x0
                    fd = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * FD_STEP)
                    ad = p.grad[idx].item()
                    worst = max(worst, abs(fd - ad) / max(abs(fd), abs(ad)))
                    n += 1
    report.check(f'grad {label}', worst <= FD_TOLERANCE,
                 f'{n} entries, max rel err {worst:.2e}; clip_fraction {metrics["clip_fraction"]:.2f}, '
                 f'dual_clip_fraction {metrics["dual_clip_fraction"]:.2f}, kl {metrics["kl"]:.3g}')
    return metrics


def check_gradients(report: Report, model: TextModel, work: Path, seed: int) -> None:
    gen = np.random.default_rng(seed)
    small = dict(sequences=4, response_len=8, text_before=6, image_grid=(3, 4), text_after=3)
    cases = [
        ('on-policy, no KL, token-mean', dict(old='null', kl_coef=0.0, aggregation='token-mean'), False),
        ('on-policy, KL, seq-mean-token-mean', dict(old='null', kl_coef=0.1, aggregation='seq-mean-token-mean'), False),
        ('clipped + dual clip, no KL, token-mean', dict(old='perturbed', kl_coef=0.0, aggregation='token-mean'), True),
        ('clipped + dual clip, KL, seq-mean-token-mean',
         dict(old='perturbed', kl_coef=0.1, aggregation='seq-mean-token-mean'), True),
    ]
    for i, (label, opts, clipped) in enumerate(cases):
        case_dir = write_case(model, work / f'fd{i}', seed=seed + i, **small, **opts)
        metrics = fd_check(report, model, case_dir, label, gen)
        active = 0 < metrics['clip_fraction'] < 1 and metrics['dual_clip_fraction'] > 0
        report.check(f'clip regime {label}', active if clipped else metrics['clip_fraction'] == 0,
                     'clip and dual clip active on some tokens, not all' if clipped else 'no token clipped')


# ---- 2. LoRA wiring ---------------------------------------------------------------------------

def check_lora(report: Report, model: TextModel, work: Path, seed: int) -> None:
    case, _ = load_case(write_case(model, work / 'lora', seed=seed, sequences=1), model)
    seq, lora = case.sequences[0], case.lora
    x, pos = seq.inputs(model)

    def logits(adapters: Lora | None) -> torch.Tensor:
        with torch.no_grad():
            return model.logits(model.forward(x[None], pos[None], adapters)[0])

    base = logits(None)
    zero_b = Lora(lora.rank, lora.alpha, {n: (a, torch.zeros_like(b)) for n, (a, b) in lora.tensors.items()})
    diff = (logits(zero_b) - base).abs().max().item()
    report.check('B = 0 is the base model', diff == 0.0, f'max |logit diff| {diff:.1e}')

    saved = {n: model.weights[n].clone() for n in lora.tensors}
    for n, (a, b) in lora.tensors.items():
        model.weights[n] += lora.scale * (b @ a)
    merged = logits(None)
    model.weights.update(saved)
    diff = (logits(lora) - merged).abs().max().item()
    report.check('LoRA = merged W + (alpha/rank) B A', diff <= 1e-10, f'max |logit diff| {diff:.1e}')

    smallest = min((logits(Lora(lora.rank, lora.alpha, {n: ab})) - base).abs().max().item()
                   for n, ab in lora.tensors.items())
    report.check('every adapter changes the logits', smallest > 1e-8,
                 f'{len(lora.tensors)} adapters, smallest max |logit change| {smallest:.1e}')


# ---- 3. M-RoPE against ggml's loop ------------------------------------------------------------

def ggml_rope_multi(x: np.ndarray, pos: np.ndarray, n_dims: int, sections: tuple[int, int, int, int],
                    freq_base: float, ftype) -> np.ndarray:
    """Transcription of ggml_compute_forward_rope_flt for mode GGML_ROPE_TYPE_MROPE (freq_scale 1,
    ext_factor 0, attn_factor 1, no freq factors), in arithmetic type `ftype`.

    x: (T, H, ne0), i.e. ggml ne = [ne0, H, T]; pos: (4*T,) as ggml's position tensor,
    pos[i2 + T*k] for stream k.
    """
    T, H, ne0 = x.shape
    out = x.copy()
    theta_scale = ftype(freq_base) ** ftype(-2.0 / n_dims)
    sect_dims = sum(sections)
    sec_w = sections[1] + sections[0]
    for i2 in range(T):
        # ggml_mrope_cache_init
        theta_t, theta_h, theta_w, theta_e = (ftype(pos[i2 + T * k]) for k in range(4))
        cache = np.zeros(ne0, dtype=ftype)
        for i0 in range(0, ne0, 2):
            sector = (i0 // 2) % sect_dims
            theta = theta_t
            if sections[0] <= sector < sec_w:
                theta = theta_h
            elif sec_w <= sector < sec_w + sections[2]:
                theta = theta_w
            elif sector >= sec_w + sections[2]:
                theta = theta_e
            cache[i0], cache[i0 + 1] = np.cos(theta), np.sin(theta)
            theta_t, theta_h, theta_w, theta_e = (ftype(th * theta_scale)
                                                  for th in (theta_t, theta_h, theta_w, theta_e))
        # rotate_pairs(n_dims, n_dims/2, ...) on every head
        for i1 in range(H):
            for i0 in range(0, n_dims, 2):
                ic = i0 // 2
                c, s = cache[i0], cache[i0 + 1]
                x0, x1 = x[i2, i1, ic], x[i2, i1, ic + n_dims // 2]
                out[i2, i1, ic] = x0 * c - x1 * s
                out[i2, i1, ic + n_dims // 2] = x0 * s + x1 * c
    return out


def check_rope(report: Report, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    configs = [  # (head_dim, sections): the tiny model, Qwen2.5-VL, and sections that wrap with stream e used
        (32, (4, 6, 6, 0)),
        (128, (16, 24, 24, 0)),
        (32, (2, 3, 2, 1)),
    ]
    for head_dim, sections in configs:
        pos, next_pos = image_prompt_positions(5, (3, 4), 4)          # text, a 3x4 image, text
        pos = torch.cat([pos, text_positions(next_pos + 700 + torch.arange(3))], dim=1)  # far positions
        pos[3] = torch.randint(0, 50, (pos.shape[1],), generator=gen)   # exercise stream e
        T, H = pos.shape[1], 3
        x = torch.randn(1, H, T, head_dim, generator=gen, dtype=torch.float64)
        for dtype, ftype, tol in ((torch.float64, np.float64, 1e-12), (torch.float32, np.float32, 2e-3)):
            rope = MRope(head_dim, sections, 1e6, dtype)
            ours = rope.apply(x.to(dtype), *rope.cos_sin(pos[None]))[0].transpose(0, 1).double().numpy()
            ggml = ggml_rope_multi(x[0].transpose(0, 1).numpy().astype(ftype), pos.flatten().numpy(),
                                   head_dim, sections, 1e6, ftype)
            diff = float(np.abs(ours - ggml).max())
            what = 'exact arithmetic' if ftype is np.float64 else "ggml's float32 angle recurrence"
            report.check(f'M-RoPE head_dim {head_dim} sections {list(sections)} ({what})', diff <= tol,
                         f'max |diff| {diff:.1e} (tolerance {tol:.0e})')


# ---- 4. GQA head mapping and causality --------------------------------------------------------

def check_gqa(report: Report, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    T, hd = 7, 8
    for n_head, n_head_kv in ((4, 2), (16, 2), (28, 4), (4, 4)):
        q = torch.randn(1, n_head, T, hd, generator=gen, dtype=torch.float64)
        k = torch.randn(1, n_head_kv, T, hd, generator=gen, dtype=torch.float64)
        v = torch.randn(1, n_head_kv, T, hd, generator=gen, dtype=torch.float64)
        scale = 1 / math.sqrt(hd)
        ours = causal_gqa_attention(q, k, v, scale)

        def loop(kv_of):
            out = torch.empty_like(ours)
            for h in range(n_head):
                j = kv_of(h)
                for t in range(T):
                    w = torch.softmax(q[0, h, t] @ k[0, j, :t + 1].T * scale, dim=-1)
                    out[0, h, t] = w @ v[0, j, :t + 1]
            return out

        r2 = n_head // n_head_kv
        diff = (ours - loop(lambda h: h // r2)).abs().max().item()
        other = (ours - loop(lambda h: h % n_head_kv)).abs().max().item()
        ok = diff <= 1e-12 and (n_head == n_head_kv or other > 1e-3)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, T // 2:] += 1.0
        v2[:, :, T // 2:] += 1.0
        leak = (causal_gqa_attention(q, k2, v2, scale) - ours)[:, :, :T // 2].abs().max().item()
        report.check(f'GQA n_head {n_head} n_head_kv {n_head_kv}', ok and leak == 0.0,
                     f'vs kv = h // {r2}: {diff:.1e}; vs kv = h % n_head_kv: {other:.1e}; '
                     f'future leak {leak:.1e}')


# ---- 5. loss against a scalar transcription ---------------------------------------------------

def scalar_loss(logp, old, ref, adv, seq_of, n_seqs, cfg: LossConfig):
    """EasyR1 compute_policy_loss (dual clip) + low_var_kl, token by token with math.*."""
    per_token, k3s, lengths = [], [], [0] * n_seqs
    for lp, o, r, a, s in zip(logp, old, ref, adv, seq_of):
        lr = lp - o
        ratio = math.exp(min(max(lr, -20.0), 20.0))
        clipped = math.exp(min(max(lr, math.log(1 - cfg.clip_low)), math.log(1 + cfg.clip_high)))
        l = max(-a * ratio, -a * clipped)
        if a < 0:
            l = min(l, -a * cfg.dual_clip)
        x = min(max(r - lp, -20.0), 20.0)
        k3 = min(max(math.exp(x) - x - 1, -10.0), 10.0)
        per_token.append(l + cfg.kl_coef * k3)
        k3s.append(k3)
        lengths[s] += 1
    if cfg.aggregation == 'token-mean':
        return sum(per_token) / len(per_token), sum(k3s) / len(k3s)
    sums, ksums = [0.0] * n_seqs, [0.0] * n_seqs
    for v, k, s in zip(per_token, k3s, seq_of):
        sums[s] += v
        ksums[s] += k
    return (sum(v / n for v, n in zip(sums, lengths)) / n_seqs, sum(k / n for k, n in zip(ksums, lengths)) / n_seqs)


def check_loss_formula(report: Report, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    lengths = [5, 9, 3, 7]
    n = sum(lengths)
    seq_of = [s for s, L in enumerate(lengths) for _ in range(L)]
    logp = -torch.rand(n, generator=gen, dtype=torch.float64) * 8
    old = logp - torch.randn(n, generator=gen, dtype=torch.float64) * 1.5
    old[0], old[1] = logp[0] - 25, logp[1] + 25            # past the [-20, 20] log-ratio clamp
    ref = logp + torch.randn(n, generator=gen, dtype=torch.float64) * 4   # k3 hits its clamp sometimes
    adv_seq = [0.9, -1.3, 0.0, -0.4]
    adv = torch.tensor([adv_seq[s] for s in seq_of], dtype=torch.float64)
    for aggregation in ('token-mean', 'seq-mean-token-mean'):
        for kl_coef in (0.0, 0.05):
            cfg = LossConfig(kl_coef=kl_coef, aggregation=aggregation)
            weights = aggregation_weights(lengths, aggregation, torch.float64)
            loss, metrics = grpo_loss(logp, old, ref, adv, weights, cfg)
            want_loss, want_kl = scalar_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), seq_of,
                                             len(lengths), cfg)
            diff = abs(loss.item() - want_loss)
            kl_diff = abs(metrics['kl'].item() - (want_kl if kl_coef else 0.0))
            report.check(f'loss formula {aggregation}, kl_coef {kl_coef}', diff <= 1e-12 and kl_diff <= 1e-12,
                         f'|loss diff| {diff:.1e}, |kl diff| {kl_diff:.1e}')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model', help='qwen2vl GGUF file (e.g. the tiny model)')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))

    report = Report()
    check_loss_formula(report, args.seed)
    check_rope(report, args.seed)
    check_gqa(report, args.seed)
    model = TextModel(args.model, torch.float64)
    with tempfile.TemporaryDirectory(prefix='grpo-reference-check-') as work:
        check_lora(report, model, Path(work), args.seed)
        check_gradients(report, model, Path(work), args.seed)
    print(f'{report.count - report.failures}/{report.count} checks passed' +
          (f', {report.failures} FAILED' if report.failures else ''))
    return 1 if report.failures else 0


if __name__ == '__main__':
    sys.exit(main())
