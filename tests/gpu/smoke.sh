#!/usr/bin/env bash
# GPU smoke test, at most 5 minutes on one CUDA GPU (never run on the CPU-only dev machines):
#   1. NCCL init as a world of one and every collective verb on CUDA tensors;
#   2. the ring on CUDA tensors across 4 thread-ranks (checked against one sum);
#   3. DiT-B/2 training throughput (images/s, model FLOP utilisation) in bf16;
#   4. the user's command, `torchrun -m ringflow.train`, on CUDA (NCCL transport, bf16 autocast).
# Results: $RESULTS/gpu_smoke.json and $RESULTS/gpu_train/ (default benchmarks/results).
#
#   bash tests/gpu/smoke.sh                 # RESULTS=/some/dir bash tests/gpu/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-benchmarks/results}
PY=${PY:-python}
mkdir -p "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 200 "$PY" tests/gpu/smoke.py --out "$RESULTS/gpu_smoke.json" --seconds 40
rm -rf "$RESULTS/gpu_train"
timeout 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m ringflow.train \
    --transport torch --steps 300 --batch-size 256 --sample-every 0 --ckpt-every 300 \
    --log-every 50 --progress false --out "$RESULTS/gpu_train"
tail -n 1 "$RESULTS/gpu_train/metrics.jsonl"
echo "gpu_smoke: done; see $RESULTS/gpu_smoke.json and $RESULTS/gpu_train/samples/final.png"
