#!/usr/bin/env bash
# The GPU measurements the README still lacks, as one prepared run for a lent GPU (the `device` tool).
#
# Prepare here, once (needs the package registries):   make gpu-wheels      # -> .whl/ (git-ignored)
# Then, through the device tool, with carry [".whl"] and a timeout that leaves time to rerun:
#     bash benchmarks/gpu_evidence.sh
# Everything lands in $OUT (the device tool's output folder; benchmarks/runs/gpu elsewhere):
#   block.txt           benchmarks/block.py --device cuda       (fused vs explicit block, bf16, batch 16)
#   model.txt           benchmarks/model.py                     (yolov8n vs -nl train step at 640x32, 1280x8)
#   small_objects.*     benchmarks/small_objects.py --device 0  (the evidence table of issue 10; AMP on, as Ultralytics
#                       trains on a GPU) and every run's results.csv (loss curves: did AMP stay finite?)
#   cue_attention.md    benchmarks/cue_attention.py on its Non-local runs (does the cue reach the targets' cells?)
# STAGES picks stages (default "block model evidence"); SO_ARGS the small_objects arguments; SO_BUDGET its
# time limit in seconds. Finished runs are reused, so a second call on a still-warm machine continues.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/runs/gpu}
mkdir -p "$OUT"
STAGES=${STAGES:-"block model evidence"}
# the README's CPU rows on the positive control (fine-tune protocol) at 5x the images and 2x the epochs: the
# paper's identity init (nl-g0-r), gamma 0.3 with random maps, the shipped model (nl: gamma 0.3, uniform maps,
# P3 keys sub-sampled), gamma 0.1 (round 6: no neutral cost on the CPU, but slower to learn), the
# full-resolution P3 block, the GC block and the local control, 3 seeds as on the CPU; runs finish in order
# (seed by seed), and a second call continues where the budget stopped the first. Then: --tasks farcue-near,neutral
SO_ARGS=${SO_ARGS:-"--preset full --tasks farcue --protocols finetune --arms baseline,nl-g0-r,nl-g0.3-r,nl,nl-g0.1,nl-full,gc-g1,local-g0.3 --seeds 3 --batch 32 --workers 8"}
SO_BUDGET=${SO_BUDGET:-420}

if ! python3 -c "import ultralytics" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_evidence: Ultralytics is not installed and .whl/ holds no wheels: run 'make gpu-wheels' here and carry .whl" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PWD:$PWD/benchmarks/gpu_stub${PYTHONPATH:+:$PYTHONPATH}"
fi
export YOLO_OFFLINE=1 YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-/tmp/yolo-config} MPLBACKEND=Agg PYTHONUNBUFFERED=1
python3 -c "import torch, ultralytics, yolo_nonlocal; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ultralytics', ultralytics.__version__, 'yolo_nonlocal', yolo_nonlocal.__version__)" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee -a "$OUT/versions.txt"

rc=0
for stage in $STAGES; do
  start=$(date +%s)
  case $stage in
    block) python3 benchmarks/block.py --device cuda 2>&1 | tee "$OUT/block.txt" || rc=1 ;;
    model) python3 benchmarks/model.py --device cuda 2>&1 | tee "$OUT/model.txt" || rc=1 ;;
    evidence)
      # shellcheck disable=SC2086
      timeout "$SO_BUDGET" python3 benchmarks/small_objects.py --device 0 --out benchmarks/runs/small_objects_gpu $SO_ARGS \
        > "$OUT/small_objects.log" 2>&1 || rc=1
      tail -n 25 "$OUT/small_objects.log"
      cp benchmarks/runs/small_objects_gpu/small_objects.md benchmarks/runs/small_objects_gpu/small_objects.json "$OUT/" 2>/dev/null
      (cd benchmarks/runs/small_objects_gpu && find . -name results.csv -path "*runs*" | while read -r f; do
        mkdir -p "$OUT/results/$(dirname "$f")"; cp "$f" "$OUT/results/$f"; done)
      # does the cue reach the targets through the blocks? (benchmarks/cue_attention.py; seconds)
      find benchmarks/runs/small_objects_gpu/runs/farcue -maxdepth 1 -name "nl*" -type d 2>/dev/null | sort \
        | xargs -r python3 benchmarks/cue_attention.py --images 40 > "$OUT/cue_attention.md" 2>&1 ;;
    *) echo "gpu_evidence: unknown stage '$stage' (block, model, evidence)" >&2; exit 2 ;;
  esac
  echo "gpu_evidence: stage $stage took $(( $(date +%s) - start )) s" | tee -a "$OUT/versions.txt"
done
exit $rc
