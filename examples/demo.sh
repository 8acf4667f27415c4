#!/usr/bin/env bash
# `make demo`: train a small class-conditional DiT with rectified flow on the digits that ship
# with scikit-learn, on 2 processes under torchrun, for a few minutes of CPU; then say where the
# sample grid and the loss curve are. Extra arguments go to ringflow.train (e.g. --steps 300).
#
#   bash examples/demo.sh                      # OUT=runs/demo-digits-dit by default
#   NPROC=4 OUT=runs/x bash examples/demo.sh --steps 3000
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo-digits-dit}
NPROC=${NPROC:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$OUT"                                   # a demo starts fresh (training resumes otherwise)
start=$(date +%s)
set -x
torchrun --standalone --nproc_per_node="$NPROC" -m ringflow.train \
    --model dit --objective rectified_flow --data digits \
    --steps 800 --sample-every 200 --ckpt-every 200 --out "$OUT" "$@"
{ set +x; } 2>/dev/null
echo
echo "demo finished in $(( $(date +%s) - start )) s on $NPROC processes"
echo "  samples (one row per digit class, EMA weights, CFG 2): $OUT/samples/final.png"
echo "  loss curve:                                            $OUT/loss.png"
echo "  metrics per step: $OUT/metrics.jsonl   checkpoints: $OUT/checkpoints/"
