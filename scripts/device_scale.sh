#!/bin/bash
# Issue 41's measurements on a lent GPU machine (the `device` tool), in the order of their importance, each
# written under $OUT as soon as it is done so a call stopped at its limit brings back what finished:
#   1. data-parallel scaling on the GPU: 1 and 2 torchrun processes (each takes cuda:LOCAL_RANK, so 2
#      needs 2 GPUs: on a one-GPU machine the failure is recorded, not hidden);
#   2. data-parallel scaling on the machine's CPUs: 1, 2, 4 processes of 4 threads (gloo);
#   3. the three precisions on the GPU (`nextclick speed --precision`).
#
#   scripts/device_queue.sh prepare          here: the splits, the entmax wheel, the clean HEAD
#   device run, carry [".devdata", ".whl", ".devcommit"], command: bash scripts/device_scale.sh
#   then copy FILES_AT/scale/* to results/scale/ here and commit.
# DEVICE=cpu PYTHON=.venv/bin/python QUICK=1: a dry run of the plumbing here.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-python3} device=${DEVICE:-cuda} batches=${QUICK:+4}
batches=${batches:-40}
OUT=${OUT:-/tmp/device-scale}
mkdir -p "$OUT/scale"
$python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH="$PWD/src:/tmp/site" NEXTCLICK_GIT_COMMIT
NEXTCLICK_GIT_COMMIT=$(cat .devcommit 2>/dev/null || git rev-parse HEAD)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1 | tr ' ' '-')
tag=${gpu:-$device}
echo "$(date -u +%T) on $tag, commit $NEXTCLICK_GIT_COMMIT, $(nproc) cores"

echo "$(date -u +%T) 1. processes on $device"
$python scripts/scale_processes.py --models narm dsan --processes 1 2 --threads 4 --device "$device" \
    --data-dir .devdata --max-batches "$batches" --timeout 120 --out "$OUT/scale/processes/$tag-$device.json"

echo "$(date -u +%T) 2. processes on the CPU"
$python scripts/scale_processes.py --models narm dsan --processes 1 2 4 --threads 4 --device cpu \
    --data-dir .devdata --max-batches "$batches" --timeout 150 --out "$OUT/scale/processes/$tag-host-cpu.json"

echo "$(date -u +%T) 3. precisions on $device"
for model in dsan narm; do
  for precision in fp32 bf16-scores bf16; do
    $python -m nextclick.cli speed "$model" -d retailrocket --data-dir .devdata --device "$device" --threads 4 \
        --batches "$batches" --precision "$precision" --results-dir "$OUT/scale/precision/$tag" 2>&1 | tail -1
  done
done
echo "$(date -u +%T) done"
