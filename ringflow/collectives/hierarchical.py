"""Two-level all-reduce: reduce-scatter inside each node, all-reduce across nodes, all-gather inside.

Only 1/L of the buffer (L ranks per node) crosses the slow link between nodes,
and it crosses it once per node instead of once per rank:

    node 0: ranks 0 1 | node 1: ranks 2 3          (LOCAL_WORLD_SIZE=2 from torchrun)
    1. ring reduce-scatter in {0,1} and in {2,3}: local rank i holds block i of its node's sum
    2. all-reduce block i across nodes in {0,2} and {1,3} (ring or recursive doubling, by size)
    3. ring all-gather in {0,1} and in {2,3}

The node layout comes from the Communicator (``local_size``, set by ringflow.init
from LOCAL_WORLD_SIZE / OMPI_COMM_WORLD_LOCAL_SIZE). Inside a node the groups
use ``comm.intra_transport`` when one was attached (the shared-memory transport),
else the world's own transport. Every step either copies bytes or reduces in an
order fixed by the ring, so ranks end bitwise identical.

    rc.all_reduce(t, algorithm="two_level")
"""
from __future__ import annotations

import weakref

import torch

from . import ring, select
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
        shm = getattr(comm, "intra_transport", None)
        if shm is not None and comm.local_size > 1:
            intra = Communicator(shm, timeout=comm.timeout, debug=comm.debug)
            intra.parent = comm            # its failures name the collective running on comm
        groups = _GROUPS[comm] = (intra, inter)
    return groups


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Two-level all-reduce of flat ``buf`` in place (any node count, any ranks per node)."""
    if comm.size == 1:
        return
    intra, inter = node_groups(comm)
    inner = ReduceOp.SUM if op is ReduceOp.AVG else op     # divide once, by the whole world
    bounds = chunk_bounds(buf.numel(), intra.size)
    ring.reduce_scatter_(intra, buf, bounds, inner)
    a, b = bounds[intra.rank]
    if inter.size > 1:
        block = buf[a:b]
        _, across = select.choose(inter, "all_reduce", block.numel() * block.element_size(),
                                  exclude=("two_level", "native", "naive"), record=False)
        across(inter, block, inner)
    finish_avg(buf[a:b], op, comm.size)
    ring.all_gather_(intra, buf, bounds)


_SHM_GENERATION = [0]


def use_shm_inside_nodes(comm: Communicator, timeout: float | None = None) -> None:
    """Give ``comm``'s two-level algorithm a shared-memory transport among each node's ranks.

    Call it on every rank, right after ``ringflow.init()``; the handshake runs over
    MPI under the mpi transport, else over torch.distributed's store.
        comm = ringflow.init(); use_shm_inside_nodes(comm)
    """
    from ..launch import read_launch_env
    from ..transport.rendezvous import launch_store
    from ..transport.shm import ShmTransport
    from ..transport.shm.bootstrap import MpiExchange, StoreExchange
    if comm.local_size == 1:
        return
    timeout = comm.timeout if timeout is None else timeout
    _SHM_GENERATION[0] += 1
    if comm.transport.name == "mpi":
        node_comm = comm.transport.comm.Split(color=comm.node, key=comm.local_rank)
        exchange = MpiExchange(node_comm)
    else:
        exchange = StoreExchange(launch_store(read_launch_env(), timeout),
                                 f"ringflow/shm/node{comm.node}/{_SHM_GENERATION[0]}",
                                 comm.local_rank, comm.local_size, timeout)
    comm.intra_transport = ShmTransport(comm.local_rank, comm.local_size, exchange=exchange,
                                        timeout=timeout)
    _GROUPS.pop(comm, None)
