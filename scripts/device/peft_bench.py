#!/usr/bin/env python3
"""The GRPO train-step time of PyTorch + transformers + PEFT on a random Qwen2.5-VL: the peer of our
C++ trainer's bench. Nothing is downloaded: the model is built from a config with random weights,
directly on the device in the given dtype.

    python3 peft_bench.py --shape tiny|3b --dtype float32|bfloat16 [--groups 2 --samples 8 --prompt 256
                          --response 64 --rank 16 --alpha 32 --steps 5 --warmup 2] [--attn sdpa|eager]
                          [--device cuda|cpu] [--tf32] [--seed 0]

Shapes: tiny = hf_reference.py's model (text 128 wide, 2 layers, 4 heads, 2 KV heads, ff 384, vocab
151936, untied); 3b = Qwen2.5-VL-3B's text model (2048 wide, 36 layers, 16 heads, 2 KV heads, ff 11008,
vocab 151936, tied embeddings, rms eps 1e-6, rope theta 1e6, mrope sections 16/24/24) with a tiny vision
tower (out_hidden_size 2048; the step is text only).

One step, as a careful PyTorch user writes it: G groups of n samples, each sequence = prompt (P ids,
shared by the group) + response[:-1] (L ids), no padding, B = G n sequences; forward with
logits_to_keep = L (only the response positions reach lm_head), log-probs = logit[token] -
logsumexp(logits) in float32; the GRPO loss of grpo_loss.h (clip 0.2 / 0.3, dual clip 3, old log-probs
= the detached current ones + N(0, 0.1) noise, advantages random +-1, seq_mean_token_mean); backward;
clip_grad_norm_(1.0); AdamW (lr 1e-6, betas 0.9 / 0.999, weight decay 0.01, fused where available);
zero_grad. Gradient checkpointing off; PEFT LoRA (dropout 0) on the 7 projections of every decoder
layer, never the vision tower. TF32 follows torch's default (off) unless --tf32.
Prints one JSON line on stdout; exits 0 when the steps ran.
"""
import argparse
import contextlib
import inspect
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as H  # noqa: E402
import peft_reference as R  # noqa: E402


