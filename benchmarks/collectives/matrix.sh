#!/usr/bin/env bash
# The collectives table of the README: ringflow vs the built-ins, every transport, 2 and 4 ranks.
#
#   bash benchmarks/collectives/matrix.sh [LAUNCHES] [TRANSPORTS] [RANKS] [COLLECTIVES]
#   bash benchmarks/collectives/matrix.sh 3 "torch mpi shm" "2 4" "all_reduce reduce_scatter all_gather"
#   .venv/bin/python benchmarks/collectives/summary.py benchmarks/results/raw > benchmarks/results/collectives.md
#
# Each launch is one process group running ringflow and the built-in interleaved (ratios are
# same-run); the summary takes medians over launches. shm runs under mpirun so that both
# MPI_Allreduce and gloo (torch.distributed, bootstrapped over MPI) are measured beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAUNCHES=${1:-2}
TRANSPORTS=${2:-"torch mpi shm"}
RANKS=${3:-"2 4"}
COLLECTIVES=${4:-"all_reduce reduce_scatter all_gather"}
OUT=${OUT:-benchmarks/results/raw}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PATH="$(dirname "$PY"):$PATH"

launch() {  # transport ranks -- bench args...
  local tr=$1 n=$2; shift 2
  case $tr in
    torch) timeout 900 torchrun --nproc_per_node="$n" --master_port=$((29700 + RANDOM % 200)) \
             -m ringflow.bench --transport torch "$@" ;;
    mpi)   timeout 900 mpirun --oversubscribe -np "$n" "$PY" -m ringflow.bench --transport mpi "$@" ;;
    shm)   timeout 900 mpirun --oversubscribe -np "$n" "$PY" -m ringflow.bench --transport shm \
             --builtin mpi,torch "$@" ;;
  esac
}

# auto's model comes from a tune of each transport and world size, cached under $OUT/cache
export RINGFLOW_CACHE=${RINGFLOW_CACHE:-$OUT/cache}
for tr in $TRANSPORTS; do
  for n in $RANKS; do
    [ -n "${SKIP_DONE:-}" ] && [ -s "$OUT/tune-$tr-n$n.txt" ] || \
    launch "$tr" "$n" --tune -n 20 -w 3 > "$OUT/tune-$tr-n$n.txt" 2>&1 || true
  done
done

for l in $(seq 1 "$LAUNCHES"); do
  for tr in $TRANSPORTS; do
    for n in $RANKS; do
      for coll in $COLLECTIVES; do
        # with 2 ranks rhd and direct move the same messages as the ring: measured at 4 ranks;
        # staged reads peers' data in shared memory (every transport here: one node)
        small="ring,direct,staged,auto"; big="ring,direct,staged,auto"; modes=oop
        [ "$coll" = all_reduce ] && small="ring,rd,rhd,direct,staged,auto" \
          && big="ring,rhd,direct,staged,auto" && modes=ip
        [ "$n" = 2 ] && big="ring,staged,auto" && small="${small/,direct/}"
        tag="$tr-n$n-$coll"
        echo "== launch $l: $tag" >&2
        # SKIP_DONE=1 resumes an interrupted campaign
        [ -n "${SKIP_DONE:-}" ] && [ -s "$OUT/$tag-lat-L$l.json" ] || \
        launch "$tr" "$n" --collective "$coll" -b 4K -e 64K -f 4 -n 20 -w 3 --modes $modes \
          --algorithm "$small" --json "$OUT/$tag-lat-L$l.json" > "$OUT/$tag-lat-L$l.txt" 2>&1 || true
        [ -n "${SKIP_DONE:-}" ] && [ -s "$OUT/$tag-bw-L$l.json" ] || \
        launch "$tr" "$n" --collective "$coll" -b 1M -e 128M -f 2 -n 5 -w 1 --modes $modes \
          --algorithm "$big" --json "$OUT/$tag-bw-L$l.json" > "$OUT/$tag-bw-L$l.txt" 2>&1 || true
      done
    done
  done
done
