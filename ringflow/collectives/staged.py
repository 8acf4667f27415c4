"""Staged collectives: every rank reads its peers' data in place, no messages.

For ranks of one node: the shm transport's own staging area, or the one the torch (gloo)
and MPI transports map beside their messages when all their ranks share a node
(``transport/shm/node``). A message costs tens of microseconds of Python (hundreds over
gloo), and a ring or recursive-doubling step pays that every time. Here each rank copies its data into its
own staging area (``transport/shm/stage``), publishes a counter, waits for its peers'
counters and then reads their stages directly: one copy in, one wait, one pass over the
n stages per round. Data larger than a stage half goes in several rounds.

Every rank reduces the n stages in rank order (0, 1, ..., n-1), so the results are
bitwise identical everywhere. The cost is reading n stages instead of receiving
(n-1)/n of the data, so the ring wins on large messages; ``auto`` chooses.

    rc.all_reduce(t, algorithm="staged")       # on ranks of one node
"""
from __future__ import annotations

import torch

from .chunking import piece_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into, reduce_out


_NOTHING = torch.empty(0, dtype=torch.uint8)      # what a barrier stages


def supports(comm: Communicator) -> bool:
    """True when ``comm`` is the whole world of a transport that may stage (the round counter
    is per transport: a sub-group would put members and non-members out of step)."""
    return comm.is_world and comm.transport.may_stage


def _stage(comm: Communicator):
    """The transport's Stage (mapped at start-up, so every rank agrees whether there is one)."""
    if not supports(comm):
        raise ValueError(f"algorithm 'staged' needs ranks of one node sharing memory (the shm "
                         f"transport, or gloo/MPI with every rank on one node), over the whole "
                         f"world; {comm.transport.name} transport, group {comm.ranks[:8]} cannot: "
                         "use algorithm='auto' or 'ring'")
    return comm.transport.staging()


def _round(comm: Communicator, st, data: torch.Tensor, step: int) -> int:
    """Stage ``data`` for the next round; returns the round once every peer has staged.

    A peer already done (the usual case) costs one read of its counter; only a wait goes
    through the Communicator (timeout, dead-peer and RINGFLOW_DEBUG handling), and under
    RINGFLOW_DEBUG every wait does, so fingerprints are compared before peers' data is read.
    """
    s = st.next_round()
    nbytes = data.numel() * data.element_size()
    stamp = comm.current_stamp()      # a peer in another collective's round is named, not read
    lean = not comm.debug
    for p in range(comm.size):
        if p != comm.rank and not (lean and st.is_writable(p, s)):
            comm.wait(st.writable(p, s), peer=p, step=step)
    st.put(s, data, stamp)
    for p in range(comm.size):
        if p != comm.rank and not (lean and st.has_posted(p, s, nbytes, stamp)):
            comm.wait(st.posted(p, s, nbytes, stamp), peer=p, step=step)   # raises a mismatch
    return s


def _reduce(dst: torch.Tensor, views: list[torch.Tensor], op: ReduceOp) -> None:
    """dst = views[0] op views[1] op ... in rank order: the same bytes on every rank."""
    reduce_out(dst, views[0], views[1], op)
    for v in views[2:]:
        reduce_into(dst, v, op)


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """``buf`` (flat) = reduction over ranks, in rounds of one stage half."""
    st = _stage(comm)
    pieces = piece_bounds(buf.numel(), st.half // buf.element_size())
    for step, (a, b) in enumerate(pieces):
        piece = buf if len(pieces) == 1 else buf[a:b]
        s = _round(comm, st, piece, step)
        _reduce(piece, [st.view(r, s, buf.dtype, b - a) for r in range(comm.size)], op)
        st.done(s)
    finish_avg(buf, op, comm.size)


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    """``out`` (m) = reduction of block ``rank`` of every rank's ``inp`` (n*m), in column rounds:
    round j stages columns [j*c, (j+1)*c) of all n blocks."""
    st, n = _stage(comm), comm.size
    m = out.numel()
    rows = inp.view(n, m)
    for step, (a, b) in enumerate(piece_bounds(m, max(1, st.half // (n * inp.element_size())))):
        s = _round(comm, st, rows[:, a:b], step)
        _reduce(out[a:b], [st.view(r, s, inp.dtype, n * (b - a)).view(n, b - a)[comm.rank]
                           for r in range(n)], op)
        st.done(s)
    finish_avg(out, op, n)


def all_gather(comm: Communicator, out: torch.Tensor, inp: torch.Tensor) -> None:
    """``out`` (n*m) = every rank's ``inp`` (m) in rank order, in rounds of one stage half."""
    st, n = _stage(comm), comm.size
    m = inp.numel()
    rows = out.view(n, m)
    for step, (a, b) in enumerate(piece_bounds(m, st.half // inp.element_size())):
        s = _round(comm, st, inp[a:b], step)
        for r in range(n):
            rows[r, a:b].copy_(st.view(r, s, inp.dtype, b - a))
        st.done(s)


def barrier(comm: Communicator) -> None:
    """An empty round: every rank has posted it once the wait returns (microseconds where a
    dissemination barrier pays log2(n) messages)."""
    st = _stage(comm)
    st.done(_round(comm, st, _NOTHING, 0))
