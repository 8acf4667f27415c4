#!/usr/bin/env bash
# Fit the alpha-beta model (ringflow-bench --tune) for each transport and rank count, keep the output.
#
#   bash benchmarks/bench_tune.sh ["torch mpi shm"] ["2 4"]
#
# Each run writes the tune cache ($RINGFLOW_CACHE or ~/.cache/ringflow/tune-<kind>-n<N>-l<L>.json)
# that "auto" reads, and prints alpha (one ring step: Python + transport), beta, gamma and the
# built-in's fitted line: the numbers that explain where a Python ring can and cannot win.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSPORTS=${1:-"torch mpi shm"}
RANKS=${2:-"2 4"}
OUT=${OUT:-benchmarks/results}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# a private cache by default, so tuning for the record does not change what "auto" does elsewhere
export RINGFLOW_CACHE=${RINGFLOW_CACHE:-$OUT/tune-cache}
export PATH="$(dirname "$PY"):$PATH"
for tr in $TRANSPORTS; do
  for n in $RANKS; do
    echo "== tune $tr n=$n" >&2
    if [ "$tr" = torch ]; then
      timeout 900 torchrun --nproc_per_node="$n" --master_port=$((29700 + RANDOM % 200)) \
        -m ringflow.bench --transport torch --tune -n 10 -w 2 > "$OUT/tune-$tr-n$n.txt" 2>&1 || true
    else
      timeout 900 mpirun --oversubscribe -np "$n" "$PY" -m ringflow.bench --transport "$tr" \
        --tune -n 10 -w 2 > "$OUT/tune-$tr-n$n.txt" 2>&1 || true
    fi
  done
done
