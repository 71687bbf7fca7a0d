#!/usr/bin/env python3
"""Writes a synthetic GRPO test case for a qwen2vl GGUF model (run with /usr/bin/python3).

Case format (CASE_DIR/case.json; array paths are relative to CASE_DIR):

  {"model": "/abs/model.gguf",                    (a relative path is relative to CASE_DIR)
   "lora": {"rank": R, "alpha": a,
            "tensors": {"blk.0.attn_q.weight": {"a": "lora/blk.0.attn_q.weight.lora_a.npy",
                                                "b": "lora/blk.0.attn_q.weight.lora_b.npy"}, ...}},
   "loss": {"clip_low": 0.2, "clip_high": 0.3, "dual_clip": 3.0, "kl_coef": 0.01,
            "aggregation": "seq-mean-token-mean" | "token-mean"},   (each key optional: these defaults)
   "sequences": [{"prompt_embeddings": "seq0.prompt.npy",   float32 (P, n_embd)
                  "prompt_positions": "seq0.pos.npy",       int32 (4, P): streams t, y, x, e
                  "response_start_pos": p,                  response token j sits at text position p + j
                  "response_tokens": [...],                 L >= 1 ids; tokens 0..L-2 are fed after the prompt
                  "advantage": A,
                  "old_logprobs": [...] | null}, ...]}      null: the current policy's, detached

LoRA A is float32 (rank, n_in), B float32 (n_out, rank); "lora" may be null (no adapters).

Each synthetic prompt is laid out as mtmd lays out a Qwen2.5-VL prompt: `text_before` text tokens
(rows of token_embd) at positions 0.., then an ny x nx image block (random rows) whose tokens all
have t = p0 and (y, x) = (p0 + row, p0 + col), taking max(ny, nx) positions, then `text_after`
text tokens. Advantages include a positive, a negative and a zero one; with --old perturbed the
old log-probs are the current policy's shifted so that the ratios fall in four bins (RATIO_BINS):
below, inside and above the clip range and above the dual-clip cap, each bin holding L/4 of a
response's L tokens (rounded; every bin is used when L >= 4).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_reference import (AGGREGATIONS, LORA_TARGETS, Lora, Sequence, TextModel,  # noqa: E402
                            batch_logprobs, text_positions)

# Ids above this are Qwen2's special tokens; responses draw from the ordinary ones.
FIRST_SPECIAL_TOKEN = 151643
# Ratio ranges of perturbed old log-probs, for the default clip (0.2, 0.3) and dual clip 3: below
# the clip range, inside it, above it, and above the dual-clip cap.
RATIO_BINS = ((0.5, 0.75), (0.85, 1.25), (1.35, 2.9), (3.1, 4.0))


def image_prompt_positions(text_before: int, grid: tuple[int, int], text_after: int) -> tuple[torch.Tensor, int]:
    """M-RoPE streams (4, P) of text / image (ny x nx, raster order) / text, and the next free position."""
    ny, nx = grid
    before = text_positions(torch.arange(text_before, dtype=torch.int64))
    p0 = text_before
    rows = torch.arange(ny * nx, dtype=torch.int64) // nx
    cols = torch.arange(ny * nx, dtype=torch.int64) % nx
    image = torch.stack([torch.full_like(rows, p0), p0 + rows, p0 + cols, torch.zeros_like(rows)])
    p1 = p0 + max(ny, nx)
    after = text_positions(p1 + torch.arange(text_after, dtype=torch.int64))
    return torch.cat([before, image, after], dim=1), p1 + text_after


def random_prompt(model: TextModel, gen: torch.Generator, text_before: int, grid: tuple[int, int],
                  text_after: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prompt embeddings (P, n_embd): token_embd rows for text, Gaussian rows of the same scale for
    the image; with their positions and the position after the prompt."""
    emb = model.weights['token_embd.weight']
    n_text = text_before + text_after
    text = model.embed_tokens(torch.randint(0, min(model.hp.n_vocab, FIRST_SPECIAL_TOKEN), (n_text,), generator=gen))
    image = torch.randn(grid[0] * grid[1], model.hp.n_embd, generator=gen, dtype=torch.float64).to(model.dtype)
    image = image * emb.std()
    x = torch.cat([text[:text_before], image, text[text_before:]])
    pos, next_pos = image_prompt_positions(text_before, grid, text_after)
    return x, pos, next_pos


def random_lora(model: TextModel, gen: torch.Generator, rank: int, alpha: float, targets: list[str],
                layers: list[int], b_scale: float) -> Lora:
    """A ~ N(0, 1/n_in), B ~ N(0, b_scale^2): both non-zero, so every gradient is non-trivial."""
    tensors = {}
    for il in layers:
        for target in targets:
            name = f'blk.{il}.{target}.weight'
            shape_a, shape_b = model.lora_shape(name, rank)
            a = torch.randn(*shape_a, generator=gen, dtype=torch.float64) / math.sqrt(shape_a[1])
            b = torch.randn(*shape_b, generator=gen, dtype=torch.float64) * b_scale
            tensors[name] = (a.to(model.dtype), b.to(model.dtype))
    return Lora(rank, alpha, tensors)


