#!/usr/bin/env python3
"""An independent reference for the LoRA gradients of one GRPO step: our trainer (the C++ executable's
--grads mode, on the GPU and then on the CPU) against PEFT + PyTorch autograd on the same random tiny
Qwen2.5-VL (the model of hf_reference.py, converted to GGUF by the vendored llama.cpp converter).

    python3 peft_reference.py --vendor DIR --exe visplay_train_test --vocab ggml-vocab-qwen2.gguf --work DIR
                              [--device cuda|cpu] [--seed 0]

How it runs:
 1. the tiny model as hf_reference.py makes it (float32, random biases and norms), saved and converted
    to a text-only F32 GGUF;
 2. a probe: EXE --grads GGUF --batch BATCH0.json --out OUT0.json with no old_logprobs (so old = the
    current log-probs, ratio 1). The executable draws LoRA A (PEFT's kaiming-uniform, from the batch's
    seed) and B ~ N(0, b_std) itself and returns the values it used;
 3. those values go into PEFT's lora_A / lora_B (LoraConfig r=8, alpha=16, dropout 0, the 7 projections
    of the language model's decoder layers only, never the vision tower), the model is cast to float64
    on the CPU, and its log-probs of the batch give old_logprobs = logp + offsets ~ N(0, 0.3) (kept
    0.03 away from every clip boundary in log-ratio, plus a few forced ones so that both clip branches
    and the dual clip occur): BATCH.json;
 4. EXE --grads on BATCH.json on the GPU (--device cuda) and with --cpu;
 5. the reference: the GRPO loss written here from native/src/grpo_loss.h's formulas with torch ops
    (clamp/exp/maximum/minimum/where, no hand-written derivative), seq_mean_token_mean, autograd in
    float64; compared per LoRA tensor: relative error ||g_ours - g_ref|| / ||g_ref|| and max abs diff,
    log-probs, loss.

Tolerances: TOL_CPU = 1e-4 relative (float32 against float64: summation order only, measured ~1e-6);
TOL_GPU = 2e-2 (ggml-cuda multiplies float32 matrices in TF32, unit roundoff 2^-11 = 4.9e-4 per
operand; see docs/gpu.md). Log-probs: 1e-4 / 1e-2 absolute. The fault size: the reference gradient
with one sample's advantage negated differs from the reference by FAULT_MIN_FACTOR x TOL_GPU or more
in every tensor (checked), so the GPU tolerance is small against a real fault.
Prints one JSON line on stdout (everything else goes to stderr); exits 0 when every check passes.
"""
import contextlib
import copy
import json
import math
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as H  # noqa: E402

TOL_CPU = 1e-4
TOL_GPU = 2e-2
TOL_LOGP_CPU = 1e-4
TOL_LOGP_GPU = 1e-2
FAULT_MIN_FACTOR = 10.0

RANK = 8
ALPHA = 16
LORA_SEED = 1
B_STD = 0.02
LOSS_CFG = dict(clip_low=0.2, clip_high=0.3, dual_clip=3.0, kl_coef=0.0, aggregation='seq_mean_token_mean')
ADVANTAGES = [1.0, -0.5, 0.8, -1.2]

# ggml's LoRA target (blk.{i}.NAME.weight) -> the projection's name inside a transformers decoder layer
GGML_TO_HF = {
    'attn_q': 'self_attn.q_proj',
    'attn_k': 'self_attn.k_proj',
    'attn_v': 'self_attn.v_proj',
    'attn_output': 'self_attn.o_proj',
    'ffn_gate': 'mlp.gate_proj',
    'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj',
}
_LAYER_RE = re.compile(r'(?:^|\.)layers\.(\d+)\.(' + '|'.join(re.escape(v) for v in GGML_TO_HF.values()) + r')$')


