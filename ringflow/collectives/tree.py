"""Binomial trees: log2(n) rounds instead of n-1, for latency-bound (small) messages.

Ranks are renumbered relative to the root (v = (r - root) mod n). In round k a
rank v < 2^k that holds the data sends it to v + 2^k (broadcast); reduce runs the
same tree backwards. The tree's shape fixes the reduction order, so the result
does not depend on timing.
"""
from __future__ import annotations

import torch

from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into


def broadcast(comm: Communicator, buf: torch.Tensor, root: int = 0) -> None:
    """Binomial-tree broadcast of ``buf`` from ``root``, in place."""
    n = comm.size
    v = (comm.rank - root) % n
    mask = 1
    while mask < n:                      # find my parent: lowest set bit of v
        if v & mask:
            parent = (v - mask + root) % n
            comm.wait(comm.irecv(buf, parent), peer=parent)
            break
        mask <<= 1
    mask >>= 1
    works = []
    while mask > 0:                      # then feed my subtree, largest first
        if v + mask < n:
            child = (v + mask + root) % n
            works.append((child, comm.isend(buf, child)))
        mask >>= 1
    for child, w in works:
        comm.wait(w, peer=child, step=1)


def reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, root: int = 0) -> None:
    """Binomial-tree reduce into ``buf`` on ``root``; other ranks' ``buf`` is left unchanged."""
    n = comm.size
    v = (comm.rank - root) % n
    acc = buf if v == 0 else buf.clone()
    incoming = None
    mask = 1
    while mask < n:
        if v & mask:
            parent = (v - mask + root) % n
            comm.wait(comm.isend(acc, parent), peer=parent)
            return
        if v + mask < n:
            child = (v + mask + root) % n
            incoming = torch.empty_like(buf) if incoming is None else incoming
            comm.wait(comm.irecv(incoming, child), peer=child)
            reduce_into(acc, incoming, op)   # my block (lower ranks) op child's block
        mask <<= 1
    finish_avg(acc, op, n)
