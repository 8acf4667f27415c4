"""Two-level all-reduce: reduce-scatter inside each node, all-reduce across nodes, all-gather inside.

Only 1/L of the buffer (L ranks per node) crosses the slow link between nodes,
and it crosses it once per node instead of once per rank:

    node 0: ranks 0 1 | node 1: ranks 2 3          (LOCAL_WORLD_SIZE=2 from torchrun)
    1. ring reduce-scatter in {0,1} and in {2,3}: local rank i holds block i of its node's sum
    2. all-reduce block i across nodes in {0,2} and {1,3} (ring or recursive doubling, by size)
    3. ring all-gather in {0,1} and in {2,3}

Over a network the three stages overlap: the buffer is cut into pieces of at most
``piece_bytes`` and piece i crosses the nodes (on a helper thread) while the node
reduce-scatters piece i+1 and all-gathers piece i-1, so the link between nodes never waits
for the node's own copies:

    node:    RS0 RS1 AG0 RS2 AG1 RS3 AG2 ... AGm      (this thread, in this order on every rank)
    across:      X0      X1      X2  ...  Xm          (the helper, pieces in order)

The node layout comes from the Communicator (``local_size``, set by ringflow.init
from LOCAL_WORLD_SIZE / OMPI_COMM_WORLD_LOCAL_SIZE). Inside a node the groups
use ``comm.intra_transport`` when the communicator was built with one
(``ringflow.init(intra="shm")``: shared memory), else the world's own transport.
Every step either copies bytes or reduces in an order fixed by the ring, so ranks
end bitwise identical. The cross-node step is chosen per size by the caller
(``select`` passes its own choice as ``across``), so this module never imports select.

    rc.all_reduce(t, algorithm="two_level")
"""
from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from . import ring
from .chunking import chunk_bounds
from .communicator import Communicator
from .ops import ReduceOp, finish_avg

_GROUPS: "weakref.WeakKeyDictionary[Communicator, tuple[Communicator, Communicator]]" = \
    weakref.WeakKeyDictionary()


def node_groups(comm: Communicator) -> tuple[Communicator, Communicator]:
    """(my node's ranks, my peers with the same local rank on every node), built once per comm."""
    groups = _GROUPS.get(comm)
    if groups is None:
        intra, inter = comm.split_by_node()
        if comm.intra_transport is not None and comm.local_size > 1:
            # parent: its failures name the collective running on comm
            intra = Communicator(comm.intra_transport, timeout=comm.timeout, debug=comm.debug,
                                 parent=comm)
        groups = _GROUPS[comm] = (intra, inter)
    return groups


# Pieces of the overlapped schedule: at least this big, and at most MAX_PIECES of them. On 2
# emulated hosts x 2 ranks at 2 Gbit/s (benchmarks/collectives/two_level_sweep.py), 8 pieces
# of 512 KiB at 4 MiB ran 1.45x slower than 1-4 pieces (each piece costs cross-node message
# latency), and 8 pieces beat no overlap by 10-15 % at 16-64 MiB.
PIECE_BYTES = 2 << 20
MAX_PIECES = 8
_HELPERS: "weakref.WeakKeyDictionary[Communicator, ThreadPoolExecutor]" = weakref.WeakKeyDictionary()


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp,
               across: Callable[[Communicator, torch.Tensor, ReduceOp], None],
               piece_bytes: int | None = None) -> None:
    """Two-level all-reduce of flat ``buf`` in place (any node count, any ranks per node);
    ``across(inter, block, op)`` all-reduces this rank's block among the nodes. Buffers of
    two pieces or more (``piece_bytes``) overlap the stages (module docstring)."""
    if comm.size == 1:
        return
    intra, inter = node_groups(comm)
    inner = ReduceOp.SUM if op is ReduceOp.AVG else op     # divide once, by the whole world
    nbytes = buf.numel() * buf.element_size()
    piece_bytes = PIECE_BYTES if piece_bytes is None else max(1, piece_bytes)
    count = min(MAX_PIECES, nbytes // piece_bytes) if inter.size > 1 and intra.size > 1 else 1
    if count < 2:
        _piece(intra, inter, buf, op, inner, across, comm.size)
        return
    _overlapped(comm, intra, inter, [buf[a:b] for a, b in chunk_bounds(buf.numel(), count)],
                op, inner, across)


def _piece(intra, inter, buf, op, inner, across, world: int) -> None:
    """The three stages of one piece, in sequence."""
    bounds = chunk_bounds(buf.numel(), intra.size)
    ring.reduce_scatter_(intra, buf, bounds, inner)
    _across(inter, _mine(intra, buf, bounds), op, inner, across, world)
    ring.all_gather_(intra, buf, bounds)


def _mine(intra, buf: torch.Tensor, bounds) -> torch.Tensor:
    a, b = bounds[intra.rank]
    return buf[a:b]


def _across(inter, block, op, inner, across, world: int) -> None:
    if inter.size > 1:
        across(inter, block, inner)
    finish_avg(block, op, world)


def _overlapped(comm, intra, inter, parts: list[torch.Tensor], op, inner, across) -> None:
    """Piece i crosses the nodes on the helper thread while this thread reduce-scatters piece
    i+1 and all-gathers piece i-1. Each group is driven by one thread, in the same order on
    every rank (the helper runs its jobs in submission order), so messages match; the
    cross-node group's messages go over the world's transport, the node's over its own."""
    helper = _helper(comm)
    bounds = [chunk_bounds(p.numel(), intra.size) for p in parts]
    pending = []
    try:
        for i, part in enumerate(parts):
            ring.reduce_scatter_(intra, part, bounds[i], inner)
            pending.append(helper.submit(_across, inter, _mine(intra, part, bounds[i]), op, inner,
                                         across, comm.size))
            if i >= 1:
                _gather(intra, parts, bounds, pending, i - 1)
        _gather(intra, parts, bounds, pending, len(parts) - 1)
    except BaseException:
        for job in pending:          # jobs not started never start; a running one ends in its
            job.cancel()             # own timeout (its peers fail too and stop answering)
        raise


def _gather(intra, parts, bounds, pending, i: int) -> None:
    pending[i].result()              # its failure (a CollectiveError naming the peer) is ours
    ring.all_gather_(intra, parts[i], bounds[i])


def _helper(comm: Communicator) -> ThreadPoolExecutor:
    """The thread that runs ``comm``'s cross-node pieces (one, so they run in order)."""
    helper = _HELPERS.get(comm)
    if helper is None:
        helper = _HELPERS[comm] = ThreadPoolExecutor(1, thread_name_prefix="ringflow-across")
    return helper
