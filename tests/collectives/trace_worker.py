"""Worker: a few ring all-reduces and one DataParallel backward with RINGFLOW_TRACE set.

    RINGFLOW_TRACE=/tmp/tl RINGFLOW_TRANSPORT=shm torchrun --nproc_per_node=2 \
        tests/collectives/trace_worker.py

Each rank's timeline is written by ringflow.shutdown(); the test merges and checks them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ringflow
from ringflow import collectives as rc
from ringflow.parallel import DataParallel
from tests.parallel.matrix import batch, make_net


def main() -> None:
    comm = ringflow.init()
    assert comm.tracer.on, "RINGFLOW_TRACE must be set for this worker"
    for numel in (1024, 1 << 18, 1 << 18, 1 << 20):        # 4 KiB to 4 MiB: several slices
        t = torch.full((numel,), float(comm.rank + 1))
        rc.all_reduce(t, algorithm="ring")
        assert torch.all(t == sum(range(1, comm.size + 1))), "wrong sum"
    dp = DataParallel(make_net(1), bucket_cap_mb=0.01, first_bucket_mb=0.002)
    x, y, t = batch(0, 4 * comm.size)
    sl = slice(4 * comm.rank, 4 * (comm.rank + 1))
    F.mse_loss(dp(x[sl], y[sl]), t[sl]).backward()
    ringflow.shutdown()


if __name__ == "__main__":
    main()
