"""Two-level all-reduce: reduce-scatter inside each node, all-reduce across nodes, all-gather inside.

Only 1/L of the buffer (L ranks per node) crosses the slow link between nodes,
and it crosses it once per node instead of once per rank:

    node 0: ranks 0 1 | node 1: ranks 2 3          (LOCAL_WORLD_SIZE=2 from torchrun)
    1. ring reduce-scatter in {0,1} and in {2,3}: local rank i holds block i of its node's sum
    2. all-reduce block i across nodes in {0,2} and {1,3} (ring or recursive doubling, by size)
    3. ring all-gather in {0,1} and in {2,3}

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


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp,
               across: Callable[[Communicator, torch.Tensor, ReduceOp], None]) -> None:
    """Two-level all-reduce of flat ``buf`` in place (any node count, any ranks per node);
    ``across(inter, block, op)`` all-reduces this rank's block among the nodes."""
    if comm.size == 1:
        return
    intra, inter = node_groups(comm)
    inner = ReduceOp.SUM if op is ReduceOp.AVG else op     # divide once, by the whole world
    bounds = chunk_bounds(buf.numel(), intra.size)
    ring.reduce_scatter_(intra, buf, bounds, inner)
    a, b = bounds[intra.rank]
    if inter.size > 1:
        across(inter, buf[a:b], inner)
    finish_avg(buf[a:b], op, comm.size)
    ring.all_gather_(intra, buf, bounds)
