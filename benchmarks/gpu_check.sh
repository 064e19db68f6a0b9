#!/usr/bin/env bash
# The GPU rows of issues 2 and 5 on a lent device machine (H100/H200, whose image has jax,
# flax, optax, orbax-checkpoint and torch but reaches no network), each step of
# benchmarks/gpu_check.py under its own time limit.
#
#   bash benchmarks/gpu_check.sh [STEP ...]   STEP: env augment train train_bf16 loop generate
#                                              variants (default: all, in that order of need)
# First, on the development machine:
#   bash benchmarks/gpu_wheels.sh             # wheels of what the image lacks, into .whl/
# Then with the device tool, two calls on the same warm machine; each step's limit below is a
# ceiling (torch.compile's first compiles dominate), and together they exceed a 15-minute
# device budget, so the second call goes as far as the time left allows:
#   command "bash benchmarks/gpu_check.sh env augment train", carry [".whl"], timeout_s 560
#   command "bash benchmarks/gpu_check.sh train_bf16 loop generate variants", carry [".whl"],
#   timeout_s 590 or what the budget has left
# $OUT receives gpu.jsonl (each train config's, augment shape's and generate phase's rows as
# soon as they are measured, so a step cut short still returns what it measured), gpu.log and
# one chart per suite. JAX takes 45 % of the GPU's memory, leaving the rest to the PyTorch
# peers in the same process. QUICK=1 runs the small sweeps, to check this script on a CPU.
set -u -o pipefail
OUT=${OUT:-/tmp/ganaug_gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/ganaug_site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/ganaug_site"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
declare -A LIMIT=([env]=60 [augment]=120 [train]=300 [train_bf16]=220 [loop]=150 [generate]=60
                  [variants]=150)
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env augment train train_bf16 loop generate variants)
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
failed=0
for step in "${steps[@]}"; do
  limit=${LIMIT[$step]:-}
  [ -z "$limit" ] && { echo "unknown step '$step'; steps: ${!LIMIT[*]}"; exit 2; }
  echo "=== $step: limit ${limit} s, started $(date -u +%H:%M:%S)" | tee -a "$OUT/gpu.log"
  start=$SECONDS
  # the JSON lines go to gpu.jsonl and the log; the reply shows the tables
  timeout -k 15 "$limit" python3 benchmarks/gpu_check.py "$step" --out "$OUT" "${quick[@]}" 2>&1 \
    | tee -a "$OUT/gpu.log" | grep -v '^{'
  rc=${PIPESTATUS[0]}
  echo "=== $step: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/gpu.log"
  [ "$rc" -ne 0 ] && failed=1
  [ "$step" = env ] && [ "$rc" -ne 0 ] && exit 1  # no GPU in sight: spend no device time
done
exit $failed