def write_case(model: TextModel, out_dir: str | Path, *, seed: int = 0, sequences: int = 4, response_len: int = 12,
               text_before: int = 10, image_grid: tuple[int, int] = (4, 6), text_after: int = 6, rank: int = 4,
               alpha: float = 8.0, targets: list[str] = list(LORA_TARGETS), layers: list[int] | None = None,
               b_scale: float = 0.05, old: str = 'perturbed', clip_low: float = 0.2, clip_high: float = 0.3,
               dual_clip: float = 3.0, kl_coef: float = 0.01, aggregation: str = 'seq-mean-token-mean') -> Path:
    """Writes the case to out_dir and returns its path. Sequence i has text_after + i trailing text
    tokens and a response of between ceil(response_len/2) and response_len tokens."""
    if old not in ('perturbed', 'null'):
        raise ValueError(f'old must be perturbed or null, not {old!r}')
    out = Path(out_dir)
    (out / 'lora').mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    layers = list(range(model.hp.n_layer)) if layers is None else layers
    lora = random_lora(model, gen, rank, alpha, targets, layers, b_scale)

    lora_files = {}
    for name, (a, b) in lora.tensors.items():
        lora_files[name] = {'a': f'lora/{name}.lora_a.npy', 'b': f'lora/{name}.lora_b.npy'}
        np.save(out / lora_files[name]['a'], a.to(torch.float32).numpy())
        np.save(out / lora_files[name]['b'], b.to(torch.float32).numpy())

    magnitudes = torch.rand(sequences, generator=gen, dtype=torch.float64) * 1.5 + 0.2
    signs = torch.tensor([1.0, -1.0, 0.0] + [(-1.0) ** i for i in range(max(0, sequences - 3))])[:sequences]
    seqs = []
    for i in range(sequences):
        x, pos, next_pos = random_prompt(model, gen, text_before, image_grid, text_after + i)
        L = int(torch.randint((response_len + 1) // 2, response_len + 1, (1,), generator=gen))
        tokens = torch.randint(0, min(model.hp.n_vocab, FIRST_SPECIAL_TOKEN), (L,), generator=gen)
        seq = Sequence(x, pos, next_pos, tokens, float(signs[i] * magnitudes[i]), None)
        if old == 'perturbed':
            with torch.no_grad():
                logp = batch_logprobs(model, [seq], lora)[0]
            # old = logp - log(ratio): token j's ratio is log-uniform in bin perm[j] % 4 of RATIO_BINS.
            bins = torch.tensor(RATIO_BINS, dtype=torch.float64).log()[torch.randperm(L, generator=gen) % 4]
            u = torch.rand(L, generator=gen, dtype=torch.float64)
            seq.old_logprobs = logp.to(torch.float64) - (bins[:, 0] + u * (bins[:, 1] - bins[:, 0]))
        seqs.append(seq)

    spec_seqs = []
    for i, s in enumerate(seqs):
        np.save(out / f'seq{i}.prompt.npy', s.prompt.to(torch.float32).numpy())
        np.save(out / f'seq{i}.pos.npy', s.prompt_pos.to(torch.int32).numpy())
        spec_seqs.append({
            'prompt_embeddings': f'seq{i}.prompt.npy',
            'prompt_positions': f'seq{i}.pos.npy',
            'response_start_pos': s.response_start_pos,
            'response_tokens': s.tokens.tolist(),
            'advantage': s.advantage,
            'old_logprobs': None if s.old_logprobs is None else s.old_logprobs.tolist(),
        })
    spec = {
        'model': str(Path(model.path).resolve()),
        'lora': {'rank': rank, 'alpha': alpha, 'tensors': lora_files},
        'loss': {'clip_low': clip_low, 'clip_high': clip_high, 'dual_clip': dual_clip, 'kl_coef': kl_coef,
                 'aggregation': aggregation},
        'sequences': spec_seqs,
    }
    (out / 'case.json').write_text(json.dumps(spec, indent=1) + '\n')
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model', help='qwen2vl GGUF file')
    ap.add_argument('out_dir')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--sequences', type=int, default=4)
    ap.add_argument('--response-len', type=int, default=12, help='longest response (each is L/2..L tokens)')
    ap.add_argument('--text-before', type=int, default=10)
    ap.add_argument('--image-grid', default='4x6', help='NYxNX image tokens')
    ap.add_argument('--text-after', type=int, default=6)
    ap.add_argument('--rank', type=int, default=4)
    ap.add_argument('--alpha', type=float, default=8.0)
    ap.add_argument('--targets', default=','.join(LORA_TARGETS), help='comma list of ' + ','.join(LORA_TARGETS))
    ap.add_argument('--layers', help='comma list of layer indices (default: all)')
    ap.add_argument('--b-scale', type=float, default=0.05, help='std of the LoRA B entries')
    ap.add_argument('--old', choices=('perturbed', 'null'), default='perturbed')
    ap.add_argument('--clip-low', type=float, default=0.2)
    ap.add_argument('--clip-high', type=float, default=0.3)
    ap.add_argument('--dual-clip', type=float, default=3.0)
    ap.add_argument('--kl-coef', type=float, default=0.01)
    ap.add_argument('--aggregation', choices=AGGREGATIONS, default='seq-mean-token-mean')
    args = ap.parse_args(argv)

    ny, nx = (int(n) for n in args.image_grid.lower().split('x'))
    targets = [t for t in args.targets.split(',') if t]
    if unknown := [t for t in targets if t not in LORA_TARGETS]:
        ap.error(f'unknown targets {unknown}')
    model = TextModel(args.model, torch.float32)
    out = write_case(model, args.out_dir, seed=args.seed, sequences=args.sequences, response_len=args.response_len,
                     text_before=args.text_before, image_grid=(ny, nx), text_after=args.text_after, rank=args.rank,
                     alpha=args.alpha, targets=targets,
                     layers=None if args.layers is None else [int(i) for i in args.layers.split(',')],
                     b_scale=args.b_scale, old=args.old, clip_low=args.clip_low, clip_high=args.clip_high,
                     dual_clip=args.dual_clip, kl_coef=args.kl_coef, aggregation=args.aggregation)
    print(out / 'case.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
