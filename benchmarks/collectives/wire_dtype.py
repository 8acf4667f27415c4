"""float32 all-reduce with bf16/fp16 on the wire against float32 on the wire, in one launch.

    torchrun --nproc_per_node=2 benchmarks/collectives/wire_dtype.py                  # shm
    RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 benchmarks/collectives/wire_dtype.py

Modes, interleaved in rotating order, blocks of --iters calls: ``ring`` (float32 ring),
``auto`` (what ringflow picks for float32), ``bf16`` and ``fp16`` (rc.all_reduce(x,
wire_dtype=...)), and ``builtin`` (torch.distributed.all_reduce, where the launch set it up: the
torch transport's gloo). The tensor is zeros and stays zeros under SUM, so every call moves the
same bytes and no value drifts into inf or subnormals (whose arithmetic is slower). Rank 0 prints
a markdown row per size: median ms per call of each mode, busbw of bf16 (float32 bytes counted,
nccl-tests' 2(n-1)/n), and the ratios time(mode) / time(bf16).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

import ringflow
from ringflow import collectives as rc

MODES = {
    "ring": lambda x: rc.all_reduce(x, algorithm="ring"),
    "auto": lambda x: rc.all_reduce(x),
    "bf16": lambda x: rc.all_reduce(x, wire_dtype=torch.bfloat16),
    "fp16": lambda x: rc.all_reduce(x, wire_dtype=torch.float16),
    "builtin": lambda x: dist.all_reduce(x),
}


def block(call, x: torch.Tensor, iters: int) -> list[float]:
    """Seconds per call of ``iters`` calls, after a barrier (every rank starts together)."""
    rc.barrier()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t0)
    return times


def measure(modes: list[str], x: torch.Tensor, iters: int, blocks: int) -> dict[str, float]:
    """Median seconds per call of each mode, blocks interleaved in rotating order."""
    for m in modes:                                      # warm-up: buffers, connections
        block(MODES[m], x, 2)
    times = {m: [] for m in modes}
    for b in range(blocks):
        for m in modes[b % len(modes):] + modes[: b % len(modes)]:
            times[m] += block(MODES[m], x, iters)
    return {m: statistics.median(t) for m, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="16,32,64", help="MiB of float32 per rank, comma-separated")
    p.add_argument("--iters", type=int, default=5, help="calls per block")
    p.add_argument("--blocks", type=int, default=3, help="blocks per mode")
    a = p.parse_args()
    comm = ringflow.init()
    modes = [m for m in MODES if m != "builtin" or dist.is_initialized()]
    if comm.rank == 0:
        print(f"transport {comm.transport.name}, {comm.size} ranks; ms per call (median); "
              "ratio: time(mode) / time(bf16)")
        print("| MiB | " + " | ".join(f"{m} ms" for m in modes) + " | bf16 busbw GB/s | "
              + " | ".join(f"{m}/bf16" for m in modes if m != "bf16") + " |")
        print("|---" * (2 + 2 * len(modes) - 1) + "|")
    for mib in (float(s) for s in a.sizes.split(",")):
        x = torch.zeros(int(mib * (1 << 20)) // 4)
        t = measure(modes, x, a.iters, a.blocks)
        if comm.rank == 0:
            busbw = 2 * (comm.size - 1) / comm.size * x.numel() * 4 / t["bf16"] / 1e9
            print(f"| {mib:g} | " + " | ".join(f"{t[m] * 1e3:.1f}" for m in modes)
                  + f" | {busbw:.2f} | "
                  + " | ".join(f"{t[m] / t['bf16']:.2f}" for m in modes if m != "bf16") + " |",
                  flush=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
