"""Latency-bound algorithms: log2(n) rounds instead of the ring's n-1 (or 2(n-1)).

Binomial trees (broadcast, reduce): ranks are renumbered relative to the root
(v = (r - root) mod n); in round k a rank v < 2^k that holds the data sends it to
v + 2^k; reduce runs the same tree backwards.

All-reduce by recursive doubling (``all_reduce_rd``: log2 p exchanges of the whole
buffer, best for small messages) and by recursive halving-doubling
(``all_reduce_rhd``, Rabenseifner: a halving reduce-scatter then a doubling
all-gather, 2 log2 p rounds moving 2(p-1)/p of the buffer). A world that is not a
power of two is first folded onto p = 2^floor(log2 n) ranks: among the first
2(n-p) ranks each even rank hands its buffer to the next odd one and waits for
the answer at the end (Thakur, Rabenseifner & Gropp 2005, "Optimization of
Collective Communication Operations in MPICH").

Every combination of two blocks puts the lower rank's block first
(``reduce_out``), so both partners of an exchange compute the same bytes and all
ranks end bitwise identical; the tree's shape fixes the order, never timing.
"""
from __future__ import annotations

import torch

from .chunking import chunk_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into, reduce_out


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
    acc = buf if v == 0 else comm.scratch(buf.dtype, 2 * buf.numel(), buf.device)[: buf.numel()]
    if v:
        acc.copy_(buf)
    incoming = None
    mask = 1
    while mask < n:
        if v & mask:
            parent = (v - mask + root) % n
            comm.wait(comm.isend(acc, parent), peer=parent)
            return
        if v + mask < n:
            child = (v + mask + root) % n
            if incoming is None:
                incoming = comm.scratch(buf.dtype, 2 * buf.numel(), buf.device)[buf.numel():]
            comm.wait(comm.irecv(incoming, child), peer=child)
            reduce_into(acc, incoming, op)   # my block (lower ranks) op child's block
        mask <<= 1
    finish_avg(acc, op, n)


# ---- all-reduce: recursive doubling and halving-doubling -----------------------------------------
def _pow2_below(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _real(v: int, rem: int) -> int:
    """Group rank of virtual rank ``v`` after folding ``rem`` extra ranks (monotone in v)."""
    return 2 * v + 1 if v < rem else v + rem


def _fold(comm: Communicator, buf: torch.Tensor, op: ReduceOp):
    """Fold the world onto p = 2^k ranks (the rem extra ranks hand their data to a neighbour).

    Returns (tmp, v, p, rem): a scratch buffer of buf's size, my virtual rank (None when I sit
    out), p and rem.
    """
    n, r = comm.size, comm.rank
    tmp = comm.scratch(buf.dtype, buf.numel(), buf.device)
    p = _pow2_below(n)
    rem = n - p
    if r >= 2 * rem:
        return tmp, r - rem, p, rem
    if r % 2 == 0:
        comm.wait(comm.isend(buf, r + 1), peer=r + 1)
        return tmp, None, p, rem
    comm.wait(comm.irecv(tmp, r - 1), peer=r - 1)
    reduce_out(buf, tmp, buf, op)        # x_{r-1} (op) x_r: lower rank first
    return tmp, r // 2, p, rem


def _unfold(comm: Communicator, buf: torch.Tensor, step: int) -> None:
    """Hand the result back to the ranks that sat out."""
    n, r = comm.size, comm.rank
    if r >= 2 * (n - _pow2_below(n)):
        return
    if r % 2 == 0:
        comm.wait(comm.irecv(buf, r + 1), peer=r + 1, step=step)
    else:
        comm.wait(comm.isend(buf, r - 1), peer=r - 1, step=step)


def _combine(mine: torch.Tensor, theirs: torch.Tensor, they_are_lower: bool, op: ReduceOp) -> None:
    """mine = lower (op) higher, whichever of the two partners is the lower rank."""
    if they_are_lower:
        reduce_out(mine, theirs, mine, op)
    else:
        reduce_out(mine, mine, theirs, op)


def _exchange(comm: Communicator, send: torch.Tensor, recv: torch.Tensor, peer: int, step: int) -> None:
    sw, rw = comm.sendrecv(send, peer, recv, peer)
    comm.wait(rw, peer=peer, step=step)
    comm.wait(sw, peer=peer, step=step)


def all_reduce_rd(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Recursive-doubling all-reduce of flat ``buf`` in place: ceil(log2 n) (+2) exchanges."""
    n = comm.size
    if n == 1:
        return
    tmp, v, p, rem = _fold(comm, buf, op)
    step, mask = 1, 1
    while v is not None and mask < p:
        pv = v ^ mask
        _exchange(comm, buf, tmp, _real(pv, rem), step)
        _combine(buf, tmp, pv < v, op)
        step, mask = step + 1, mask << 1
    if v is not None:
        finish_avg(buf, op, n)
    _unfold(comm, buf, step)


def _span(bounds: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int]:
    """Element range of blocks [lo, hi)."""
    return bounds[lo][0], bounds[hi - 1][1]


def all_reduce_rhd(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Halving-doubling (Rabenseifner) all-reduce of flat ``buf`` in place."""
    n = comm.size
    if n == 1:
        return
    tmp, v, p, rem = _fold(comm, buf, op)
    step = 1
    if v is not None:
        bounds = chunk_bounds(buf.numel(), p)
        lo, hi, mask = 0, p, p >> 1
        while mask:                          # halving: keep half of my blocks, reduce them
            pv, mid = v ^ mask, lo + mask
            keep, give = ((mid, hi), (lo, mid)) if v & mask else ((lo, mid), (mid, hi))
            ka, kb = _span(bounds, *keep)
            ga, gb = _span(bounds, *give)
            _exchange(comm, buf[ga:gb], tmp[: kb - ka], _real(pv, rem), step)
            _combine(buf[ka:kb], tmp[: kb - ka], pv < v, op)
            (lo, hi), step, mask = keep, step + 1, mask >> 1
        a, b = bounds[v]
        finish_avg(buf[a:b], op, n)
        mask = 1
        while mask < p:                      # doubling: swap what we own, copying bytes
            other = (lo - mask, lo) if v & mask else (hi, hi + mask)
            (ma, mb), (oa, ob) = _span(bounds, lo, hi), _span(bounds, *other)
            _exchange(comm, buf[ma:mb], buf[oa:ob], _real(v ^ mask, rem), step)
            lo, hi = min(lo, other[0]), max(hi, other[1])
            step, mask = step + 1, mask << 1
    _unfold(comm, buf, step)
