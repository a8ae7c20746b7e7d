#!/usr/bin/env bash
# A stronger shapes model on a lent CUDA machine, in one command (#27's fourth lever):
#
#   bash benchmarks/gpu_shapes_model.sh      # from the repository root; figures and model into $OUT
#
# 1. Train: the shipped model's UNet and VAE with a deeper text encoder (TEXT_LAYERS, default 6, against the
#    shipped 2) trained from scratch beside them, on varied drawings, batch 128, constant learning rate 5e-4 with
#    the EMA, the binding loss from the first step; time-boxed (TRAIN_MIN minutes, default 4). Twelve processes
#    render the batches ahead of the GPU (`train --data-workers`).
# 2. The reliability benchmark's test split on the new model with the default preset (steady), float32 as on the
#    CPU, 16 one-thread shards sharing the card, cut at the command's deadline (RUN_S seconds after the start,
#    default 560): the drawings that finished both runs count, the rest resume on any machine.
# 3. Everything (the exported model, the training log and losses, the shards) into one tarball in $OUT, split in
#    15 MiB pieces (the device tool returns at most 16 MiB a file): `cat bundle.tgz.* | tar xz`.
#
# The caption gate (`evaluate`) and the merge of the shards run afterwards on the CPU.
set -u
OUT=${OUT:-/tmp/gpu_shapes}
WORK=${WORK:-/tmp/gpu_shapes_work}
START=$(date +%s)
RUN_S=${RUN_S:-560}
mkdir -p "$OUT" "$WORK"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
MODEL=$WORK/model
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$WORK/nvidia-smi.txt"
$PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__)" | tee "$WORK/versions.txt"

echo "== 1. train"
t0=$(date +%s)
$PY -m originality.experiments.train --init-from assets/shapes-model --init-parts unet vae \
  --text-layers "${TEXT_LAYERS:-6}" --steps 1000000 --max-minutes "${TRAIN_MIN:-4}" --batch 128 --lr 5e-4 \
  --warmup 200 --seed 3 --data-workers 12 --device cuda --checkpoint-minutes 1000 \
  --out "$MODEL" --checkpoint-dir "$WORK/ckpt" > "$WORK/train.log" 2>&1
echo "train: rc $? in $(( $(date +%s) - t0 )) s"
grep -E "denoiser step|time box|saved" "$WORK/train.log" | awk 'NR % 40 == 1' | tail -12
grep -E "time box|saved" "$WORK/train.log"

echo "== 2. reliability, test split, steady, float32"
t0=$(date +%s)
left=$(( RUN_S - (t0 - START) ))
if [ -f "$MODEL/model_index.json" ] && [ "$left" -gt 60 ]; then
  for k in $(seq 1 16); do
    timeout "$left" $PY -m originality.experiments.reliability --model "$MODEL" --preset steady --split test \
      --device cuda --dtype float32 --threads 1 --shard "$k/16" --out "$WORK/reliability" \
      > "$WORK/reliability-$k.log" 2>&1 &
  done
  wait
  echo "reliability: $(( $(date +%s) - t0 )) s (box $left s)"
  grep -h -E "run [01] ->" "$WORK"/reliability-*.log | tail -40
fi

echo "== 3. bundle"
(cd "$WORK" && tar czf - model ckpt/losses.csv train.log nvidia-smi.txt versions.txt reliability reliability-*.log \
  2> /dev/null) | split -b 15m - "$OUT/bundle.tgz."
ls -la "$OUT"
