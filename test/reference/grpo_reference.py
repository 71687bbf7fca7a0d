#!/usr/bin/env python3
"""Independent PyTorch reference for the GRPO loss and its LoRA gradients on a qwen2vl GGUF model.

A test and benchmark tool only; the product never runs Python. Needs torch and numpy (Debian's
python3-torch: run it as `/usr/bin/python3 test/reference/grpo_reference.py ...`) and reads GGUF
files with the vendored gguf-py.

The language model is a float transcription of llama.cpp's `qwen2vl` graph
(native/vendor/llama.cpp/src/models/qwen2vl.cpp): RMS norm, Q/K/V with biases, M-RoPE (ggml rope
mode 8), grouped-query causal attention, SwiGLU, final norm, LM head. LoRA adds
(alpha / rank) * B (A x) to the chosen linear layers, with PEFT's layouts A (rank, n_in) and
B (n_out, rank).

Outputs (every .npy float32, whatever --dtype):
  default   OUT/result.json: loss, pg_loss, kl (mean k3, aggregated like the loss), clip_fraction and
            dual_clip_fraction (token means over the batch, as EasyR1 reports them), tokens, and per
            sequence logprobs, old_logprobs (as used), ref_logprobs (null when kl_coef is 0);
            OUT/grad/<name>.lora_a.npy and .lora_b.npy: d loss / d A and d loss / d B.
  --adamw   the above (step 1's loss and gradients), result.json "adamw": {config, steps: [{loss,
            grad_norm (before clipping)}]}, and OUT/after/<name>.lora_{a,b}.npy after the last step.
  --logits  OUT/logits.npy (P + L - 1, n_vocab) for one sequence, LoRA on (off with --no-lora).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / 'native' / 'vendor' / 'llama.cpp' / 'gguf-py'))
from gguf import GGUFReader, GGUFValueType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

# The per-layer linear layers LoRA may target: GGUF names blk.<i>.<target>.weight.
LORA_TARGETS = ('attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down')
AGGREGATIONS = ('token-mean', 'seq-mean-token-mean')
DTYPES = {'float32': torch.float32, 'float64': torch.float64}


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------

class FastGGUFReader(GGUFReader):
    """GGUFReader that reads a metadata array in one step instead of one numpy view per element
    (seconds for Qwen2's 151k-token vocabulary). String arrays (the tokenizer's) are skipped and
    read back as []; nothing here needs them."""

    def _get_field_parts(self, orig_offs, raw_type):
        if raw_type != GGUFValueType.ARRAY or self.byte_order == 'S':
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        itype, n, offs = GGUFValueType(int(raw_itype[0])), int(alen[0]), orig_offs + 12
        if itype == GGUFValueType.STRING:
            view = memoryview(self.data)
            for _ in range(n):  # each string: uint64 length, then its bytes
                offs += 8 + struct.unpack_from('<Q', view, offs)[0]
            return offs - orig_offs, [raw_itype, alen], [], [GGUFValueType.ARRAY, itype]
        nptype = self.gguf_scalar_to_np.get(itype)
        if nptype is None:  # nested arrays: the stock path
            return super()._get_field_parts(orig_offs, raw_type)
        values = self._get(offs, nptype, n)
        return 12 + int(values.nbytes), [raw_itype, alen, values], [2], [GGUFValueType.ARRAY, itype]


@dataclass(frozen=True)
class HParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rms_eps: float
    freq_base: float
    sections: tuple[int, int, int, int]


@dataclass
class Lora:
    """LoRA adapters: name (e.g. 'blk.0.attn_q.weight') -> (A (rank, n_in), B (n_out, rank))."""
    rank: int
    alpha: float
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def parameters(self) -> list[torch.Tensor]:
        return [t for pair in self.tensors.values() for t in pair]


def rope_streams(n_rot: int, sections: tuple[int, int, int, int]) -> list[int]:
    """Position stream (0 = t, 1 = y, 2 = x, 3 = e) of each rotary pair i < n_rot/2.

    Transcribes ggml_mrope_cache_init's non-interleaved branch (ggml-cpu/ops.cpp): the pair's
    sector is i % sum(sections); sectors [0, s0) take stream t, [s0, s0+s1) y, [s0+s1, s0+s1+s2) x,
    and the rest e. For Qwen2.5-VL sum(sections) == n_rot/2, so the sector is i itself.
    """
    s0, s1, s2, _ = sections
    total = sum(sections)
    streams = []
    for i in range(n_rot // 2):
        sector = i % total
        streams.append(0 if sector < s0 else 1 if sector < s0 + s1 else 2 if sector < s0 + s1 + s2 else 3)
    return streams


class MRope:
    """M-RoPE (ggml rope mode GGML_ROPE_TYPE_MROPE = 8) over heads of size >= n_rot."""

    def __init__(self, n_rot: int, sections: tuple[int, int, int, int], freq_base: float, dtype: torch.dtype):
        self.n_rot = n_rot
        self.dtype = dtype
        self.streams = torch.tensor(rope_streams(n_rot, sections))
        # ggml's theta_scale = powf(freq_base, -2.0f / n_dims), a float32.
        self.theta_scale = np.float32(np.power(np.float32(freq_base), np.float32(-2.0) / np.float32(n_rot), dtype=np.float32))

    def cos_sin(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (B, 4, T) int -> cos, sin (B, 1, T, n_rot/2), broadcastable over heads.

        Pair i's angle is pos[stream(i)] * freq_base^(-2i/n_rot), formed as ggml's CPU rope forms it
        (ggml_mrope_cache_init): every stream's theta starts at float32(pos) and is multiplied by
        the float32 theta_scale once per pair, in float32. With positions in the hundreds and
        freq_base 1e6 this rounding moves angles by ~1e-5 rad, log-probs by ~1e-4: the reference
        reproduces it rather than compare against an idealised angle. cos/sin in float64.
        """
        p = pos.to(torch.float32)                                 # (B, 4, T)
        scale = torch.tensor(self.theta_scale, dtype=torch.float32)
        half = self.n_rot // 2
        thetas = []
        theta = p.clone()
        for _ in range(half):
            thetas.append(theta)
            theta = theta * scale                                 # float32, as ggml
        all_streams = torch.stack(thetas, dim=-1)                 # (B, 4, T, n_rot/2)
        idx = self.streams.view(1, -1, 1, 1).expand(p.shape[0], half, p.shape[2], 1)
        # pair i reads stream(i): gather (B, n_rot/2, T) then -> (B, T, n_rot/2)
        picked = torch.stack([all_streams[:, int(self.streams[i]), :, i] for i in range(half)], dim=-1)
        del idx
        theta64 = picked.to(torch.float64)
        return theta64.cos().to(self.dtype)[:, None], theta64.sin().to(self.dtype)[:, None]

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, H, T, head_dim): NEOX-style rotation of dims (i, i + n_rot/2) by pair i's angle
        (ggml's rotate_pairs with n_offset = n_dims/2); dims from n_rot on pass through."""
        half = self.n_rot // 2
        x0, x1, rest = x[..., :half], x[..., half:self.n_rot], x[..., self.n_rot:]
        return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos, rest], dim=-1)