def lm_targets(model):
    """{'blk.{i}.{ggml}.weight': full module name} for the language model's decoder projections.
    Matches named_modules ending in 'layers.{i}.self_attn.q_proj' etc. that are nn.Linear and are not
    under the vision tower ('visual' / 'vision' anywhere in the path); each target must be found once."""
    import torch
    hf_to_ggml = {v: k for k, v in GGML_TO_HF.items()}
    out = {}
    for name, mod in model.named_modules():
        parts = name.split('.')
        if any(p == 'visual' or 'vision' in p for p in parts):
            continue
        m = _LAYER_RE.search(name)
        if not m or not isinstance(mod, torch.nn.Linear):
            continue
        key = f'blk.{int(m.group(1))}.{hf_to_ggml[m.group(2)]}.weight'
        if key in out:
            raise RuntimeError(f'two modules for {key}: {out[key]} and {name}')
        out[key] = name
    if not out:
        raise RuntimeError('no language-model decoder projections found')
    n_layers = 1 + max(int(k.split('.')[1]) for k in out)
    missing = [f'blk.{i}.{g}.weight' for i in range(n_layers) for g in GGML_TO_HF if f'blk.{i}.{g}.weight' not in out]
    if missing:
        raise RuntimeError(f'missing LoRA targets: {missing[:6]}')
    return out


def apply_peft(model, rank, alpha):
    """PEFT LoRA on exactly the language model's 7 projections per layer (full module names, so the
    vision tower's mlp.gate_proj/up_proj/down_proj are never wrapped). Returns (peft_model, targets,
    {ggml base name: the LoRA-wrapped module})."""
    import peft
    targets = lm_targets(model)
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=sorted(targets.values()), bias='none',
                          use_rslora=False)
    pm = peft.get_peft_model(model, cfg)
    from peft.tuners.lora import LoraLayer
    wrapped = [n for n, m in pm.named_modules() if isinstance(m, LoraLayer)]
    if len(wrapped) != len(targets):
        raise RuntimeError(f'PEFT wrapped {len(wrapped)} modules, expected {len(targets)}: {wrapped[:4]}...')
    inner = pm.base_model.model
    mods = {}
    for base, name in targets.items():
        m = inner.get_submodule(name)
        if not isinstance(m, LoraLayer):
            raise RuntimeError(f'{name} is not a LoRA layer after get_peft_model')
        if abs(m.scaling['default'] - alpha / rank) > 1e-12:
            raise RuntimeError(f'PEFT scaling {m.scaling["default"]} != alpha / rank = {alpha / rank}')
        mods[base] = m
    return pm, targets, mods


def grpo_pg(logp, old, adv, clip_low, clip_high, dual_clip):
    """Per-token GRPO policy-gradient loss of grpo_loss.h with torch ops (autograd does the rest).
    logp, old: tensors of one shape; adv: scalar or broadcastable tensor. Returns (pg, clipped, dual)."""
    import torch
    adv = torch.as_tensor(adv, dtype=logp.dtype, device=logp.device)
    ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = l2 > l1
    pg = torch.maximum(l1, l2)
    dual = torch.zeros_like(clipped)
    if dual_clip > 0:
        cap = (-adv * dual_clip).expand_as(pg)
        neg = (adv < 0).expand_as(pg)
        dual = neg & (cap < pg)
        pg = torch.where(neg, torch.minimum(pg, cap), pg)
    return pg, clipped, dual


def aggregate(per_sample_pg, aggregation):
    """per_sample_pg: list of 1-D tensors (one per sample)."""
    import torch
    if aggregation == 'seq_mean_token_mean':
        return torch.stack([p.mean() for p in per_sample_pg]).mean()
    if aggregation == 'token_mean':
        return torch.cat(per_sample_pg).mean()
    raise ValueError(f'unknown aggregation {aggregation}')


def sample_logprobs(model, prompt, tokens, device):
    """log p(tokens[j] | prompt + tokens[:j]) of one sample, in float64 (log_softmax of the logits
    cast to double). input_ids = prompt + tokens[:-1]; position len(prompt) - 1 + j predicts tokens[j]."""
    import torch
    ids = torch.tensor([list(prompt) + list(tokens[:-1])], device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0]
    p = len(prompt)
    rows = logits[p - 1:p - 1 + len(tokens)].double()
    tgt = torch.tensor(tokens, device=device)
    return torch.log_softmax(rows, dim=-1).gather(1, tgt[:, None])[:, 0]


