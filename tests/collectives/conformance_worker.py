"""Worker: the whole conformance matrix inside one launched group (torchrun, mpirun or python).

    torchrun --nproc_per_node=3 tests/collectives/conformance_worker.py
    RINGFLOW_TRANSPORT=mpi mpirun -np 2 python tests/collectives/conformance_worker.py

Compares every ringflow algorithm with the exact answer, ``algorithm="naive"``
and torch.distributed's gloo collectives (whenever torch.distributed is up: the
torch transport, or ``--torch-ref`` which starts gloo beside the mpi transport).
Ranks check that the results which must agree are bitwise identical everywhere.
Prints "CONFORMANCE OK" on rank 0 and exits 0, or lists the failures and exits 1.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

import ringflow
from ringflow import collectives as rc
from ringflow.transport.torch_dist import init_process_group
from tests.collectives.conformance import run_matrix


def main() -> int:
    start = time.monotonic()
    comm = ringflow.init(timeout=60)
    if "--torch-ref" in sys.argv and not dist.is_initialized():
        init_process_group(comm.launch, torch.device("cpu"), timeout=60)
    report = run_matrix(comm, use_torch=dist.is_initialized())
    digests = torch.zeros(comm.size, dtype=torch.int64)
    rc.all_gather_into_tensor(digests, torch.tensor([report.digest], dtype=torch.int64))
    failures = torch.tensor([len(report.failures)], dtype=torch.int64)
    rc.all_reduce(failures)
    identical = bool((digests == digests[0]).all())
    if report.failures:
        print(report.summary(), file=sys.stderr, flush=True)
    if comm.rank == 0:
        print(f"transport={comm.transport.name} world={comm.size} torch_ref={dist.is_initialized()} "
              f"checks/rank={report.checks} failures={int(failures)} identical_across_ranks="
              f"{identical} seconds={time.monotonic() - start:.1f} {report.seconds}", flush=True)
        for line in sorted(report.skipped):
            print(line, flush=True)
        if int(failures) == 0 and identical:
            print("CONFORMANCE OK", flush=True)
    ringflow.shutdown()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0 if int(failures) == 0 and identical else 1


if __name__ == "__main__":
    sys.exit(main())