def causal_gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal grouped-query attention, the non-flash path of llama.cpp's build_attn_mha.

    q (B, n_head, T, hd), k and v (B, n_head_kv, T, hd) -> (B, n_head, T, hd). Query head h reads
    kv head h // (n_head / n_head_kv), as ggml_mul_mat broadcasts k over q's heads
    (i02 = i12 / r2). The mask is causal in sequence order, which equals llama.cpp's position mask
    for sequences laid out as mtmd lays them out (positions never decrease; inside an image,
    raster order).
    """
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)
    v = v.repeat_interleave(n_rep, dim=1)
    T = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) * scale                     # (B, n_head, T, T)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))
    return torch.softmax(scores, dim=-1) @ v


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """ggml_rms_norm then ggml_mul: x / sqrt(mean(x^2) + eps) * weight, over the last axis."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class TextModel:
    """The qwen2vl language model of a GGUF file, every weight dequantized to `dtype`."""

    def __init__(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32):
        self.path = str(path)
        self.dtype = dtype
        reader = FastGGUFReader(self.path)
        fields = reader.fields

        def field(key, default=None):
            return fields[key].contents() if key in fields else default

        arch = field('general.architecture')
        if arch != 'qwen2vl':
            raise ValueError(f'{self.path}: architecture {arch!r}, expected qwen2vl')
        scaling = field(f'{arch}.rope.scaling.factor', 1.0)
        if scaling not in (0.0, 1.0):
            raise ValueError(f'{self.path}: rope scaling factor {scaling} is not supported')
        self.weights: dict[str, torch.Tensor] = {}
        for t in reader.tensors:
            # ggml ne = [ne0, ne1] is stored row-major as numpy (ne1, ne0): for a linear layer that
            # is (n_out, n_in), torch.nn.Linear's layout (y = x @ W.T).
            array = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)
            self.weights[t.name] = torch.from_numpy(array.reshape(tuple(reversed([int(n) for n in t.shape])))).to(dtype)

        n_embd = int(field(f'{arch}.embedding_length'))
        n_head = int(field(f'{arch}.attention.head_count'))
        head_dim = n_embd // n_head
        n_rot = int(field(f'{arch}.rope.dimension_count', head_dim))
        if n_rot != head_dim:  # asserted by llama.cpp's qwen2vl graph too
            raise ValueError(f'{self.path}: rope.dimension_count {n_rot} != head_dim {head_dim}')
        sections = [int(s) for s in field(f'{arch}.rope.dimension_sections')]
        self.hp = HParams(
            arch=arch,
            n_vocab=self.weights['token_embd.weight'].shape[0],
            n_embd=n_embd,
            n_layer=int(field(f'{arch}.block_count')),
            n_head=n_head,
            n_head_kv=int(field(f'{arch}.attention.head_count_kv', n_head)),
            head_dim=head_dim,
            n_rot=n_rot,
            rms_eps=float(field(f'{arch}.attention.layer_norm_rms_epsilon')),
            freq_base=float(field(f'{arch}.rope.freq_base', 10000.0)),
            sections=tuple((sections + [0, 0, 0, 0])[:4]),
        )
        # Tied embeddings: llama.cpp uses token_embd.weight as the LM head when output.weight is absent.
        self.output = self.weights.get('output.weight', self.weights['token_embd.weight'])
        self.rope = MRope(self.hp.n_rot, self.hp.sections, self.hp.freq_base, dtype)

    def lora_shape(self, name: str, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Shapes (A, B) of a LoRA on the linear weight `name`; raises for a non-target name."""
        parts = name.split('.')
        if len(parts) != 4 or parts[0] != 'blk' or parts[2] not in LORA_TARGETS or parts[3] != 'weight' \
                or name not in self.weights:
            raise ValueError(f'{name!r} is not a LoRA target of this model (blk.N.{{{",".join(LORA_TARGETS)}}}.weight)')
        n_out, n_in = self.weights[name].shape
        return (rank, n_in), (n_out, rank)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.weights['token_embd.weight'][tokens]

    def linear(self, x: torch.Tensor, name: str, lora: Lora | None) -> torch.Tensor:
        """x (..., n_in) -> x W^T + scale * (x A^T) B^T (LoRA term only when `lora` has `name`)."""
        y = x @ self.weights[name].T
        if lora is not None and name in lora.tensors:
            a, b = lora.tensors[name]
            y = y + lora.scale * ((x @ a.T) @ b.T)
        return y

    def forward(self, x: torch.Tensor, pos: torch.Tensor, lora: Lora | None = None) -> torch.Tensor:
        """x (B, T, n_embd) input embeddings, pos (B, 4, T) M-RoPE streams -> final-normed hidden (B, T, n_embd)."""
        hp, w = self.hp, self.weights
        B, T, _ = x.shape
        cos, sin = self.rope.cos_sin(pos)
        scale = 1.0 / math.sqrt(hp.head_dim)
        for il in range(hp.n_layer):
            blk = f'blk.{il}.'
            h = rms_norm(x, w[blk + 'attn_norm.weight'], hp.rms_eps)
            q = self.linear(h, blk + 'attn_q.weight', lora) + w[blk + 'attn_q.bias']
            k = self.linear(h, blk + 'attn_k.weight', lora) + w[blk + 'attn_k.bias']
            v = self.linear(h, blk + 'attn_v.weight', lora) + w[blk + 'attn_v.bias']
            q = self.rope.apply(q.view(B, T, hp.n_head, hp.head_dim).transpose(1, 2), cos, sin)
            k = self.rope.apply(k.view(B, T, hp.n_head_kv, hp.head_dim).transpose(1, 2), cos, sin)
            v = v.view(B, T, hp.n_head_kv, hp.head_dim).transpose(1, 2)
            o = causal_gqa_attention(q, k, v, scale).transpose(1, 2).reshape(B, T, hp.n_head * hp.head_dim)
            x = x + self.linear(o, blk + 'attn_output.weight', lora)
            h = rms_norm(x, w[blk + 'ffn_norm.weight'], hp.rms_eps)
            gate = F.silu(self.linear(h, blk + 'ffn_gate.weight', lora))
            x = x + self.linear(gate * self.linear(h, blk + 'ffn_up.weight', lora), blk + 'ffn_down.weight', lora)
        return rms_norm(x, w['output_norm.weight'], hp.rms_eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.output.T

    def token_logprobs(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """hidden (..., L, n_embd) of the positions predicting tokens (..., L) -> log p(token) (..., L)."""
        return torch.log_softmax(self.logits(hidden), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def text_positions(positions: torch.Tensor) -> torch.Tensor:
    """Text-token positions (N,) -> M-RoPE streams (4, N): (p, p, p, 0), as llm_graph_input_pos::set_input."""
    return torch.stack([positions, positions, positions, torch.zeros_like(positions)])


# ----------------------------------------------------------------------------------------------
# GRPO loss (EasyR1's compute_policy_loss with dual clip, plus its low_var_kl term)
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LossConfig:
    clip_low: float = 0.2
    clip_high: float = 0.3
    dual_clip: float = 3.0
    kl_coef: float = 0.01
    aggregation: str = 'seq-mean-token-mean'

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f'aggregation {self.aggregation!r} is not one of {AGGREGATIONS}')


def aggregation_weights(lengths: list[int], aggregation: str, dtype: torch.dtype) -> torch.Tensor:
    """Per-token weights w (sum(lengths),) such that the aggregate of per-token v is sum(v * w).

    token-mean: 1 / total tokens. seq-mean-token-mean: 1 / (n_seqs * own sequence's length).
    """
    if aggregation == 'token-mean':
        return torch.full((sum(lengths),), 1.0 / sum(lengths), dtype=dtype)
    return torch.cat([torch.full((n,), 1.0 / (len(lengths) * n), dtype=dtype) for n in lengths])


def grpo_loss(logp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, adv: torch.Tensor,
              weights: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All arguments are per response token, flattened over the batch: shape (N,).

    logp: current policy (with grad); old: old policy (no grad); ref: reference model (no grad,
    unused when kl_coef == 0); adv: the token's sequence advantage; weights: aggregation_weights.
    Returns the total loss and detached metrics (pg_loss, kl; clip fractions as token means).
    """
    log_ratio = logp - old
    # EasyR1 clamps the log-ratio to [-20, 20] before exp, and clips the ratio in log space.
    ratio = torch.exp(log_ratio.clamp(-20.0, 20.0))
    clipped_ratio = torch.exp(log_ratio.clamp(math.log(1.0 - cfg.clip_low), math.log(1.0 + cfg.clip_high)))
    l1 = -adv * ratio
    l2 = -adv * clipped_ratio
    l_max = torch.maximum(l1, l2)
    cap = -adv * cfg.dual_clip
    pg = torch.where(adv < 0, torch.minimum(l_max, cap), l_max)
    total = pg
    if cfg.kl_coef != 0.0:
        x = (ref - logp).clamp(-20.0, 20.0)
        k3 = (torch.exp(x) - x - 1.0).clamp(-10.0, 10.0)
        total = pg + cfg.kl_coef * k3
    loss = (total * weights).sum()
    with torch.no_grad():
        metrics = {
            'pg_loss': (pg * weights).sum(),
            'kl': (k3 * weights).sum() if cfg.kl_coef != 0.0 else torch.zeros((), dtype=logp.dtype),
            'clip_fraction': (l1 < l2).to(logp.dtype).mean(),
            'dual_clip_fraction': ((adv < 0) & (l_max > cap)).to(logp.dtype).mean(),
        }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# Cases on disk
# ----------------------------------------------------------------------------------------------

@dataclass
class Sequence:
    prompt: torch.Tensor            # (P, n_embd) prompt input embeddings
    prompt_pos: torch.Tensor        # (4, P) int64 M-RoPE streams (t, y, x, e)
    response_start_pos: int
    tokens: torch.Tensor            # (L,) int64 response token ids
    advantage: float
    old_logprobs: torch.Tensor | None   # (L,) or None: the current policy's, detached

    def inputs(self, model: TextModel) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's inputs: prompt then response tokens 0..L-2 -> x (P+L-1, n_embd), pos (4, P+L-1)."""
        L = len(self.tokens)
        x = torch.cat([self.prompt, model.embed_tokens(self.tokens[:L - 1])])
        resp_pos = text_positions(self.response_start_pos + torch.arange(L - 1, dtype=torch.int64))
        return x, torch.cat([self.prompt_pos, resp_pos], dim=1)


@dataclass
class Case:
    lora: Lora | None
    loss: LossConfig
    sequences: list[Sequence]


def load_case(case_dir: str | os.PathLike, model: TextModel | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[Case, TextModel]:
    """Reads CASE_DIR/case.json and its arrays (the format is described in make_case.py)."""
    case_dir = Path(case_dir)
    spec = json.loads((case_dir / 'case.json').read_text())
    if model is None:
        model = TextModel(case_dir / spec['model'], dtype)  # an absolute "model" replaces case_dir
    dtype = model.dtype

    def array(rel: str) -> np.ndarray:
        return np.load(case_dir / rel)

    lora = None
    if spec.get('lora') and spec['lora'].get('tensors'):
        ls = spec['lora']
        tensors = {}
        for name, files in ls['tensors'].items():
            a = torch.from_numpy(array(files['a']).astype(np.float64)).to(dtype)
            b = torch.from_numpy(array(files['b']).astype(np.float64)).to(dtype)
            want_a, want_b = model.lora_shape(name, int(ls['rank']))
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise ValueError(f'{name}: LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)}; '
                                 f'expected {want_a}, {want_b}')
            tensors[name] = (a, b)
        lora = Lora(int(ls['rank']), float(ls['alpha']), tensors)

    sequences = []
    for i, s in enumerate(spec['sequences']):
        prompt = torch.from_numpy(array(s['prompt_embeddings']).astype(np.float64)).to(dtype)
        pos = torch.from_numpy(array(s['prompt_positions']).astype(np.int64))
        tokens = torch.tensor(s['response_tokens'], dtype=torch.int64)
        if prompt.ndim != 2 or prompt.shape[1] != model.hp.n_embd or prompt.shape[0] == 0:
            raise ValueError(f'sequence {i}: prompt embeddings of shape {tuple(prompt.shape)}, '
                             f'expected (P>0, {model.hp.n_embd})')
        if tuple(pos.shape) != (4, prompt.shape[0]):
            raise ValueError(f'sequence {i}: prompt positions of shape {tuple(pos.shape)}, '
                             f'expected (4, {prompt.shape[0]})')
        if len(tokens) == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= model.hp.n_vocab:
            raise ValueError(f'sequence {i}: response tokens must be 1 or more ids in [0, {model.hp.n_vocab})')
        old = s.get('old_logprobs')
        if old is not None and len(old) != len(tokens):
            raise ValueError(f'sequence {i}: {len(old)} old_logprobs for {len(tokens)} tokens')
        sequences.append(Sequence(prompt, pos, int(s['response_start_pos']), tokens, float(s['advantage']),
                                  None if old is None else torch.tensor(old, dtype=dtype)))
    ls = spec.get('loss', {})
    cfg = LossConfig(**{k: ls[k] for k in ('clip_low', 'clip_high', 'dual_clip', 'kl_coef', 'aggregation') if k in ls})
    return Case(lora, cfg, sequences), model


def batch_logprobs(model: TextModel, seqs: list[Sequence], lora: Lora | None) -> list[torch.Tensor]:
    """Log-probs (L,) of each sequence's response tokens: token j is predicted at input row P - 1 + j.

    Sequences run through the transformer one by one (their lengths differ); the LM head, the
    costly part with a 151k vocabulary, runs once over all their response rows."""
    rows = []
    for s in seqs:
        x, pos = s.inputs(model)
        P, L = s.prompt.shape[0], len(s.tokens)
        rows.append(model.forward(x[None], pos[None], lora)[0, P - 1:P - 1 + L])
    tokens = torch.cat([s.tokens for s in seqs])
    return list(model.token_logprobs(torch.cat(rows), tokens).split([len(s.tokens) for s in seqs]))


def fixed_logprobs(model: TextModel, case: Case) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The batch's constants: old log-probs (given, or the current policy's) and the reference
    model's (LoRA off; None when kl_coef == 0). Like verl, both are computed once per batch and
    stay fixed over optimizer steps on that batch."""
    with torch.no_grad():
        olds = [s.old_logprobs for s in case.sequences]
        if any(o is None for o in olds):
            current = batch_logprobs(model, case.sequences, case.lora)
            olds = [c if o is None else o for o, c in zip(olds, current)]
        refs = batch_logprobs(model, case.sequences, None) if case.loss.kl_coef != 0.0 else None
    return olds, refs


def case_loss(model: TextModel, case: Case, olds: list[torch.Tensor], refs: list[torch.Tensor] | None):
    """The batch loss with the case's LoRA -> (loss, metrics, per-sequence log-probs)."""
    logps = batch_logprobs(model, case.sequences, case.lora)
    lengths = [len(s.tokens) for s in case.sequences]
    adv = torch.cat([torch.full((n,), s.advantage, dtype=model.dtype) for s, n in zip(case.sequences, lengths)])
    loss, metrics = grpo_loss(torch.cat(logps), torch.cat(olds), None if refs is None else torch.cat(refs), adv,
                              aggregation_weights(lengths, case.loss.aggregation, model.dtype), case.loss)
    return loss, metrics, logps


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def save_npy(path: Path, t: torch.Tensor) -> None:
    """Writes float32 .npy (whatever the compute dtype), the layout the TypeScript tests read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, t.detach().to(torch.float32).numpy())


def run_loss(model: TextModel, case: Case, out: Path, adamw: dict | None) -> dict:
    params = case.lora.parameters() if case.lora else []
    for p in params:
        p.requires_grad_(True)
    olds, refs = fixed_logprobs(model, case)
    loss, metrics, logps = case_loss(model, case, olds, refs)
    if params:
        loss.backward()
    result = {
        'loss': loss.item(),
        **{k: v.item() for k, v in metrics.items()},
        'tokens': sum(len(s.tokens) for s in case.sequences),
        'logprobs': [lp.detach().tolist() for lp in logps],
        'old_logprobs': [o.tolist() for o in olds],
        'ref_logprobs': None if refs is None else [r.tolist() for r in refs],
        'dtype': str(model.dtype).replace('torch.', ''),
    }
    for name, (a, b) in (case.lora.tensors.items() if case.lora else []):
        save_npy(out / 'grad' / f'{name}.lora_a.npy', a.grad)
        save_npy(out / 'grad' / f'{name}.lora_b.npy', b.grad)
    if adamw is not None:
        result['adamw'] = run_adamw(model, case, olds, refs, adamw, loss.item(), out)
    return result


def run_adamw(model: TextModel, case: Case, olds, refs, cfg: dict, first_loss: float, out: Path) -> dict:
    """cfg['steps'] AdamW steps on the case's batch; step 1's gradients are the ones already in
    .grad (computed by run_loss). Each step: global L2 grad-norm clip (if max_grad_norm), then
    torch.optim.AdamW. Writes OUT/after/<name>.lora_{a,b}.npy; returns per-step loss and grad norm."""
    params = case.lora.parameters()
    opt = torch.optim.AdamW(params, lr=cfg['lr'], betas=(cfg.get('beta1', 0.9), cfg.get('beta2', 0.999)),
                            eps=cfg.get('eps', 1e-8), weight_decay=cfg.get('weight_decay', 0.01), foreach=False)
    max_norm = cfg.get('max_grad_norm')
    steps = []
    for step in range(int(cfg['steps'])):
        loss = first_loss
        if step > 0:
            opt.zero_grad(set_to_none=True)
            loss_t, _, _ = case_loss(model, case, olds, refs)
            loss_t.backward()
            loss = loss_t.item()
        if max_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        opt.step()
        steps.append({'loss': loss, 'grad_norm': norm.item()})
    for name, (a, b) in case.lora.tensors.items():
        save_npy(out / 'after' / f'{name}.lora_a.npy', a)
        save_npy(out / 'after' / f'{name}.lora_b.npy', b)
    return {'config': cfg, 'steps': steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('case_dir', help='folder holding case.json')
    ap.add_argument('--out', help='output folder (default: CASE_DIR/reference)')
    ap.add_argument('--dtype', choices=sorted(DTYPES), default='float32')
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument('--logits', type=int, metavar='SEQ_INDEX',
                      help="write that sequence's logits (P+L-1, n_vocab) float32 to OUT/logits.npy")
    mode.add_argument('--adamw', metavar='JSON',
                      help='{"lr","beta1","beta2","eps","weight_decay","max_grad_norm","steps"}: after the '
                           'loss and gradients, run that many AdamW steps on the batch (old and reference '
                           'log-probs fixed at their first-step values) and write OUT/after/')
    ap.add_argument('--no-lora', action='store_true', help='with --logits: the base model (LoRA off)')
    args = ap.parse_args(argv)
    if args.no_lora and args.logits is None:
        ap.error('--no-lora goes with --logits')

    torch.set_num_threads(max(1, args.threads))
    try:
        case, model = load_case(args.case_dir, dtype=DTYPES[args.dtype])
    except (OSError, KeyError, ValueError) as e:
        print(f'grpo_reference: bad case {args.case_dir}: {e!r}', file=sys.stderr)
        return 2
    if args.adamw and case.lora is None:
        ap.error('--adamw needs a case with LoRA tensors')
    if args.logits is not None and not 0 <= args.logits < len(case.sequences):
        ap.error(f'--logits {args.logits}: the case has {len(case.sequences)} sequences')
    out = Path(args.out) if args.out else Path(args.case_dir) / 'reference'
    out.mkdir(parents=True, exist_ok=True)

    if args.logits is not None:
        seq = case.sequences[args.logits]
        x, pos = seq.inputs(model)
        with torch.no_grad():
            logits = model.logits(model.forward(x[None], pos[None], None if args.no_lora else case.lora)[0])
        save_npy(out / 'logits.npy', logits)
        return 0

    result = run_loss(model, case, out, json.loads(args.adamw) if args.adamw else None)
    (out / 'result.json').write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
