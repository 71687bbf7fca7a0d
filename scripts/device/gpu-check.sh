#!/usr/bin/env bash
# The device run of issue 8: everything prebuilt elsewhere (scripts/device/pack-gpu.sh), so the GPU
# machine, which has no Node.js, only runs tests and benchmarks. Run from the unpacked pack's root:
#   bash scripts/device/gpu-check.sh [OUT]   (OUT defaults to $OUT, else ./gpu-out)
# Steps (GPU_CHECK_STEPS picks some; default: all but the rollout benches):
#   kernels_test      visplay_kernels_test --require-cuda: our GRPO kernels against their CPU references
#   kernels_bench     visplay_kernels_bench: their bandwidth against a device copy
#   train_test        visplay_train_test --require-gpu: the trainer on the GPU against the CPU trainer
#   gpu_test          visplay_gpu_test --require-gpu: rollouts on the GPU against the CPU (tiny model, F32)
#   peft_reference    peft_reference.py: our LoRA gradients of one GRPO step against PEFT + autograd
#   train_bench_tiny  visplay_train_test --bench tiny (F32) and its peer peft_bench.py --shape tiny
#   train_bench_3b    the same at Qwen2.5-VL-3B's shape: ours Q4_K (its products with the frozen weights
#                     in BF16, then with llama.cpp's kernels: --frozen-matmul llama), the peer bfloat16
#   train_profile_3b  one 3B step node by node (--profile): device time per op type
#   round_3b          visplay_train_test --bench 3b --round: a round's GPU work, peak device memory
#                     (round_3b_mb256, round_3b_mb256_release: smaller micro-batches, buffers freed)
#   gpu_bench, gpu_bench_greedy   rollouts against llama-batched-bench (CUDA build, -ngl 99)
#   gpu_bench_graphs, round_3b_graphs   the same with llama.cpp's CUDA graphs on (VISPLAY_CUDA_GRAPHS=1;
#                     off by default since they crashed the 3B round's rollouts, docs/gpu.md);
#                     gpu_bench_graphs16 with 16 sampling threads (both sides get --threads)
#   gpu_bench_3b, gpu_bench_3b_graphs   rollouts on the Qwen2.5-VL-3B-shaped Q4_K model that
#                     train_bench_3b writes (written here first if it is missing), graphs off / on
#   hf_reference      hf_reference.py: text-only logits against transformers
# Every step has its own time limit and a failure does not stop the next; the summary is printed last.
# $OUT gets three files (the device tool brings back at most 8): log.txt, env.txt and results.txt,
# where each step's stdout follows a line "== STEP exit RC seconds S".
set -u
HERE=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-${OUT:-$HERE/gpu-out}}
mkdir -p "$OUT"
LOG=$OUT/log.txt
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$LOG"; }

