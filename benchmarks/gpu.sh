#!/usr/bin/env bash
# The GPU benchmark: one script, under 8 minutes on one GPU.
#
# Records, for every registered method, bf16 + channels_last images/s of the full path and
# of the model-only step, their ratio, the peak CUDA memory and how many times per step the
# host waits for the device (torch's sync debug mode; 0 expected), with --compile off and on;
# then SimCLR epochs per minute on a CIFAR-size in-memory set (50k synthetic 32 px images,
# ResNet-18 with the CIFAR stem, batch 512), eager and compiled (max-autotune); and the
# augmentation alone, fused against kornia (images/s and tensor operations per call).
#
#   bash benchmarks/gpu.sh              # on a GPU; prints Markdown tables for RESULTS.md
#   bash benchmarks/gpu.sh --dry        # tiny sizes on the CPU, so the script cannot rot
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if [[ "${1:-}" == "--dry" ]]; then
  DEVICE=cpu PRECISION=fp32 BACKBONE=small_resnet10 SIZE=16 BATCH=8 BLOCK=2 ROUNDS=1
  IMAGES=64 EBATCH=16 ESTEPS=3 EWARM=1 METHODS="simclr" COMPILE_RUNS="off"
  AUG_RUNS="8:16" AUG_ITERS=2 AUG_ROUNDS=1
else
  DEVICE=cuda PRECISION=bf16 BACKBONE=small_resnet18 SIZE=32 BATCH=256 BLOCK=12 ROUNDS=2
  IMAGES=50000 EBATCH=512 ESTEPS=60 EWARM=10 METHODS="" COMPILE_RUNS="off on"
  AUG_RUNS="512:32 256:96 64:224" AUG_ITERS=20 AUG_ROUNDS=3
  $PY -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
fi

for c in $COMPILE_RUNS; do
  flag=(); [[ $c == on ]] && flag=(--compile)
  echo "## methods, compile $c"
  # shellcheck disable=SC2086
  $PY benchmarks/train_throughput.py $METHODS --device $DEVICE --precision $PRECISION \
    --backbone $BACKBONE --image-size $SIZE --batch-size $BATCH --block $BLOCK \
    --rounds $ROUNDS "${flag[@]}"
done

echo "## SimCLR epochs per minute, CIFAR-size in memory"
$PY benchmarks/epochs_per_minute.py --device $DEVICE --precision $PRECISION \
  --images $IMAGES --batch-size $EBATCH --steps $ESTEPS --warmup $EWARM --backbone $BACKBONE
if [[ "${1:-}" != "--dry" ]]; then
  $PY benchmarks/epochs_per_minute.py --device $DEVICE --precision $PRECISION \
    --images $IMAGES --batch-size $EBATCH --steps $ESTEPS --warmup $EWARM \
    --compile --compile-mode max-autotune
fi

for run in $AUG_RUNS; do
  echo "## augmentation, batch ${run%%:*}, ${run##*:} px"
  $PY benchmarks/augment_throughput.py --device $DEVICE --batch-size "${run%%:*}" \
    --image-size "${run##*:}" --iters $AUG_ITERS --rounds $AUG_ROUNDS
done
