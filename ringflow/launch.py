"""Who this process is, as its launcher says: the bottom of the stack (stdlib and torch only).

Launchers recognised: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE),
Open MPI (OMPI_COMM_WORLD_*), MPICH/PMI (PMI_RANK, PMI_SIZE), Slurm (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID); with none of them the world is one rank.

    launch = read_launch_env()          # LaunchEnv(launcher='torchrun', rank=0, size=2, ...)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import torch


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """Who this process is, as the launcher told it."""
    launcher: str          # torchrun | mpirun | pmi | slurm | none
    rank: int
    size: int
    local_rank: int
    local_size: int


def _ints(env: Mapping[str, str], *names: str) -> list[int] | None:
    present = [n for n in names if n in env]
    if not present:
        return None
    if len(present) < len(names):       # half a launcher: guessing a world of one would hide it
        missing = [n for n in names if n not in env]
        raise ValueError(f"{', '.join(present)} is set but {', '.join(missing)} is not; set both "
                         "(torchrun and mpirun do), or unset them to run as a single process")
    try:
        return [int(env[n]) for n in names]
    except ValueError:
        raise ValueError("launcher variables must be integers: " +
                         ", ".join(f"{n}={env[n]!r}" for n in names)) from None


def read_launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Detect the launcher from environment variables (torchrun first, then MPI, PMI, Slurm)."""
    env = os.environ if env is None else env
    if (v := _ints(env, "RANK", "WORLD_SIZE")) is not None:
        rank, size = v
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_size = int(env.get("LOCAL_WORLD_SIZE", size))
        launcher = "torchrun"
    elif (v := _ints(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")) is not None:
        rank, size = v
        local_rank = int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", rank))
        local_size = int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", size))
        launcher = "mpirun"
    elif (v := _ints(env, "PMI_RANK", "PMI_SIZE")) is not None:
        rank, size = v
        local_rank = int(env.get("MPI_LOCALRANKID", env.get("PMI_LOCAL_RANK", rank)))
        local_size = int(env.get("MPI_LOCALNRANKS", env.get("PMI_LOCAL_SIZE", size)))
        launcher = "pmi"
    elif (v := _ints(env, "SLURM_PROCID", "SLURM_NTASKS")) is not None:
        rank, size = v
        local_rank = int(env.get("SLURM_LOCALID", 0))
        local_size = int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]) \
            if "SLURM_NTASKS_PER_NODE" in env else size
        launcher = "slurm"
    else:
        return LaunchEnv("none", 0, 1, 0, 1)
    if not 0 <= rank < size:
        raise ValueError(f"{launcher}: rank {rank} is outside a world of {size} ranks")
    if not 0 <= local_rank < local_size:
        raise ValueError(f"{launcher}: local rank {local_rank} is outside a node of {local_size}")
    return LaunchEnv(launcher, rank, size, local_rank, local_size)


# What an MPI launcher exports (mpirun / mpiexec of Open MPI, MPICH's PMI, PMIx under srun --mpi=pmix)
_MPI_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def started_by_mpi(env: Mapping[str, str] | None = None) -> bool:
    """Whether an MPI launcher started this process, so that MPI_Init joins the launcher's
    world; otherwise (plain python, torchrun) MPI starts each process alone, a world of one."""
    env = os.environ if env is None else env
    return any(name in env for name in _MPI_LAUNCHER_VARS)


def pick_device(local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