# cuBLAS (and the CUDA runtime) from the Python venv's NVIDIA wheels, else the system's.
PY=${PYTHON:-python3}
NVLIB=$("$PY" - <<'PYEOF'
import os, sys
seen = []
for p in sys.path:
    for sub in ('nvidia/cu13/lib', 'nvidia/cublas/lib', 'nvidia/cuda_runtime/lib'):
        d = os.path.join(p, sub)
        if os.path.isdir(d) and d not in seen:
            seen.append(d)
print(':'.join(seen))
PYEOF
)
[ -n "$NVLIB" ] && export LD_LIBRARY_PATH=$NVLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -d /usr/local/cuda/lib64 ] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
BIN=$HERE/bin
VOCAB=$HERE/vocab/ggml-vocab-qwen2.gguf
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  for b in "$BIN"/*; do echo "== ldd $(basename "$b")"; ldd "$b" | grep -E 'not found|cublas|cudart|cuda\.so' ; done
  uname -a; nproc
} > "$OUT/env.txt" 2>&1
say "env: $(head -2 "$OUT/env.txt" | tail -1)"

# GPU_CHECK_STEPS: the steps to run, e.g. "train_test gpu_test" for a rerun.
SUMMARY=""
STEPS=${GPU_CHECK_STEPS:-kernels_test train_test train_bench_tiny train_bench_3b round_3b round_3b_mb256 round_3b_mb256_release peft_reference gpu_test kernels_bench}
RESULTS=$OUT/results.txt
: > "$RESULTS"
# step NAME LIMIT_S CMD...: stdout to results.txt, stderr to the log. A name may be used by several
# commands (ours and its peer); each one's output gets its own header.
# DEADLINE_S (seconds from the start, 0: none): no step starts after it and none runs past it, so
# the results come back inside the device tool's time limit.
DEADLINE_S=${DEADLINE_S:-0}
step() {
  local name=$1 limit=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  if [ "$DEADLINE_S" -gt 0 ]; then
    local left=$(( DEADLINE_S - $(elapsed) ))
    if [ "$left" -lt 10 ]; then
      say "-- $name skipped: the deadline (${DEADLINE_S}s) is reached"
      SUMMARY="$SUMMARY$name skipped"$'\n'
      return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  say "-- $name (limit ${limit}s)"
  local t0 tmp rc
  t0=$(date +%s); tmp=$(mktemp)
  timeout "$limit" "$@" > "$tmp" 2>> "$LOG"
  rc=$?
  { echo "== $name exit $rc seconds $(( $(date +%s) - t0 ))"; cat "$tmp"; } >> "$RESULTS"
  rm -f "$tmp"
  say "   $name: exit $rc"
  SUMMARY="$SUMMARY$name $rc"$'\n'
}

PYU="env PYTHONUNBUFFERED=1 $PY"
step kernels_test 60 "$BIN/visplay_kernels_test" --require-cuda
step train_test 150 "$BIN/visplay_train_test" --require-gpu --vocab "$VOCAB" --dir /tmp/visplay-train-test
# The train-step benchmark: ours and the peer on the same shape and batch (2 groups x 8 samples,
# prompts of 256 tokens, responses of 64, LoRA rank 16 on the 7 modules, AdamW, no KL), same run.
BATCH_ARGS="--groups 2 --samples 8 --prompt 256 --response 64 --rank 16"
step train_bench_tiny 120 "$BIN/visplay_train_test" --bench tiny --type f32 $BATCH_ARGS --steps 5 --warmup 2 --vocab "$VOCAB" --dir /tmp/visplay-bench
step train_bench_tiny 120 $PYU "$HERE/scripts/device/peft_bench.py" --shape tiny --dtype float32 --tf32 $BATCH_ARGS --steps 5 --warmup 2
step train_bench_3b 240 "$BIN/visplay_train_test" --bench 3b --type q4_k $BATCH_ARGS --steps 3 --warmup 1 --vocab "$VOCAB" --dir /tmp/visplay-bench
step train_bench_3b 120 "$BIN/visplay_train_test" --bench 3b --type q4_k $BATCH_ARGS --steps 3 --warmup 1 --frozen-matmul llama --vocab "$VOCAB" --dir /tmp/visplay-bench
step train_bench_3b 180 $PYU "$HERE/scripts/device/peft_bench.py" --shape 3b --dtype bfloat16 $BATCH_ARGS --steps 3 --warmup 1
step train_profile_3b 120 "$BIN/visplay_train_test" --bench 3b --type q4_k $BATCH_ARGS --steps 1 --warmup 1 --profile --vocab "$VOCAB" --dir /tmp/visplay-bench
# A round's GPU work at the 3B shape (Q4_K, its F16 ViT), peak memory and where it goes: micro-batches
# of 512 rows; of 256; of 256 with the trainer's buffers freed between steps (PolicyOptions::release_buffers).
ROUND_ARGS="--bench 3b --type q4_k $BATCH_ARGS --steps 1 --warmup 1 --round --vocab $VOCAB --dir /tmp/visplay-bench"
step round_3b 240 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 512
step round_3b_mb256 240 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 256
step round_3b_mb256_release 240 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 256 --release
# Diagnosis of a failing round: every kernel synchronous (its error names its op), no CUDA graphs;
# and the round without the live LoRA in the rollouts.
step round_3b_diag 240 env CUDA_LAUNCH_BLOCKING=1 GGML_CUDA_DISABLE_GRAPHS=1 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 512
step round_3b_nolora 240 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 512 --round-lora 0
step peft_reference 180 $PYU "$HERE/scripts/device/peft_reference.py" --vendor "$HERE/vendor" \
  --exe "$BIN/visplay_train_test" --vocab "$VOCAB" --work /tmp/visplay-peft
step gpu_test 120 "$BIN/visplay_gpu_test" --require-gpu --vocab "$VOCAB" --dir /tmp/visplay-gpu-test
step gpu_bench 180 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 8 --dir /tmp/visplay-gpu-bench
step gpu_bench_graphs 180 env VISPLAY_CUDA_GRAPHS=1 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 8 --dir /tmp/visplay-gpu-bench
step gpu_bench_graphs16 180 env VISPLAY_CUDA_GRAPHS=1 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 16 --dir /tmp/visplay-gpu-bench
step round_3b_graphs 240 env VISPLAY_CUDA_GRAPHS=1 "$BIN/visplay_train_test" $ROUND_ARGS --micro-batch 256
# The 3B-shaped model of train_bench_3b: written by a one-step bench when that step did not run.
M3B=/tmp/visplay-bench/bench-3b-q4_k.gguf P3B=/tmp/visplay-bench/bench-3b-mmproj.gguf
[ -f "$M3B" ] || step gpu_bench_3b 150 "$BIN/visplay_train_test" --bench 3b --type q4_k $BATCH_ARGS --steps 1 --warmup 0 --vocab "$VOCAB" --dir /tmp/visplay-bench
step gpu_bench_3b 240 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --model "$M3B" --mmproj "$P3B" --repeats 3 --threads 8
step gpu_bench_3b_graphs 240 env VISPLAY_CUDA_GRAPHS=1 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --model "$M3B" --mmproj "$P3B" --repeats 3 --threads 8
step kernels_bench 90 "$BIN/visplay_kernels_bench" --repeats 10
step gpu_bench_greedy 180 "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 8 --temperature 0 --dir /tmp/visplay-gpu-bench
step hf_reference 150 $PYU "$HERE/scripts/device/hf_reference.py" \
  --vendor "$HERE/vendor" --exe "$BIN/visplay_gpu_test" --vocab "$VOCAB" --work /tmp/visplay-hf

say "== summary"
printf '%s' "$SUMMARY" | tee -a "$LOG"
cat "$RESULTS"
say "done"