def reference(pm, mods, batch, device):
    """Loss, log-probs and LoRA gradients of one GRPO step with autograd. old_logprobs absent -> old =
    the current log-probs (detached). Returns numpy arrays; grads keyed by (base, 'a'|'b') in torch layout."""
    import torch
    for p in pm.parameters():
        p.grad = None
    c = batch
    if c.get('kl_coef', 0.0) != 0.0:
        raise ValueError('the reference implements kl_coef = 0 only')
    pgs, lps, n_clip, n_dual, n_tok = [], [], 0, 0, 0
    for s in c['samples']:
        logp = sample_logprobs(pm, c['prompt'], s['tokens'], device)
        if s.get('old_logprobs') is None:
            old = logp.detach()
        else:
            old = torch.tensor(s['old_logprobs'], dtype=torch.float64, device=device)
        pg, clipped, dual = grpo_pg(logp, old, float(s['advantage']), c['clip_low'], c['clip_high'], c['dual_clip'])
        pgs.append(pg)
        lps.append(logp.detach().cpu().numpy())
        n_clip += int(clipped.sum())
        n_dual += int(dual.sum())
        n_tok += len(s['tokens'])
    loss = aggregate(pgs, c['aggregation'])
    loss.backward()
    grads = {}
    for base, m in mods.items():
        grads[(base, 'a')] = m.lora_A['default'].weight.grad.detach().double().cpu().numpy().copy()
        grads[(base, 'b')] = m.lora_B['default'].weight.grad.detach().double().cpu().numpy().copy()
    return {'loss': float(loss), 'logprobs': lps, 'grads': grads, 'clip_fraction': n_clip / n_tok,
            'clipped': n_clip, 'dual_clipped': n_dual, 'tokens': n_tok}


def run_exe(exe, gguf, batch, path_prefix, cpu, timeout=300):
    """EXE --grads on batch; returns (OUT dict, seconds). Raises with the exe's output tail on failure."""
    bpath, opath = path_prefix + '.batch.json', path_prefix + '.out.json'
    with open(bpath, 'w') as f:
        json.dump(batch, f)
    if os.path.exists(opath):
        os.remove(opath)
    cmd = [exe, '--grads', gguf, '--batch', bpath, '--out', opath] + (['--cpu'] if cpu else [])
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    secs = time.time() - t
    if r.returncode != 0:
        raise RuntimeError(f'exit {r.returncode}: stdout: {r.stdout[-400:]} stderr: {r.stderr[-1500:]}')
    with open(opath) as f:
        return json.load(f), secs


def exe_tensors(out):
    """{(base, kind): (value, grad)} in torch layout ([rank, n_in] for A, [n_out, rank] for B)."""
    import numpy as np
    res = {}
    for t in out['tensors']:
        ne0, ne1 = int(t['shape'][0]), int(t['shape'][1])
        v = np.asarray(t['value'], dtype=np.float64)
        g = np.asarray(t['grad'], dtype=np.float64)
        if v.size != ne0 * ne1 or g.size != ne0 * ne1:
            raise RuntimeError(f'{t["name"]}: shape {t["shape"]} but {v.size} values, {g.size} grads')
        res[(t['base'], t['kind'])] = (v.reshape(ne1, ne0), g.reshape(ne1, ne0))
    return res


def load_lora_values(mods, tensors, rank):
    import torch
    expected = {(b, k) for b in mods for k in ('a', 'b')}
    if set(tensors) != expected:
        raise RuntimeError(f'exe returned tensors {sorted(set(tensors) - expected)[:4]} extra, '
                           f'{sorted(expected - set(tensors))[:4]} missing')
    with torch.no_grad():
        for base, m in mods.items():
            wa, wb = m.lora_A['default'].weight, m.lora_B['default'].weight
            a, b = tensors[(base, 'a')][0], tensors[(base, 'b')][0]
            if tuple(a.shape) != tuple(wa.shape) or tuple(b.shape) != tuple(wb.shape):
                raise RuntimeError(f'{base}: exe A {a.shape} / B {b.shape}, PEFT A {tuple(wa.shape)} / B {tuple(wb.shape)} '
                                   f'(rank {rank})')
            wa.copy_(torch.from_numpy(a))
            wb.copy_(torch.from_numpy(b))


def rel_diffs(g, ref):
    import numpy as np
    out = {}
    for k, r in ref.items():
        d = g[k] - r
        out[k] = (float(np.linalg.norm(d) / max(np.linalg.norm(r), 1e-300)), float(np.abs(d).max()))
    return out