def make_config_3b(transformers):
    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                tie_word_embeddings=True, hidden_act='silu', use_sliding_window=False, attention_dropout=0.0)
    vision = dict(depth=2, hidden_size=64, num_heads=4, intermediate_size=96, out_hidden_size=2048, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1], in_channels=3,
                  hidden_act='silu')
    return H.qwen25vl_config(text, vision, [16, 24, 24], tied=True)  # head_dim 128 -> 64 rotary pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shape', choices=['tiny', '3b'], required=True)
    ap.add_argument('--dtype', choices=['float32', 'bfloat16'], required=True)
    ap.add_argument('--groups', type=int, default=2)
    ap.add_argument('--samples', type=int, default=8)
    ap.add_argument('--prompt', type=int, default=256)
    ap.add_argument('--response', type=int, default=64)
    ap.add_argument('--rank', type=int, default=16)
    ap.add_argument('--alpha', type=float, default=32)
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--attn', choices=['sdpa', 'eager'], default='sdpa')
    ap.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    ap.add_argument('--tf32', action='store_true', help='allow TF32 float32 matmuls (as ggml-cuda does); default off')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    real_stdout = sys.stdout
    result = {'ok': False, 'shape': args.shape, 'dtype': args.dtype, 'attn': args.attn, 'groups': args.groups,
              'samples': args.samples, 'prompt': args.prompt, 'response': args.response, 'rank': args.rank,
              'alpha': args.alpha, 'steps': args.steps, 'warmup': args.warmup}
    stage = 'import'
    t0 = time.time()
    with contextlib.redirect_stdout(sys.stderr):
        try:
            import torch
            import transformers
            import peft
            result.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__)
            dev = torch.device(args.device)
            cuda = dev.type == 'cuda'
            if cuda and not torch.cuda.is_available():
                raise RuntimeError('--device cuda but torch sees no CUDA device')
            torch.backends.cuda.matmul.allow_tf32 = args.tf32
            torch.backends.cudnn.allow_tf32 = args.tf32
            result['tf32'] = args.tf32
            result['device'] = torch.cuda.get_device_name(dev) if cuda else 'cpu'

            stage = 'model'
            t = time.time()
            torch.manual_seed(args.seed)
            dtype = getattr(torch, args.dtype)
            from transformers import Qwen2_5_VLForConditionalGeneration as Cls
            cfg = H.make_config(transformers) if args.shape == 'tiny' else make_config_3b(transformers)
            with torch.device(dev):  # parameters are created and initialised on the device
                model = Cls._from_config(cfg, dtype=dtype, attn_implementation=args.attn)
            model.config.use_cache = False
            if hasattr(model, 'gradient_checkpointing_disable'):
                model.gradient_checkpointing_disable()
            where = {(p.device.type, p.dtype) for p in model.parameters()}
            if where != {(dev.type, dtype)}:
                raise RuntimeError(f'parameters on {sorted(map(str, where))}, expected {dev.type} {dtype}')
            emb = model.get_input_embeddings().weight
            result['tied_embeddings'] = model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
            result['params'] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            if cuda:
                torch.cuda.synchronize()
                result['weights_gib'] = round(torch.cuda.memory_allocated(dev) / 2**30, 3)
            result['model_seconds'] = round(time.time() - t, 2)

            stage = 'peft'
            pm, targets, mods = R.apply_peft(model, args.rank, args.alpha)
            pm.train()
            trainable = [p for p in pm.parameters() if p.requires_grad]
            result['lora_targets'] = len(targets)
            result['trainable_params'] = sum(p.numel() for p in trainable)
            result['lora_dtype'] = str(trainable[0].dtype)
            try:
                opt = torch.optim.AdamW(trainable, lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01, fused=True)
                result['adamw_fused'] = True
            except Exception:
                opt = torch.optim.AdamW(trainable, lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
                result['adamw_fused'] = False

            stage = 'batch'
            G, n, P, L = args.groups, args.samples, args.prompt, args.response
            B = G * n
            g = torch.Generator().manual_seed(args.seed + 1)
            prompts = torch.randint(0, 151643, (G, P), generator=g)
            resp = torch.randint(0, 151643, (B, L), generator=g)
            ids = torch.cat([prompts.repeat_interleave(n, 0), resp[:, :-1]], 1).to(dev)
            mask = torch.ones_like(ids)
            targets_t = resp.to(dev)
            adv = (torch.randint(0, 2, (B, 1), generator=g) * 2 - 1).to(dev, torch.float32)
            old_noise = (torch.randn(B, L, generator=g) * 0.1).to(dev)
            use_ltk = 'logits_to_keep' in inspect.signature(type(model).forward).parameters
            result.update(sequences=B, seq_len=P + L - 1, logits_to_keep=use_ltk)
            c = R.LOSS_CFG

            def step():
                if use_ltk:
                    logits = pm(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=L).logits
                else:  # slice the hidden states ourselves, then lm_head on the response positions only
                    h = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                    logits = model.lm_head(h[:, -L:])
                if logits.shape[1] != L:
                    raise RuntimeError(f'logits for {logits.shape[1]} positions, expected {L}')
                lf = logits.float()
                logp = lf.gather(-1, targets_t[..., None])[..., 0] - torch.logsumexp(lf, -1)
                old = logp.detach() + old_noise
                pg, clipped, _ = R.grpo_pg(logp, old, adv, c['clip_low'], c['clip_high'], c['dual_clip'])
                loss = pg.mean(1).mean()  # seq_mean_token_mean
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.detach(), gn.detach(), clipped.float().mean().detach()

            def sync():
                if cuda:
                    torch.cuda.synchronize(dev)

            stage = 'warmup'
            for _ in range(args.warmup):
                step()
            sync()
            if cuda:  # the timed steps' peak is reported below; this one includes the first step's allocations
                result['max_memory_allocated_warmup_gib'] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
                torch.cuda.reset_peak_memory_stats(dev)
            stage = 'steps'
            times, losses = [], []
            for _ in range(args.steps):
                sync()
                t = time.perf_counter()
                loss, gn, cf = step()
                sync()
                times.append(time.perf_counter() - t)
                losses.append(float(loss))
            med = statistics.median(times)
            result.update(
                step_seconds_median=round(med, 4), step_seconds_min=round(min(times), 4), step_seconds_max=round(max(times), 4),
                step_seconds=[round(x, 4) for x in times],
                response_tokens_per_s=round(B * L / med, 1), total_tokens_per_s=round(B * (P + L - 1) / med, 1),
                loss_first=losses[0], loss_last=losses[-1], grad_norm_last=float(gn), clip_fraction_last=float(cf),
                finite=all(x == x and abs(x) != float('inf') for x in losses) and float(gn) == float(gn))
            if cuda:
                result['max_memory_allocated_gib'] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
                result['max_memory_reserved_gib'] = round(torch.cuda.max_memory_reserved(dev) / 2**30, 3)
            result['ok'] = True
        except BaseException as e:
            result.update(stage=stage, error=f'{type(e).__name__}: {e}'[:2000])
            try:
                import torch
                if torch.cuda.is_available():
                    result['max_memory_allocated_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            except Exception:
                pass
    result['seconds'] = round(time.time() - t0, 1)
    print(json.dumps(result), file=real_stdout, flush=True)
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
