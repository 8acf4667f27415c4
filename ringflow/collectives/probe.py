"""auto's start-up probe: the backend's own all-reduce against staged, timed on this machine now.

Without a tune file auto chooses from priors (costmodel.prior), and one of them cannot be known
ahead: on one node MPI's all-reduce takes ~12 us at 4 KiB where a staged round costs tens of us
of Python, but MPI waits by polling, and while other processes want the cores its calls took
11.5-13.5 ms at 16 KiB-4 MiB (2 ranks, load average 4 on 2 vCPUs) where staged, which sleeps
while it waits, took 0.03-0.5 ms. So ``runtime.init()`` times both at two sizes, ROUNDS calls each,
interleaved (a few ms on an idle node, up to 0.5 s on a busy one), takes the slowest rank's
mean of each (a max all-reduce: every rank then holds the same numbers and makes the same
choice) and hands them to the cost model (costmodel.adopt_probe). Once per process, and only
where the prior weighs the backend's own call (MPI on one node); a tune file replaces it.

    probe.run(comm)       # collective; returns the points, or None where nothing is to decide
"""
from __future__ import annotations

import time

import torch

from . import costmodel, native, staged
from .communicator import Communicator
from .ops import ReduceOp

SIZES = (16 << 10, 1 << 20)       # bytes: latency-bound, and where MPI's protocol has changed
ROUNDS, WARMUP = 7, 2
NAMES = ("native", "staged")


def wanted(comm: Communicator) -> bool:
    """Whether auto's prior for ``comm`` weighs the backend's own all-reduce against staged."""
    model = costmodel.load(comm)
    return (comm.size > 1 and model.source == "default" and not model.probe
            and "all_reduce/native" in model.measured
            and native.supports(comm, "all_reduce") and staged.supports(comm))


def run(comm: Communicator) -> dict | None:
    """Time the candidates on every rank (collective) and give the model the slowest rank's
    means: {"native": [[bytes, seconds], ...], "staged": [...]}."""
    if not wanted(comm):
        return None
    # the algorithms themselves, not the verbs: the probe is no collective of the user's (the
    # tally and the flight recorder do not count it); staged's waits are bounded as ever
    runs = (lambda buf: comm.transport.native_all_reduce(buf, "sum"),
            lambda buf: staged.all_reduce(comm, buf, ReduceOp.SUM))
    times = torch.zeros(len(SIZES), len(NAMES), ROUNDS, dtype=torch.float64)
    bufs = [torch.zeros(b // 4, dtype=torch.float32) for b in SIZES]   # zeros stay zeros
    for r in range(-WARMUP, ROUNDS):       # first calls set up MPI's buffers: not timed
        for i, buf in enumerate(bufs):
            for j in (0, 1) if r % 2 == 0 else (1, 0):      # alternate which goes first
                staged.barrier(comm)
                t0 = time.perf_counter()
                runs[j](buf)
                if r >= 0:
                    times[i, j, r] = time.perf_counter() - t0
    # means, not medians: MPI's calls stall in bursts (30 ms, then 0.1 ms, on a busy machine),
    # and a call that stalls one time in three costs that third on average
    means = times.mean(dim=2).contiguous()                 # (sizes, names)
    staged.all_reduce(comm, means.view(-1), ReduceOp.MAX)
    points = {name: [[b, float(means[i, j])] for i, b in enumerate(SIZES)]
              for j, name in enumerate(NAMES)}
    costmodel.adopt_probe(comm, points)
    return points
