"""The CPU cost of a collective's own code: a ring all-reduce over a transport that moves nothing.

Rank 0 of a pretend world of ``--ranks`` runs ``rc.all_reduce(algorithm="ring")`` against a
transport whose sends and receives complete at once, so the time is ringflow's Python (checks,
choice, flight record, stamps, ring steps and waits) plus the reductions, with no peer to wait
for and no scheduler between two processes: on a shared machine that makes code paths
comparable where launched timings drift several-fold. The data it produces is meaningless.

    python benchmarks/collectives/path_cost.py --size 4KiB
    PYTHONPATH=/path/to/other/checkout python benchmarks/collectives/path_cost.py   # compare trees

Prints one line: size, median microseconds per call over the blocks, the quartiles, and the
fastest block.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ringflow import collectives as rc
from ringflow.collectives.communicator import Communicator
from ringflow.transport.base import DoneWork, Transport


class NoWire(Transport):
    """Every message has already arrived (contents untouched)."""
    name = "nowire"

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def isend(self, tensor, dst, tag=0, stamp=None):
        return DoneWork()

    def irecv(self, tensor, src, tag=0, stamp=None):
        return DoneWork()

    def check_tensor(self, tensor) -> None:
        pass


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "b": 1}
    low = text.lower()
    for unit, mult in units.items():
        if low.endswith(unit):
            return int(float(low[: -len(unit)]) * mult)
    return int(low)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="4KiB", help="bytes (float32)")
    p.add_argument("--ranks", type=int, default=2, help="size of the pretend world")
    p.add_argument("--iters", type=int, default=200, help="calls per block")
    p.add_argument("--blocks", type=int, default=31)
    a = p.parse_args()
    torch.set_num_threads(1)
    comm = Communicator(NoWire(0, a.ranks), timeout=60)
    x = torch.ones(parse_size(a.size) // 4)
    per_call = []
    for _ in range(a.blocks + 1):                      # the first block warms up, not counted
        t0 = time.perf_counter()
        for _ in range(a.iters):
            rc.all_reduce(x, group=comm, algorithm="ring")
        per_call.append((time.perf_counter() - t0) / a.iters * 1e6)
    per_call = sorted(per_call[1:])
    q = len(per_call) // 4
    # the fastest block is the least disturbed by other processes: compare those between trees
    print(f"{a.size} {statistics.median(per_call):.2f} us/call (quartiles {per_call[q]:.2f}-"
          f"{per_call[-q - 1]:.2f}, fastest block {per_call[0]:.2f})", flush=True)
    comm.close()


if __name__ == "__main__":
    main()
