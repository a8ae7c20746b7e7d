#!/usr/bin/env bash
# The GPU checks of one lent CUDA machine, in one command (figures into $OUT, default /tmp/gpu_check):
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#
# 1. benchmarks/gpu_bench.py: the SD 1.4 architecture's rates (random weights) in bfloat16 and float16, inversion
#    batches 8 to 64 (does one UNet batch of several lengths pay on a GPU?), generation; --update-costs rewrites
#    originality/gpu_costs.json with the default dtype's rates (a copy lands in $OUT).
# 2. benchmarks/rehearsal.py --build-only: the Space's model cache with random weights under the real ids.
# 3. The CLI as a user runs it on that cache (HF_HUB_OFFLINE=1) with the default preset at its worst case, the one
#    a ZeroGPU reservation is sized for: random weights never pass, so every length runs both restarts and their
#    selection images; --reconstructions 96 (the sequential cap, max_reconstructions) and --always-check-edits true
#    do the rest of the work a length can do. report.json holds each length's stage timings; GPU memory is sampled
#    each second. GPU_CHECK_LENGTHS (default 5) lengths, time-boxed by GPU_CHECK_RUN_S (default 360 s): a cut run
#    still leaves its log.
#
# Packages the machine lacks travel as wheels in .whl/ (docs/deployment.md says which); the SD v1.4 configs from
# $ORIGINALITY_SD14_CONFIGS (default .gpu/sd-v1-4-configs, a copy of ../shared/sd-v1-4-configs).
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 ORIGINALITY_SD14_CONFIGS=${ORIGINALITY_SD14_CONFIGS:-.gpu/sd-v1-4-configs}
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__, 'cuda', torch.version.cuda)" | tee "$OUT/versions.txt"

echo "== 1. rates"
t0=$(date +%s)
timeout "${GPU_CHECK_BENCH_S:-200}" $PY benchmarks/gpu_bench.py --configs "$ORIGINALITY_SD14_CONFIGS" \
  --batches ${GPU_CHECK_BATCHES:-8 16 32 64} --update-costs > "$OUT/gpu_bench.json" 2> >(tee "$OUT/gpu_bench.log" >&2)
echo "rates: rc $? in $(( $(date +%s) - t0 )) s"
cp originality/gpu_costs.json "$OUT/gpu_costs.json"

echo "== 2. the Space's cache (random weights)"
t0=$(date +%s)
timeout "${GPU_CHECK_CACHE_S:-240}" $PY benchmarks/rehearsal.py --configs "$ORIGINALITY_SD14_CONFIGS" \
  --cache /tmp/rehearsal-cache --build-only 2>&1 | tail -5
echo "cache: rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"

echo "== 3. the CLI, default preset, all five lengths"
t0=$(date +%s)
nvidia-smi --query-gpu=memory.used --format=csv,noheader -lms 1000 > "$OUT/gpu_memory.log" &
SAMPLER=$!
HF_HOME=/tmp/rehearsal-cache/hf ORIGINALITY_CACHE=/tmp/rehearsal-cache/originality HF_HUB_OFFLINE=1 \
  timeout "${GPU_CHECK_RUN_S:-360}" $PY -m originality analyze assets/examples/sd_house.png \
  --model CompVis/stable-diffusion-v1-4 --device cuda --reconstructions 96 --always-check-edits true \
  --max-tokens "${GPU_CHECK_LENGTHS:-5}" \
  --out "$OUT/run" 2>&1 | tr '\r' '\n' | grep -v "^\s*$" > "$OUT/cli.log"
echo "cli: rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
kill $SAMPLER
grep -v "it/s\]\|s/it\]" "$OUT/cli.log" | tail -30
echo "peak GPU memory: $(sort -n "$OUT/gpu_memory.log" | tail -1)"
$PY - "$OUT/run/report.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
for t in r["results"]:
    print(f"m={t['num_tokens']}", {k: round(v, 1) for k, v in t["timings"].items()}, round(sum(t["timings"].values()), 1))
print("total_seconds", round(r["total_seconds"], 1), "label", r["label"])
PY
