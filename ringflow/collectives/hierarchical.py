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
for the node's own copies. Two pieces cross at once (IN_FLIGHT), each stream on its own
cross-node group (own tags) and helper thread, so the link carries piece i+1 while piece i
ends (its last reduction and message latency) instead of idling between pieces:

    node:    RS0 RS1 AG0 RS2 AG1 RS3 AG2 ... AGm      (this thread, in this order on every rank)
    across A:    X0..........X2..........X4 ...       (even pieces, in order)
    across B:        X1..........X3 ...               (odd pieces, in order)

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
_STREAMS: "weakref.WeakKeyDictionary[Communicator, list[Communicator]]" = \
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


def cross_streams(comm: Communicator, count: int) -> list[Communicator]:
    """``count`` groups over the cross-node peers (stream 0 is node_groups' own), each on its
    own tags and scratch, so ``count`` threads can all-reduce a piece each at once."""
    streams = _STREAMS.setdefault(comm, [node_groups(comm)[1]])
    members = range(comm.local_rank, comm.size, comm.local_size)
    while len(streams) < count:
        streams.append(comm.subgroup(members, stream=len(streams)))
    return streams[:count]


# Pieces of the overlapped schedule: at least this big, and at most MAX_PIECES of them, two
# crossing the nodes at once. On 2 emulated hosts x 2 ranks at 2 Gbit/s
# (benchmarks/collectives/two_level_sweep.py, 2026-12-06/07): 8 pieces of 512 KiB at 4 MiB ran
# 1.45x slower than 1-4 pieces (each piece costs cross-node message latency and a wait on the
# node's other rank); 8 pieces beat no overlap by 10-15 % at 16-64 MiB; two in flight beat one
# by ~0.1x gloo at 16 MiB and with 1 MiB pieces at 4 MiB (1.22-1.30x against 1.07-1.20x).
PIECE_BYTES = 1 << 20
MAX_PIECES = 8
IN_FLIGHT = 2
_HELPERS: "weakref.WeakKeyDictionary[Communicator, list[ThreadPoolExecutor]]" = \
    weakref.WeakKeyDictionary()


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp,
               across: Callable[[Communicator, torch.Tensor, ReduceOp], None],
               piece_bytes: int | None = None, in_flight: int | None = None) -> None:
    """Two-level all-reduce of flat ``buf`` in place (any node count, any ranks per node);
    ``across(inter, block, op)`` all-reduces this rank's block among the nodes. Buffers of
    two pieces or more (``piece_bytes``) overlap the stages, ``in_flight`` pieces crossing
    the nodes at once (module docstring)."""
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
    in_flight = IN_FLIGHT if in_flight is None else in_flight
    if in_flight < 1:
        raise ValueError(f"two_level needs in_flight >= 1 cross-node pieces, got {in_flight}")
    _overlapped(comm, intra, min(in_flight, count),
                [buf[a:b] for a, b in chunk_bounds(buf.numel(), count)], op, inner, across)


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


def _overlapped(comm, intra, in_flight: int, parts: list[torch.Tensor], op, inner,
                across) -> None:
    """Piece i crosses the nodes on helper i % in_flight (over cross-node stream i % in_flight)
    while this thread reduce-scatters piece i+1 and all-gathers piece i-1. Each group is driven
    by one thread, in the same order on every rank (a helper runs its jobs in submission
    order), so messages match; the streams' tags differ, so they never match each other's."""
    helpers, streams = _helpers(comm, in_flight), cross_streams(comm, in_flight)
    bounds = [chunk_bounds(p.numel(), intra.size) for p in parts]
    pending = []
    try:
        for i, part in enumerate(parts):
            ring.reduce_scatter_(intra, part, bounds[i], inner)
            k = i % in_flight
            pending.append(helpers[k].submit(_across, streams[k], _mine(intra, part, bounds[i]),
                                             op, inner, across, comm.size))
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


def _helpers(comm: Communicator, count: int) -> list[ThreadPoolExecutor]:
    """The threads that run ``comm``'s cross-node pieces: one per stream, so each stream's
    pieces run in order."""
    helpers = _HELPERS.setdefault(comm, [])
    while len(helpers) < count:
        helpers.append(ThreadPoolExecutor(1, thread_name_prefix=f"ringflow-across{len(helpers)}"))
    return helpers[:count]
