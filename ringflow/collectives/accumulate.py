"""bf16/fp16 reductions with fp32 accumulation: half-precision bytes on the wire, one rounding.

A ring forwards partial sums, so in half precision every hop rounds them again
(n-1 roundings, the error grows with the world). Here the reduce-scatter is a
direct exchange instead: every rank sends its half-precision block c straight to
rank c (pairwise steps, n-1 of them, the same bytes per rank as the ring); rank c
sums the n blocks in rank order in fp32, divides for AVG, rounds once, and a ring
all-gather copies the rounded bytes to everyone.

    rc.all_reduce(grads_bf16, algorithm="fp32acc")
    rc.reduce_scatter_tensor(shard, grads_bf16, algorithm="fp32acc")

Other dtypes accumulate in their own type (float32 stays float32), so the
algorithm is valid for every input; it is never chosen by "auto" because it
changes the numerics, for the better, only when asked.
"""
from __future__ import annotations

import torch

from . import ring
from .chunking import chunk_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into

WIDEN = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _reduce_block(comm: Communicator, inp: torch.Tensor, bounds: list[tuple[int, int]],
                  out: torch.Tensor, op: ReduceOp) -> None:
    """out = reduction of block ``rank`` over every rank's ``inp``, accumulated wide."""
    n, r = comm.size, comm.rank
    a, b = bounds[r]
    m = b - a
    wide = WIDEN.get(inp.dtype, inp.dtype)
    if wide == inp.dtype:                    # one scratch per dtype: carve both from it
        space = comm.scratch(inp.dtype, n * m, inp.device)
        landing, acc = space[: (n - 1) * m].view(n - 1, m), space[(n - 1) * m:]
    else:
        landing = comm.scratch(inp.dtype, (n - 1) * m, inp.device).view(n - 1, m)
        acc = comm.scratch(wide, m, inp.device)
    for step in range(1, n):                 # step s: send block r+s to its owner, hear from r-s
        dst, src = (r + step) % n, (r - step) % n
        da, db = bounds[dst]
        sw, rw = comm.sendrecv(inp[da:db], dst, landing[step - 1], src)
        comm.wait(rw, peer=src, step=step)
        comm.wait(sw, peer=dst, step=step)
    for src in range(n):                     # rank order, whatever order they arrived in
        block = inp[a:b] if src == r else landing[(r - src) % n - 1]
        if src == 0:
            acc.copy_(block)
        else:
            reduce_into(acc, block, op)
    finish_avg(acc, op, n)
    out.copy_(acc)                           # the one rounding to half precision


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """All-reduce flat ``buf`` in place, accumulating bf16/fp16 in fp32."""
    if comm.size == 1:
        return
    bounds = chunk_bounds(buf.numel(), comm.size)
    a, b = bounds[comm.rank]
    _reduce_block(comm, buf, bounds, buf[a:b], op)
    ring.all_gather_(comm, buf, bounds)


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    """out (numel m) = reduction of block ``rank`` of every ``inp`` (numel m*n), fp32-accumulated."""
    if comm.size == 1:
        out.copy_(inp)
        return
    _reduce_block(comm, inp, chunk_bounds(inp.numel(), comm.size), out, op)
