#!/usr/bin/env python3
"""An independent reference on the GPU: a random-weights tiny Qwen2.5-VL made with transformers from a
config, converted to GGUF by the vendored llama.cpp converter (text model), and the logits of one
text sequence from four computations:
    ref64     transformers on the CPU in float64: the reference
    hf32      transformers on the GPU in float32, TF32 off
    ours_gpu  llama.cpp via visplay_gpu_test --logits, all layers on the GPU, F32 KV cache
    ours_cpu  the same on the CPU only

    python3 hf_reference.py --vendor DIR --exe visplay_gpu_test --vocab ggml-vocab-qwen2.gguf --work DIR

DIR (--vendor) holds convert_hf_to_gguf.py, conversion/ and gguf-py/ of the vendored tree. Nothing is
downloaded: the tokenizer written into the GGUF is the vendored Qwen2 vocabulary (the converter's
set_vocab is replaced by one that copies it), since only token ids cross between the two sides.
Prints one JSON line; exits 0 when ours_cpu is within TOL_CPU and ours_gpu within TOL_GPU of ref64.

TOL_CPU = 1e-5 absolute on logits of |x| ~ 1.3: float32 against float64, summation order only.
TOL_GPU = 1e-2: ggml-cuda runs float32 matmuls in TF32 (its cuBLAS handles use
CUBLAS_TF32_TENSOR_OP_MATH; its small-batch kernels TF32 mma), unit roundoff 2^-11 = 4.9e-4 per
operand, so a few 1e-4 to 1e-3 at the logits (see native/test/gpu_test.cpp); hf32 has TF32 off.
"""
import argparse
import json
import os
import subprocess
import sys
import time

TOL_CPU = 1e-5
TOL_GPU = 1e-2


def vocab_from_gguf(gguf, path):
    r = gguf.GGUFReader(path)
    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode('utf-8') for i in f.data]
    tokens = strings('tokenizer.ggml.tokens')
    merges = strings('tokenizer.ggml.merges')
    types = [int(x) for x in r.get_field('tokenizer.ggml.token_type').contents()]
    ids = {k: int(r.get_field(f'tokenizer.ggml.{k}_token_id').contents()) for k in ('eos', 'bos', 'padding')}
    return tokens, types, merges, ids


def make_config(transformers):
    from transformers import Qwen2_5_VLConfig
    # head_dim 32 -> 16 rotary pairs = mrope sections 4 + 6 + 6 (text positions are equal in all three)
    text = dict(vocab_size=151936, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                tie_word_embeddings=False, hidden_act='silu', use_sliding_window=False)
    vision = dict(depth=2, hidden_size=64, num_heads=4, intermediate_size=96, out_hidden_size=128, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1], in_channels=3,
                  hidden_act='silu')
    return qwen25vl_config(text, vision, [4, 6, 6], tied=False)


def qwen25vl_config(text, vision, sections, tied, theta=1000000.0):
    """A Qwen2_5_VLConfig from text/vision dicts, with M-RoPE `sections`, in the rope keys of the
    installed transformers: 5 (rope_parameters), then 4 (rope_theta + rope_scaling)."""
    from transformers import Qwen2_5_VLConfig
    variants = [
        dict(rope_parameters={'rope_type': 'default', 'rope_theta': theta, 'mrope_section': sections}),
        dict(rope_theta=theta, rope_scaling={'type': 'mrope', 'mrope_section': sections}),
        dict(rope_theta=theta, rope_parameters={'rope_type': 'default', 'rope_theta': theta, 'mrope_section': sections}),
    ]
    errors = []
    for v in variants:
        try:
            return Qwen2_5_VLConfig(text_config=dict(text, **v), vision_config=vision, tie_word_embeddings=tied,
                                    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652)
        except Exception as e:
            errors.append(f'{list(v)}: {e}')
    raise RuntimeError('; '.join(errors))


def build_model(seed):
    """The random tiny Qwen2.5-VL in float32: default init (N(0, 0.02) weights), then every bias
    ~ N(0, 0.02) and every norm weight ~ U(0.8, 1.2). Seeds torch's global generator with `seed`."""
    import torch
    import transformers
    from transformers import Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    cfg = make_config(transformers)
    model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.float32)
    # Default init draws N(0, 0.02) weights and zero biases; give the q/k/v biases values too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.normal_(0.0, 0.02)
            elif 'norm' in name:
                p.uniform_(0.8, 1.2)
    return model


