"""Gather-to-root, reduce in rank order, send back: the teaching baseline and test oracle.

Slow (the root moves n times the data) but obviously correct: the reduction is
x_0 (op) x_1 (op) ... (op) x_{n-1}, in rank order, on one rank.
"""
from __future__ import annotations

import torch

from .chunking import chunk_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into


def reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, root: int = 0) -> None:
    """On ``root``, ``buf`` becomes the reduction over ranks in rank order; others unchanged."""
    if comm.rank != root:
        comm.wait(comm.isend(buf, root), peer=root)
        return
    own = buf.clone()
    incoming = torch.empty_like(buf)
    for src in range(comm.size):
        if src == root:
            part = own
        else:
            comm.wait(comm.irecv(incoming, src), peer=src, step=src)
            part = incoming
        if src == 0:
            buf.copy_(part)
        else:
            reduce_into(buf, part, op)
    finish_avg(buf, op, comm.size)


def broadcast(comm: Communicator, buf: torch.Tensor, root: int = 0) -> None:
    """Root sends ``buf`` to every other rank, one after another."""
    if comm.rank == root:
        works = [(dst, comm.isend(buf, dst)) for dst in range(comm.size) if dst != root]
        for dst, w in works:
            comm.wait(w, peer=dst, step=dst)
    else:
        comm.wait(comm.irecv(buf, root), peer=root)


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    reduce(comm, buf, op, root=0)
    broadcast(comm, buf, root=0)


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    work = inp.clone()
    all_reduce(comm, work, op)
    a, b = chunk_bounds(inp.numel(), comm.size)[comm.rank]
    out.copy_(work[a:b])


def all_gather(comm: Communicator, out: torch.Tensor, inp: torch.Tensor) -> None:
    bounds = chunk_bounds(out.numel(), comm.size)
    if comm.rank == 0:
        out[bounds[0][0]:bounds[0][1]].copy_(inp)
        for src in range(1, comm.size):
            a, b = bounds[src]
            comm.wait(comm.irecv(out[a:b], src), peer=src, step=src)
    else:
        comm.wait(comm.isend(inp, 0), peer=0)
    broadcast(comm, out, root=0)
