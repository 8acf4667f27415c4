"""The sweeps' timing: every configuration and the built-in once per round, in the same
processes, each call from a buffer of ones and after the built-in's barrier; medians over
rounds, printed by rank 0 with the ratio of the built-in's time to each (>1: ringflow faster).

    med = medians(runs, buf, comm.transport, rounds=5)      # runs: name -> call; "builtin" too
    print_rows(comm, nbytes, med, width=12)
"""
from __future__ import annotations

import statistics
import time


def medians(runs: dict, buf, transport, rounds: int, warmups: int = 1) -> dict[str, float]:
    """name -> median seconds of ``runs[name]()`` over ``rounds`` interleaved rounds."""
    for _ in range(warmups):                  # scratch, connections, helper threads
        for f in runs.values():
            f()
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for name, f in runs.items():
            buf.fill_(1)
            transport.native_barrier()
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def print_rows(comm, nbytes: int, med: dict[str, float], width: int, busbw: bool = False) -> None:
    """Rank 0: a line per configuration; ``busbw``: the all-reduce bus bandwidth too."""
    if comm.rank != 0:
        return
    base = med["builtin"]
    for name, m in med.items():
        bw = (f"busbw {nbytes * 2 * (comm.size - 1) / comm.size / m / 1e9:5.2f} GB/s  "
              if busbw else "")
        print(f"{nbytes >> 10:>8} KiB  {name:>{width}}  {m * 1e3:8.2f} ms  {bw}"
              f"vs builtin {base / m:5.2f}x", flush=True)
