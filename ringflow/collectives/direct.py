"""Direct exchange: every block goes straight to its owner, all messages in flight at once.

Reduce-scatter: rank r sends block c of its input to rank c and receives block r
from everyone; all-gather: rank r sends its block to everyone. Each phase is one
round of n-1 concurrent sendrecv pairs (step s pairs r+s and r-s, the same order
on every rank, which keeps rendezvous transports such as NCCL from deadlocking)
and moves the same bytes per rank as the ring's n-1 steps. With few ranks per
node the ring's n-1 synchronised steps cost more than the bytes, so this wins
there (4 ranks on 2 cores: 2 rounds instead of 6); the selector weighs it.

The owner sums the n blocks in rank order, so results are deterministic and
bitwise identical across ranks (the all-gather copies bytes).

bf16/fp16 with fp32 accumulation ("fp32acc"): the same exchange, half-precision
bytes on the wire, the blocks summed in fp32 and rounded once, where a ring
forwards partial sums and rounds them again at each of its n-1 hops:

    rc.all_reduce(grads_bf16, algorithm="fp32acc")
    rc.reduce_scatter_tensor(shard, grads_bf16, algorithm="fp32acc")

fp32acc is valid for every dtype (others accumulate in their own type) and is
never chosen by "auto": it changes the numerics, for the better, only when asked.
"""
from __future__ import annotations

import torch

from .chunking import chunk_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into

WIDEN = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _buffers(comm: Communicator, like: torch.Tensor, wide, n: int, m: int):
    """(landing (n-1, m), accumulator (m,)) from the scratch pool (one pool per dtype)."""
    dtype, device = like.dtype, like.device
    if wide == dtype:
        space = comm.scratch(dtype, n * m, device)
        return space[: (n - 1) * m].view(n - 1, m), space[(n - 1) * m:]
    landing = comm.scratch(dtype, (n - 1) * m, device).view(n - 1, m)
    return landing, comm.scratch(wide, m, device)


def reduce_block(comm: Communicator, inp: torch.Tensor, bounds: list[tuple[int, int]],
                 out: torch.Tensor, op: ReduceOp, wide: torch.dtype | None = None) -> None:
    """out = reduction over ranks of block ``rank`` of ``inp``, accumulated in ``wide``."""
    n, r = comm.size, comm.rank
    a, b = bounds[r]
    landing, acc = _buffers(comm, inp, wide or inp.dtype, n, b - a)
    posted = {}
    for step in range(1, n):
        dst, src = (r + step) % n, (r - step) % n
        da, db = bounds[dst]
        posted[src] = (dst, step, *comm.sendrecv(inp[da:db], dst, landing[step - 1], src))
    for src in range(n):                     # rank order: arrivals are reduced as they come
        block = inp[a:b]
        if src != r:
            _, step, _, recv_work = posted[src]
            comm.wait(recv_work, peer=src, step=step)
            block = landing[step - 1]
        if src == 0:
            acc.copy_(block)
        else:
            reduce_into(acc, block, op)
    for dst, step, send_work, _ in posted.values():
        comm.wait(send_work, peer=dst, step=step)
    finish_avg(acc, op, n)
    out.copy_(acc)                           # fp32acc: the one rounding to half precision


def gather_blocks(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
    """Block ``rank`` of ``buf`` to every rank; every other block from its owner."""
    n, r = comm.size, comm.rank
    a, b = bounds[r]
    posted = []
    for step in range(1, n):
        dst, src = (r + step) % n, (r - step) % n
        sa, sb = bounds[src]
        posted.append((dst, src, step, *comm.sendrecv(buf[a:b], dst, buf[sa:sb], src)))
    for dst, src, step, send_work, recv_work in posted:
        comm.wait(recv_work, peer=src, step=n + step)
        comm.wait(send_work, peer=dst, step=n + step)


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Direct all-reduce of flat ``buf`` in place: one exchange round to reduce, one to gather."""
    _all_reduce(comm, buf, op, None)


def all_reduce_fp32(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Like ``all_reduce``, accumulating bf16/fp16 in fp32 (one rounding)."""
    _all_reduce(comm, buf, op, WIDEN.get(buf.dtype))


def _all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, wide) -> None:
    if comm.size == 1:
        return
    bounds = chunk_bounds(buf.numel(), comm.size)
    a, b = bounds[comm.rank]
    reduce_block(comm, buf, bounds, buf[a:b], op, wide)
    gather_blocks(comm, buf, bounds)


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    """out (numel m) = reduction of block ``rank`` of every ``inp`` (numel m*n)."""
    _reduce_scatter(comm, out, inp, op, None)


def reduce_scatter_fp32(comm: Communicator, out: torch.Tensor, inp: torch.Tensor,
                        op: ReduceOp) -> None:
    """Like ``reduce_scatter``, accumulating bf16/fp16 in fp32 (one rounding)."""
    _reduce_scatter(comm, out, inp, op, WIDEN.get(inp.dtype))


def _reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp,
                    wide) -> None:
    if comm.size == 1:
        out.copy_(inp)
        return
    reduce_block(comm, inp, chunk_bounds(inp.numel(), comm.size), out, op, wide)


def all_gather(comm: Communicator, out: torch.Tensor, inp: torch.Tensor) -> None:
    """out (numel m*n) = every rank's ``inp`` (numel m) in rank order."""
    bounds = chunk_bounds(out.numel(), comm.size)
    a, b = bounds[comm.rank]
    out[a:b].copy_(inp)
    if comm.size > 1:
        gather_blocks(comm, out, bounds)
