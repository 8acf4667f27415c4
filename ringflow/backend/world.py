"""The ringflow Communicator behind each torch process group of backend "ringflow".

The first group (torch's default group) gets a transport of its own, built from the store torch
hands the backend, over what ringflow would choose: MPI under mpirun, shared memory when every
rank is on one node, else gloo point-to-point on a separate gloo group. Later groups
(``new_group``) are sub-groups of it: the same transport, another message tag.

    comm = group_communicator(store, rank=0, size=2, timeout=300.0, global_ranks=[])
"""
from __future__ import annotations

import sys

import torch

from .. import settings
from ..collectives.communicator import Communicator
from ..launch import read_launch_env

_WORLD: list[Communicator] = []       # the default group's communicator, while it lives


def _mpi_fits(rank: int, size: int) -> bool:
    """mpirun started this process and torch's ranks are MPI's ranks."""
    try:
        launch = read_launch_env()
    except ValueError:          # half a launcher's variables (torch's suite sets WORLD_SIZE
        return False            # alone): torch was given rank and size, not a launcher
    if launch.launcher not in ("mpirun", "pmi") or (launch.rank, launch.size) != (rank, size):
        return False
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _shm(store, rank: int, size: int, timeout: float):
    """Shared memory among the group's ranks, or None (every rank alike) when they are on several
    nodes or /dev/shm is too small: the handshake compares the ranks' node ids."""
    from ..transport.shm import ShmTransport, ShmUnavailable
    try:
        return ShmTransport(rank, size, store=store, prefix="backend", timeout=timeout)
    except ShmUnavailable as e:
        print(f"ringflow backend: shared memory unavailable ({e}); using gloo point-to-point",
              file=sys.stderr, flush=True)
    except RuntimeError as e:
        if "one node" not in str(e):
            raise
    return None


def world_transport(store, rank: int, size: int, timeout: float):
    """The transport of the default group; RINGFLOW_TRANSPORT (auto | shm | mpi | torch) picks."""
    kind = settings.get("RINGFLOW_TRANSPORT")
    if kind not in ("auto", "shm", "mpi", "torch", "local"):
        raise ValueError(f"RINGFLOW_TRANSPORT={kind!r} is unknown; use auto, shm, mpi or torch")
    if size == 1:
        from ..transport.local import LocalTransport
        return LocalTransport.group(1)[0]
    if kind == "mpi" or (kind == "auto" and _mpi_fits(rank, size)):
        from ..transport.mpi import MpiTransport
        return MpiTransport.from_launch(read_launch_env(), torch.device("cpu"), timeout)
    if kind in ("auto", "shm"):
        tr = _shm(store, rank, size, timeout)
        if tr is not None or kind == "shm":
            if tr is None:
                raise RuntimeError("RINGFLOW_TRANSPORT=shm, but the ranks are not on one node")
            return tr
    from .gloo_peer import GlooPeerTransport
    return GlooPeerTransport(store, rank, size, timeout)


def group_communicator(store, rank: int, size: int, timeout: float,
                       global_ranks: list[int]) -> Communicator:
    """The default group's Communicator (first call, or after it was closed), else a sub-group
    of it over ``global_ranks`` (its ranks in the default group, in group-rank order)."""
    world = _WORLD[0] if _WORLD else None
    if world is None:
        world = Communicator(world_transport(store, rank, size, timeout), timeout=timeout)
        _WORLD.append(world)
        return world
    if not global_ranks or list(global_ranks) == world.ranks:
        return world.subgroup(range(world.size))    # a second group of every rank: its own tag
    return world.subgroup(global_ranks)


def close_world(comm: Communicator) -> None:
    """Release the default group's transport (torch destroys the default group last)."""
    if _WORLD and _WORLD[0] is comm:
        _WORLD.clear()
        comm.close()
        comm.transport.close()