def compare(out, ref, values, tol_grad, tol_logp):
    """One exe run against the float64 reference."""
    import numpy as np
    res = {'device': out.get('device'), 'tolerance': {'grad_rel': tol_grad, 'logp_abs': tol_logp}}
    tens = exe_tensors(out)
    if set(tens) != set(ref['grads']):
        raise RuntimeError(f'tensor set differs: {sorted(set(tens) ^ set(ref["grads"]))[:4]}')
    # the LoRA values the run used must be the ones the reference used (drawn from the same seed)
    res['lora_values_max_diff'] = max(float(np.abs(tens[k][0] - values[k]).max()) for k in tens)
    lp = out['logprobs']
    if len(lp) != len(ref['logprobs']) or any(len(a) != len(b) for a, b in zip(lp, ref['logprobs'])):
        raise RuntimeError(f'logprobs lengths {[len(a) for a in lp]} != {[len(b) for b in ref["logprobs"]]}')
    res['max_logp_diff'] = max(float(np.abs(np.asarray(a, dtype=np.float64) - b).max()) for a, b in zip(lp, ref['logprobs']))
    res['loss'], res['loss_ref'] = out.get('loss'), ref['loss']
    res['loss_rel_diff'] = abs(float(out['loss']) - ref['loss']) / max(abs(ref['loss']), 1e-12)
    if 'pg_loss' in out:
        res['pg_loss_rel_diff'] = abs(float(out['pg_loss']) - ref['loss']) / max(abs(ref['loss']), 1e-12)
    res['clip_fraction'], res['clip_fraction_ref'] = out.get('clip_fraction'), ref['clip_fraction']
    res['lora_scale'] = out.get('lora_scale')
    rd = rel_diffs({k: v[1] for k, v in tens.items()}, ref['grads'])
    worst = max(rd, key=lambda k: rd[k][0])
    res['grad_max_rel'] = rd[worst][0]
    res['grad_worst_tensor'] = f'{worst[0]}.lora_{worst[1]}'
    res['grad_max_abs_diff'] = max(v[1] for v in rd.values())
    res['grad_ref_max_abs'] = max(float(np.abs(g).max()) for g in ref['grads'].values())
    res['grad_rel_per_tensor'] = {f'{k[0][:-len(".weight")]}.{k[1]}': float(f'{v[0]:.3g}') for k, v in sorted(rd.items())}
    checks = {
        'lora_values': res['lora_values_max_diff'] <= 1e-6 * max(1.0, max(float(np.abs(v).max()) for v in values.values())),
        'lora_scale': out.get('lora_scale') is None or abs(float(out['lora_scale']) - ALPHA / RANK) < 1e-6,
        'logprobs': res['max_logp_diff'] <= tol_logp,
        'loss': res['loss_rel_diff'] <= tol_grad,
        'grads': res['grad_max_rel'] <= tol_grad,
    }
    res['failed_checks'] = [k for k, v in checks.items() if not v]
    res['ok'] = not res['failed_checks']
    return res


def make_old_logprobs(ref_logp, advantages, rng):
    """old = logp - log_ratio with log_ratio ~ N(0, 0.3), kept 0.03 from the clip boundaries log(0.8),
    log(1.3) and log(dual_clip) so that TF32 noise cannot flip a token's branch; then forced: sample 0
    (A > 0) token 1 at log-ratio 0.5 (clipped high), sample 1 (A < 0) token 1 at -0.5 (clipped low),
    the most negative advantage's token 0 at 1.5 (ratio 4.5 > dual_clip 3: capped)."""
    bounds = [math.log(1 - LOSS_CFG['clip_low']), math.log(1 + LOSS_CFG['clip_high']), math.log(LOSS_CFG['dual_clip'])]
    olds = []
    for si, lp in enumerate(ref_logp):
        lr = rng.normal(0.0, 0.3, size=len(lp))
        for j in range(len(lr)):
            for b in bounds:
                if abs(lr[j] - b) < 0.03:
                    lr[j] = b + (0.06 if lr[j] >= b else -0.06)
        olds.append(lr)
    olds[0][1] = 0.5
    olds[1][1] = -0.5
    neg = min(range(len(advantages)), key=lambda i: advantages[i])
    olds[neg][0] = 1.5
    return [[float(l - r) for l, r in zip(lp, lr)] for lp, lr in zip(ref_logp, olds)]