def convert_text_f32(gguf, hf_dir, vocab, out_gguf):
    """The vendored converter on hf_dir (text model, F32) with the vendored Qwen2 vocabulary. The
    vendored tree (and its gguf-py) must be on sys.path already; `gguf` is its module."""
    import convert_hf_to_gguf as conv
    from conversion import qwenvl
    tokens, types, merges, ids = vocab_from_gguf(gguf, vocab)

    def set_vocab(self):
        self.gguf_writer.add_tokenizer_model('gpt2')
        self.gguf_writer.add_tokenizer_pre('qwen2')
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_types(types)
        self.gguf_writer.add_token_merges(merges)
        self.gguf_writer.add_eos_token_id(ids['eos'])
        self.gguf_writer.add_bos_token_id(ids['bos'])
        self.gguf_writer.add_pad_token_id(ids['padding'])
    qwenvl.Qwen2VLModel.set_vocab = set_vocab
    sys.argv = ['convert_hf_to_gguf.py', hf_dir, '--outfile', out_gguf, '--outtype', 'f32']
    conv.main()
    return out_gguf


def reference_args():
    """The arguments every reference script takes: the vendored llama.cpp tree, our executable,
    the vocabulary GGUF and a work folder (a parser, so a script can add its own)."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--vendor', required=True)
    ap.add_argument('--exe', required=True)
    ap.add_argument('--vocab', required=True)
    ap.add_argument('--work', required=True)
    return ap


def prepare(args):
    """Makes the work folder and puts the vendored converter and gguf-py on the import path."""
    os.makedirs(args.work, exist_ok=True)
    sys.path.insert(0, args.vendor)
    sys.path.insert(1, os.path.join(args.vendor, 'gguf-py'))


def main():
    ap = reference_args()
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    prepare(args)
    stage = 'import'
    result = {'ok': False}
    t0 = time.time()
    try:
        import numpy as np
        import torch
        import transformers
        import gguf
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision('highest')
        result['transformers'] = transformers.__version__
        result['torch'] = torch.__version__

        stage = 'model'
        model = build_model(args.seed)
        hf_dir = os.path.join(args.work, 'hf')
        model.save_pretrained(hf_dir, safe_serialization=True)

        stage = 'convert'
        out_gguf = os.path.join(args.work, 'text-f32.gguf')
        convert_text_f32(gguf, hf_dir, args.vocab, out_gguf)

        stage = 'llama.cpp'
        g = torch.Generator().manual_seed(args.seed + 1)
        seq = torch.randint(0, 151643, (48,), generator=g).tolist()  # ordinary text tokens
        logits_file = os.path.join(args.work, 'llama-logits.bin')
        run = subprocess.run([args.exe, '--logits', out_gguf, '--tokens', ','.join(map(str, seq)), '--out', logits_file],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f'visplay_gpu_test --logits failed: {run.stdout[-500:]} {run.stderr[-1500:]}')
        ours = np.fromfile(logits_file, dtype=np.float32).reshape(len(seq), -1)

        stage = 'llama.cpp cpu'
        run = subprocess.run([args.exe, '--logits', out_gguf, '--tokens', ','.join(map(str, seq)), '--out', logits_file + '.cpu', '--cpu'],
                             capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f'visplay_gpu_test --logits --cpu failed: {run.stdout[-500:]} {run.stderr[-1500:]}')
        ours_cpu = np.fromfile(logits_file + '.cpu', dtype=np.float32).reshape(len(seq), -1)

        stage = 'transformers'
        ids_t = torch.tensor([seq])
        with torch.no_grad():
            model64 = model.to(torch.float64).eval()
            ref64 = model64(input_ids=ids_t, attention_mask=torch.ones_like(ids_t)).logits[0].cpu().numpy()
            model32 = model64.to(torch.float32).to('cuda')
            hf32 = model32(input_ids=ids_t.cuda(), attention_mask=torch.ones_like(ids_t).cuda()).logits[0].float().cpu().numpy()
        stage = 'compare'
        n = ours.shape[1]
        ref64, hf32 = ref64[:, :n], hf32[:, :n]

        def stats(x):
            d = np.abs(x.astype(np.float64) - ref64)
            return {'max_logit_diff': float(d.max()), 'mean_logit_diff': float(d.mean()),
                    'argmax_equal': bool((x.argmax(-1) == ref64.argmax(-1)).all())}
        result.update(tokens=len(seq), n_vocab=int(n), max_abs_logit=float(np.abs(ref64).max()),
                      tolerance={'cpu': TOL_CPU, 'gpu': TOL_GPU},
                      ours_gpu=stats(ours), ours_cpu=stats(ours_cpu), hf32_gpu=stats(hf32),
                      ours_gpu_vs_hf32=float(np.abs(ours.astype(np.float64) - hf32).max()))
        result['ok'] = result['ours_gpu']['max_logit_diff'] <= TOL_GPU and result['ours_cpu']['max_logit_diff'] <= TOL_CPU
    except BaseException as e:  # SystemExit from the converter included
        result.update(stage=stage, error=f'{type(e).__name__}: {e}'[:2000])
    result['seconds'] = round(time.time() - t0, 1)
    print(json.dumps(result))
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
