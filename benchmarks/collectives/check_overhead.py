"""What a check costs: all-reduce time with and without it, interleaved. ``--check debug``:
RINGFLOW_DEBUG's fingerprint exchange; ``--check stamps``: the stamp every message carries (always
on; turned off here only to measure it, see ringflow/collectives/stamp.py); ``--check trace``:
recording RINGFLOW_TRACE's timeline (into a temporary folder) against the null tracer.

    torchrun --nproc_per_node=2 benchmarks/collectives/check_overhead.py --size 1MiB
    torchrun --nproc_per_node=2 benchmarks/collectives/check_overhead.py --check stamps --size 4KiB
    torchrun --nproc_per_node=2 benchmarks/collectives/check_overhead.py --check trace --size 4KiB
    mpirun -np 2 python benchmarks/collectives/check_overhead.py --size 1MiB

Both modes run in the same launch, alternating in blocks (absolute figures drift 2-3x
between launches here, ratios inside one launch do not). Rank 0 prints one markdown row:
check | transport | ranks | size | algorithm | wall ms off | on | overhead | CPU us off | on | overhead.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import trace


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "b": 1}
    low = text.lower()
    for unit, mult in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * mult)
    return int(low)


def block(comm, x: torch.Tensor, algorithm: str, iters: int) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds) per all-reduce over ``iters`` calls.

    CPU time (this process, all threads) leaves out waiting for the scheduler, which on an
    oversubscribed machine swamps the wall time of a latency-bound step.
    """
    rc.barrier()
    times, cpu0 = [], time.process_time()
    for _ in range(iters):
        t0 = time.perf_counter()
        rc.all_reduce(x, algorithm=algorithm)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (time.process_time() - cpu0) / iters


def switch(comm, check: str, on: bool, tracer) -> None:
    """Turn ``check`` on or off on ``comm`` (every rank flips at the same call)."""
    if check == "trace":
        comm.tracer = tracer if on else trace.NULL
    else:
        setattr(comm, check, on)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1MiB", help="bytes per rank (float32), e.g. 1MiB")
    p.add_argument("--algorithm", default="ring")
    p.add_argument("--iters", type=int, default=20, help="calls per block")
    p.add_argument("--blocks", type=int, default=7, help="blocks per mode, interleaved")
    p.add_argument("--check", choices=("debug", "stamps", "trace"), default="debug")
    a = p.parse_args()
    comm = ringflow.init()
    tracer = (trace.Tracer(tempfile.mkdtemp(prefix="ringflow-trace-"), comm.rank, comm.size)
              if a.check == "trace" else None)
    x = torch.ones(parse_size(a.size) // 4)
    block(comm, x, a.algorithm, 5)                       # warm-up (buffers, connections)
    result = {False: [], True: []}
    for i in range(2 * a.blocks):
        on = bool(i % 2)
        switch(comm, a.check, on, tracer)
        result[on].append(block(comm, x, a.algorithm, a.iters))
    switch(comm, a.check, a.check == "stamps", tracer)   # back to the defaults
    if comm.rank == 0:
        off, on = (statistics.median(w for w, _ in result[k]) for k in (False, True))
        c_off, c_on = (statistics.median(c for _, c in result[k]) for k in (False, True))
        print(f"| {a.check} | {comm.transport.name} | {comm.size} | {a.size} | {a.algorithm} | "
              f"{off * 1e3:.3f} | {on * 1e3:.3f} | {100 * (on / off - 1):+.1f} % | "
              f"{c_off * 1e6:.0f} | {c_on * 1e6:.0f} | {100 * (c_on / c_off - 1):+.1f} % |",
              flush=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
