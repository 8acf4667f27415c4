"""What the backend's launched workers share: joining torch.distributed under torchrun or mpirun,
and each rank's inputs made from a seed, so that every rank can compute every other rank's inputs
(the single-process oracle).

    pg, gloo = join("ringflow")        # default group on ringflow, a gloo group over the same ranks
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

import ringflow  # noqa: F401 - registers the "ringflow" backend
from ringflow.launch import read_launch_env


def join(backend: str, timeout: float = 60.0):
    """init_process_group(backend) as a user would under torchrun (env://) or mpirun (the rank
    from Open MPI's variables, MASTER_ADDR/PORT exported by the test); (default group, a gloo
    group of every rank)."""
    launch = read_launch_env()
    kwargs = {}
    if "RANK" not in os.environ:            # mpirun: torch reads RANK/WORLD_SIZE, MPI says them
        kwargs = {"rank": launch.rank, "world_size": launch.size}
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), **kwargs)
    return dist.group.WORLD, dist.new_group(backend="gloo")


def rank_input(rank: int, shape, dtype=torch.float32, seed: int = 0, integral: bool = False):
    """Rank ``rank``'s input: random normals, or small integers (sums exact in any order)."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    if integral or not dtype.is_floating_point:
        return torch.randint(-8, 9, shape, generator=g).to(dtype)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def launcher_name() -> str:
    return read_launch_env().launcher
