"""Worker: the parallel equivalence matrix (matrix.py) inside one launched group.

    torchrun --nproc_per_node=3 tests/parallel/matrix_worker.py
    RINGFLOW_TRANSPORT=mpi mpirun -np 2 python tests/parallel/matrix_worker.py --ddp

--ddp adds torch's DistributedDataParallel with our comm hook (torch.distributed is started
beside the transport if it is not the transport); --cases a,b runs only those cases.
Prints "PARALLEL MATRIX OK" on rank 0, or the failures.
"""
from __future__ import annotations

import sys
import time

import torch

import ringflow
from ringflow import collectives as rc
from tests.parallel.matrix import CASES, run_matrix


def main() -> int:
    start = time.monotonic()
    comm = ringflow.init(timeout=60)
    cases = list(CASES)
    if "--cases" in sys.argv:
        cases = sys.argv[sys.argv.index("--cases") + 1].split(",")
    if "--ddp" in sys.argv:
        import torch.distributed as dist
        if not dist.is_initialized():
            from ringflow.transport.torch_dist import init_process_group
            init_process_group(comm.launch, torch.device("cpu"), timeout=60)
        cases.append("ddp")
    failures = run_matrix(comm, cases)
    count = torch.tensor([len(failures)], dtype=torch.int64)
    rc.all_reduce(count, group=comm)
    for f in failures:
        print(f"rank {comm.rank}: {f}", file=sys.stderr, flush=True)
    if comm.rank == 0:
        verdict = "PARALLEL MATRIX OK" if count.item() == 0 else f"{count.item()} FAILURES"
        print(f"transport={comm.transport.name} world={comm.size} cases={cases} "
              f"{verdict} in {time.monotonic() - start:.1f}s", flush=True)
    ringflow.shutdown()
    return 0 if count.item() == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