def main():
    ap = H.reference_args()
    ap.add_argument('--device', choices=['cuda', 'cpu'], default='cuda',
                    help='cuda: the exe on the GPU, then with --cpu; cpu: the exe with --cpu only')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    H.prepare(args)
    real_stdout = sys.stdout
    result = {'ok': False}
    stage = 'import'
    t0 = time.time()
    timings = {}

    def lap(name, t):
        timings[name] = round(time.time() - t, 2)

    with contextlib.redirect_stdout(sys.stderr):  # the converter and libraries print; stdout is the JSON line
        try:
            import numpy as np
            import torch
            import transformers
            import peft
            import gguf
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision('highest')
            result.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                          numpy=np.__version__, python=sys.version.split()[0])
            if args.device == 'cuda':
                if not torch.cuda.is_available():
                    raise RuntimeError('--device cuda but torch sees no CUDA device')
                result['gpu'] = torch.cuda.get_device_name(0)

            stage = 'model'
            t = time.time()
            model = H.build_model(args.seed)
            hf_dir = os.path.join(args.work, 'hf')
            model.save_pretrained(hf_dir, safe_serialization=True)
            lap('model', t)

            stage = 'convert'
            t = time.time()
            out_gguf = os.path.join(args.work, 'text-f32.gguf')
            H.convert_text_f32(gguf, hf_dir, args.vocab, out_gguf)
            lap('convert', t)

            stage = 'batch'
            rng = np.random.default_rng(args.seed + 1)
            prompt = [int(x) for x in rng.integers(0, 151643, size=24)]
            samples = [{'tokens': [int(x) for x in rng.integers(0, 151643, size=int(rng.integers(6, 13)))],
                        'advantage': a} for a in ADVANTAGES]
            batch0 = dict(rank=RANK, alpha=ALPHA, seed=LORA_SEED, b_std=B_STD, prompt=prompt, samples=samples, **LOSS_CFG)

            stage = 'exe probe'  # LoRA values drawn by the exe; old_logprobs omitted (ratio 1)
            t = time.time()
            probe_cpu = args.device == 'cpu'
            try:
                probe, _ = run_exe(args.exe, out_gguf, batch0, os.path.join(args.work, 'probe'), cpu=probe_cpu)
            except Exception as e:
                if probe_cpu:
                    raise
                result['probe_gpu_error'] = f'{type(e).__name__}: {e}'[:2000]
                probe_cpu = True
                probe, _ = run_exe(args.exe, out_gguf, batch0, os.path.join(args.work, 'probe'), cpu=True)
            result['probe_device'] = probe.get('device')
            lap('exe probe', t)

            stage = 'peft'
            t = time.time()
            pm, targets, mods = apply_peft(model, RANK, ALPHA)
            probe_t = exe_tensors(probe)
            load_lora_values(mods, probe_t, RANK)
            values = {k: v[0] for k, v in probe_t.items()}
            pm64 = pm.to(torch.float64)
            pm64.train()  # dropout is 0 everywhere; train() only for PEFT's own bookkeeping
            result['lora_targets'] = len(targets)
            result['peft_example'] = targets['blk.0.attn_q.weight']
            lap('peft', t)

            stage = 'reference probe'
            t = time.time()
            ref0 = reference(pm64, mods, batch0, 'cpu')
            try:
                result['probe'] = {k: v for k, v in compare(probe, ref0, values, TOL_CPU if probe_cpu else TOL_GPU,
                                                            TOL_LOGP_CPU if probe_cpu else TOL_LOGP_GPU).items()
                                   if k != 'grad_rel_per_tensor'}
                result['probe']['note'] = 'informational: ratio 1, nothing clipped'
            except Exception as e:
                result['probe'] = {'error': f'{type(e).__name__}: {e}'[:1000]}
            lap('reference probe', t)

            stage = 'old logprobs'
            olds = make_old_logprobs(ref0['logprobs'], ADVANTAGES, np.random.default_rng(args.seed + 2))
            batch = copy.deepcopy(batch0)
            for s, o in zip(batch['samples'], olds):
                s['old_logprobs'] = o

            stage = 'reference'
            t = time.time()
            ref = reference(pm64, mods, batch, 'cpu')
            result['reference'] = {'loss': ref['loss'], 'tokens': ref['tokens'], 'clipped': ref['clipped'],
                                   'dual_clipped': ref['dual_clipped'], 'clip_fraction': ref['clip_fraction'],
                                   'grad_max_abs': max(float(np.abs(g).max()) for g in ref['grads'].values())}
            lap('reference', t)

            stage = 'fault size'
            t = time.time()
            faults = {}
            for fname, mutate in [
                ('sample0_advantage_negated', lambda b: b['samples'][0].update(advantage=-b['samples'][0]['advantage'])),
                ('sample0_advantage_plus_10pct', lambda b: b['samples'][0].update(advantage=1.1 * b['samples'][0]['advantage'])),
                ('no_clipping', lambda b: b.update(clip_low=1e9, clip_high=1e9, dual_clip=0.0)),
            ]:
                fb = copy.deepcopy(batch)
                mutate(fb)
                fr = reference(pm64, mods, fb, 'cpu')
                rd = rel_diffs(fr['grads'], ref['grads'])
                vals = sorted(v[0] for v in rd.values())
                faults[fname] = {'min_rel': vals[0], 'median_rel': vals[len(vals) // 2], 'max_rel': vals[-1]}
            faults['required_min_rel'] = FAULT_MIN_FACTOR * TOL_GPU
            faults['ok'] = faults['sample0_advantage_negated']['min_rel'] > FAULT_MIN_FACTOR * TOL_GPU
            result['fault_size'] = faults
            lap('fault size', t)

            stage = 'torch float32'  # informational: the same computation in float32 on args.device, TF32 off
            t = time.time()
            try:
                pm32 = copy.deepcopy(pm64).to(torch.float32).to(args.device)
                mods32 = {b: pm32.base_model.model.get_submodule(n) for b, n in targets.items()}
                r32 = reference(pm32, mods32, batch, args.device)
                rd = rel_diffs(r32['grads'], ref['grads'])
                result['torch_f32'] = {
                    'device': args.device, 'grad_max_rel': max(v[0] for v in rd.values()),
                    'max_logp_diff': max(float(np.abs(a - b).max()) for a, b in zip(r32['logprobs'], ref['logprobs'])),
                    'loss_rel_diff': abs(r32['loss'] - ref['loss']) / abs(ref['loss'])}
                del pm32
            except Exception as e:
                result['torch_f32'] = {'error': f'{type(e).__name__}: {e}'[:1000]}
            lap('torch float32', t)

            runs = {}
            for rname, cpu in ([('gpu', False)] if args.device == 'cuda' else []) + [('cpu', True)]:
                stage = f'exe {rname}'
                t = time.time()
                try:
                    out, secs = run_exe(args.exe, out_gguf, batch, os.path.join(args.work, rname), cpu=cpu)
                    stage = f'compare {rname}'
                    runs[rname] = compare(out, ref, values, TOL_CPU if cpu else TOL_GPU, TOL_LOGP_CPU if cpu else TOL_LOGP_GPU)
                    runs[rname]['exe_seconds'] = round(secs, 2)
                except Exception as e:
                    runs[rname] = {'ok': False, 'stage': stage, 'error': f'{type(e).__name__}: {e}'[:2000]}
                lap(f'exe {rname}', t)
            result['runs'] = runs
            stage = 'done'
            result['ok'] = bool(faults['ok'] and runs and all(r.get('ok') for r in runs.values()))
            if not result['ok']:
                bad = [k for k, r in runs.items() if not r.get('ok')]
                result['stage'] = f'checks failed: runs {bad}' + ('' if faults['ok'] else ', fault size too small')
        except BaseException as e:  # SystemExit from the converter included
            result.update(stage=stage, error=f'{type(e).__name__}: {e}'[:2000])
    result['timings'] = timings
    result['seconds'] = round(time.time() - t0, 1)
    print(json.dumps(result), file=real_stdout, flush=True)
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
