#!/usr/bin/env bash
# The committed comparisons of benchmarks/RESULTS.md's quality section. Each command is
# resumable: rerunning it reuses the finished runs under its --out directory (delete a
# run directory, or the whole --out, to measure again). Afterwards:
#   python benchmarks/make_results.py     # regenerates the quality section of RESULTS.md
# On a machine shared with other jobs, OMP_NUM_THREADS=1 is several times faster (the
# recorded runs used it; see RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${SSLZOO_COMPARE_WORK:-benchmarks/compare}

# Per-method settings, all documented options, chosen from the data set's size (never
# from test accuracy): MoCo's queue and InstDisc's noise samples must be smaller than the
# 1,438 training digits (the methods warn otherwise); CPC's 7x7 grid needs >= 32 px, so a
# 3x3 grid with 2 prediction steps at 16 px.
SMALL_DATA_SETS=(--set moco.queue_size=1024 --set instdisc.loss=softmax
                 --set cpc.grid=3 --set cpc.prediction_steps=2)
ALL=rotation,jigsaw,inpainting,colorization,instdisc,invaspread,simclr,moco,cpc

# Digits: 9 methods x 3 seeds (+ random init), one CPU thread.
sslzoo compare --data digits --methods "$ALL" --backbone small_resnet10 --image-size 16 \
    --budget-steps 40 --batch-size 32 --seeds 0,1,2 --precision fp32 "${SMALL_DATA_SETS[@]}" \
    --out "$WORK/digits"

# The same with the kornia augmentation backend (digits-kornia, the check that the fused
# default changes no accuracy beyond noise).
KORNIA=()
for m in ${ALL//,/ }; do KORNIA+=(--set "$m.aug.backend=kornia"); done
sslzoo compare --data digits --methods "$ALL" --backbone small_resnet10 --image-size 16 \
    --budget-steps 40 --batch-size 32 --seeds 0,1,2 --precision fp32 "${SMALL_DATA_SETS[@]}" \
    "${KORNIA[@]}" --out "$WORK/digits-kornia"

# The same with --precision bf16 (CPU with AVX512-BF16 or AMX), the check that bf16 keeps
# fp32's accuracy. Rerun after convolutions whose input is no larger than their kernel
# moved to fp32 under CPU bf16 (sslzoo.cpu.convert_small_input_convs); before that, jigsaw
# on 4 px tiles got weight gradients from uninitialised memory.
sslzoo compare --data digits --methods "$ALL" --backbone small_resnet10 --image-size 16 \
    --budget-steps 40 --batch-size 32 --seeds 0,1,2 --precision bf16 "${SMALL_DATA_SETS[@]}" \
    --out "$WORK/digits-bf16"

# Colour photographs (pip install 'sslzoo[photos]'): 1,200 / 400 crops of ten photos,
# test crops from regions no training crop touches; 32 px so that jigsaw tiles, inpainting
# masks and CPC's 7x7 grid have texture to work with; timm's resnet10t (strided stem), whose
# steps cost a sixteenth of the small-image stem's at the same size.
sslzoo compare --data photos --methods "$ALL" --backbone resnet10t --image-size 32 \
    --budget-steps 100 --batch-size 32 --seeds 0,1,2 --precision fp32 \
    --set moco.queue_size=1024 --set instdisc.loss=softmax \
    --out "$WORK/photos"

# Jigsaw alone at 64 px, where its tiles are 19 px rather than 9 px.
sslzoo compare --data photos --methods jigsaw --backbone resnet10t --image-size 64 \
    --budget-steps 100 --batch-size 32 --seeds 0,1,2 --precision fp32 \
    --out "$WORK/photos-jigsaw-64"
