#!/usr/bin/env bash
# The device run of issue 8 (first part): everything prebuilt elsewhere (scripts/device/pack-gpu.sh),
# so the GPU machine, which has no Node.js, only runs tests and benchmarks. Run from the unpacked
# pack's root:  bash scripts/device/gpu-check.sh [OUT]   (OUT defaults to $OUT, else ./gpu-out)
#   1. the GRPO kernels: visplay_kernels_test --require-cuda, visplay_kernels_bench
#   2. visplay_gpu_test --require-gpu: rollouts on the GPU against the CPU (tiny model, F32)
#   3. visplay_gpu_bench with llama-batched-bench (CUDA build, -ngl 99) as the peer, same run
#   4. if time is left: the transformers reference (hf_reference.py), text-only logits
# Every step has its own time limit and a failure does not stop the next; the summary is printed last.
# $OUT gets at most 8 files (what the device tool brings back): log, env and one per step.
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

# GPU_CHECK_STEPS: the steps to run (default all), e.g. "gpu_test gpu_bench" for a rerun.
SUMMARY=""
STEPS=${GPU_CHECK_STEPS:-kernels_test kernels_bench gpu_test gpu_bench gpu_bench_greedy hf_reference}
step() {  # step NAME LIMIT_S OUTFILE CMD...
  local name=$1 limit=$2 file=$3; shift 3
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  say "-- $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$file" 2>> "$LOG"
  local rc=$?
  say "   $name: exit $rc"
  SUMMARY="$SUMMARY$name $rc"$'\n'
}

step kernels_test 60 "$OUT/kernels_test.txt" "$BIN/visplay_kernels_test" --require-cuda
step kernels_bench 90 "$OUT/kernels_bench.txt" "$BIN/visplay_kernels_bench" --repeats 10
step gpu_test 120 "$OUT/gpu_test.json" "$BIN/visplay_gpu_test" --require-gpu --vocab "$VOCAB" --dir /tmp/visplay-gpu-test
step gpu_bench 180 "$OUT/gpu_bench.txt" "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 8 --dir /tmp/visplay-gpu-bench
step gpu_bench_greedy 180 "$OUT/gpu_bench_greedy.txt" "$BIN/visplay_gpu_bench" --batched-bench "$BIN/llama-batched-bench" \
  --vocab "$VOCAB" --repeats 5 --threads 8 --temperature 0 --dir /tmp/visplay-gpu-bench
if [ "$(elapsed)" -lt "${HF_DEADLINE_S:-300}" ] && [ -f "$HERE/vendor/convert_hf_to_gguf.py" ]; then
  step hf_reference 150 "$OUT/hf_reference.json" env PYTHONUNBUFFERED=1 "$PY" "$HERE/scripts/device/hf_reference.py" \
    --vendor "$HERE/vendor" --exe "$BIN/visplay_gpu_test" --vocab "$VOCAB" --work /tmp/visplay-hf
else
  say "-- hf_reference skipped: $(elapsed)s used (deadline ${HF_DEADLINE_S:-300}s)"
fi

say "== summary"
printf '%s' "$SUMMARY" | tee -a "$LOG"
grep -E '^(cuda|cpu):' "$OUT/kernels_test.txt" 2>/dev/null
cat "$OUT/kernels_bench.txt" 2>/dev/null
cat "$OUT/gpu_test.json" 2>/dev/null
head -n 7 "$OUT/gpu_bench.txt" "$OUT/gpu_bench_greedy.txt" 2>/dev/null
cat "$OUT/hf_reference.json" 2>/dev/null
say "done"
