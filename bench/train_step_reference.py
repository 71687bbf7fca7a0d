#!/usr/bin/env python3
"""PyTorch peer of the native GRPO train-step benchmark (run with /usr/bin/python3).

One step = for G responses of L tokens after one image prompt: the reference model's forward
(LoRA off, no grad) for the KL term, the policy's forward with LoRA, the GRPO loss (EasyR1's
dual-clip PPO objective + kl_coef * low_var_kl, seq-mean-token-mean), backward into the LoRA
weights, global grad-norm clipping at 1.0 and one AdamW step. Float32 on the CPU, the model from
test/reference/grpo_reference.py (a transcription of llama.cpp's qwen2vl graph).

Batching: the G responses form one (G, P + L - 1) batch, the prompt repeated in every row, as
HF/verl actors do; all responses have L tokens, so nothing is padded. The old log-probs are the
policy's own, detached (on-policy: one update per batch), so no extra forward is timed for them.

Prints JSON: step time median/min/max over --repeats steps after one warm-up step, trained
tokens/s (G * L / median step time), peak RSS of the process (model loading included).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test' / 'reference'))

# Qwen2.5-VL chat template text before the image ("<|im_start|>system\nYou are a helpful
# assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"); the rest of the text follows it.
TEXT_BEFORE_IMAGE = 15
TEXT_AFTER_IMAGE = 15


def cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_library() -> str:
    """The BLAS shared library this process mapped (Debian's torch uses the system libblas.so.3)."""
    try:
        maps = Path('/proc/self/maps').read_text().splitlines()
    except OSError:
        return 'unknown'
    libs = sorted({os.path.realpath(line.split()[-1]) for line in maps if 'blas' in line.rsplit('/', 1)[-1]})
    return ', '.join(libs) or 'none mapped'


def image_grid(n: int) -> tuple[int, int]:
    """A near-square ny x nx grid of at most n image tokens."""
    ny = max(1, math.isqrt(n))
    return ny, max(1, n // ny)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('model', help='qwen2vl GGUF file')
    ap.add_argument('--prompt-len', type=int, default=120, help='prompt tokens: ~30 text plus the image block')
    ap.add_argument('--group', type=int, default=8, help='responses per prompt (G)')
    ap.add_argument('--response-len', type=int, default=64)
    ap.add_argument('--rank', type=int, default=8)
    ap.add_argument('--alpha', type=float, default=16.0)
    ap.add_argument('--targets', default='all', help='comma list of LoRA targets (attn_q, ..., ffn_down), or all')
    ap.add_argument('--kl-coef', type=float, default=0.01)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    # The BLAS sizes its own thread pool when it loads, with torch: give it --threads too, then import.
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[var] = str(args.threads)
    import torch
    from grpo_reference import (LORA_TARGETS, Lora, LossConfig, TextModel, aggregation_weights, grpo_loss,
                                text_positions)
    from make_case import FIRST_SPECIAL_TOKEN, random_prompt

    targets = list(LORA_TARGETS) if args.targets == 'all' else [t for t in args.targets.split(',') if t]
    if unknown := [t for t in targets if t not in LORA_TARGETS]:
        ap.error(f'unknown targets {unknown}')
    if args.prompt_len < TEXT_BEFORE_IMAGE + 1:
        ap.error(f'--prompt-len must be at least {TEXT_BEFORE_IMAGE + 1}')

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = TextModel(args.model, torch.float32)
    G, L = args.group, args.response_len

    # Prompt (P, n_embd): text, an image block, text, with mtmd's M-RoPE positions.
    grid = image_grid(max(1, args.prompt_len - TEXT_BEFORE_IMAGE - TEXT_AFTER_IMAGE))
    text_after = args.prompt_len - TEXT_BEFORE_IMAGE - grid[0] * grid[1]
    prompt, prompt_pos, next_pos = random_prompt(model, gen, TEXT_BEFORE_IMAGE, grid, text_after)
    P = prompt.shape[0]
    responses = torch.randint(0, min(model.hp.n_vocab, FIRST_SPECIAL_TOKEN), (G, L), generator=gen)
    pos = torch.cat([prompt_pos, text_positions(next_pos + torch.arange(L - 1))], dim=1)
    pos = pos[None].expand(G, 4, P + L - 1)                                   # (G, 4, T = P + L - 1)
    rewards = torch.rand(G, generator=gen)
    adv = ((rewards - rewards.mean()) / (rewards.std() + 1e-6)).repeat_interleave(L)   # GRPO advantages, per token
    weights = aggregation_weights([L] * G, 'seq-mean-token-mean', torch.float32)
    cfg = LossConfig(kl_coef=args.kl_coef)

    # LoRA with PEFT's initialization: A ~ kaiming-uniform(a = sqrt(5)), B = 0.
    adapters = {}
    for il in range(model.hp.n_layer):
        for target in targets:
            name = f'blk.{il}.{target}.weight'
            shape_a, shape_b = model.lora_shape(name, args.rank)
            a = torch.empty(shape_a)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            adapters[name] = (a.requires_grad_(), torch.zeros(shape_b, requires_grad=True))
    lora = Lora(args.rank, args.alpha, adapters)
    params = lora.parameters()
    opt = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def step() -> float:
        x = torch.cat([prompt.expand(G, P, -1), model.embed_tokens(responses[:, :-1])], dim=1)   # (G, T, n_embd)
        with torch.no_grad():
            ref = model.token_logprobs(model.forward(x, pos, None)[:, P - 1:], responses)       # (G, L)
        logp = model.token_logprobs(model.forward(x, pos, lora)[:, P - 1:], responses)          # (G, L)
        loss, _ = grpo_loss(logp.flatten(), logp.detach().flatten(), ref.flatten(), adv, weights, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    blas = blas_library()
    if '/blas/libblas.so' in blas:  # Debian's netlib reference BLAS: unblocked, one thread
        print(f'warning: torch runs its matrix products on the reference BLAS {blas}, many times slower than '
              'a usual PyTorch install (Debian: apt-get install libopenblas0-pthread)', file=sys.stderr)
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        'model': str(Path(args.model).resolve()),
        'cpu': cpu_name(),
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'blas': blas,
        'prompt_tokens': P,
        'image_grid': list(grid),
        'group': G,
        'response_len': L,
        'lora': {'rank': args.rank, 'alpha': args.alpha, 'targets': targets,
                 'parameters': sum(p.numel() for p in params)},
        'kl_coef': args.kl_coef,
        'step_s': {'median': median, 'min': min(times), 'max': max(times), 'repeats': len(times)},
        'trained_tokens_per_s': G * L / median,
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'last_loss': loss,
    }, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
