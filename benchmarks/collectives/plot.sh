#!/usr/bin/env bash
# The README's plots: all-reduce busbw against size, ringflow's algorithms beside the built-ins,
# with the tuned model's predictions (dashed). Run benchmarks/collectives/matrix.sh first (it tunes).
#
#   bash benchmarks/collectives/plot.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
R=benchmarks/results
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PATH="$(dirname "$PY"):$PATH" RINGFLOW_CACHE=${RINGFLOW_CACHE:-$R/raw/cache}
timeout 900 torchrun --nproc_per_node=2 --master_port=$((29700 + RANDOM % 200)) -m ringflow.bench \
  --transport torch -b 4K -e 128M -f 4 -n 5 -w 1 --modes ip --algorithm ring,rd,staged,auto \
  --json $R/plot_all_reduce_gloo_n2.json --plot $R/all_reduce_gloo_n2.png > $R/plot_all_reduce_gloo_n2.txt 2>&1
timeout 900 mpirun --oversubscribe -np 2 "$PY" -m ringflow.bench --transport shm --builtin mpi,torch \
  -b 4K -e 128M -f 4 -n 5 -w 1 --modes ip --algorithm ring,rd,staged,auto \
  --json $R/plot_all_reduce_shm_n2.json --plot $R/all_reduce_shm_n2.png > $R/plot_all_reduce_shm_n2.txt 2>&1
