"""How ranks find each other: the one place that makes or joins a torch.distributed store.

torchrun exports MASTER_ADDR and MASTER_PORT; its agent may already serve a TCPStore there
(TORCHELASTIC_USE_AGENT_STORE), one that outlives a group restarted by --max-restarts, so
keys on it carry the restart count. Under mpirun without those variables rank 0 opens a
store and MPI tells the others where it is; a world of one needs no network at all. The
torch transport's process group and the shm transport's handshake both start here.

    dist.init_process_group("gloo", rank=r, world_size=n, **process_group_store(launch, 60))
    store = launch_store(launch, timeout=60)          # the shm handshake's
"""
from __future__ import annotations

import datetime
import os
import socket

import torch.distributed as dist


def restart_count() -> str:
    """torchelastic's restart count: "0" on the first attempt, and outside torchrun."""
    return os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")


def _has_master() -> bool:
    return "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ


def _agent_serves_store() -> bool:
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def master_store(launch, timeout: float) -> dist.TCPStore:
    """The TCPStore at MASTER_ADDR:MASTER_PORT: torchrun's agent serves it when it says so,
    else rank 0 does and the others join."""
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), launch.size,
                         is_master=launch.rank == 0 and not _agent_serves_store(),
                         timeout=datetime.timedelta(seconds=timeout), multi_tenant=True)


def attempt_store(launch, timeout: float) -> dist.Store:
    """torchrun's agent serves one store across restarts (--max-restarts): a prefix per attempt
    keeps a restarted group from reading the dead group's addresses (gloo then hangs)."""
    return dist.PrefixStore(f"ringflow/attempt_{restart_count()}", master_store(launch, timeout))


def mpi_store(launch, timeout: float) -> dist.Store:
    """Under mpirun without MASTER_ADDR/PORT: rank 0 opens a TCPStore; MPI says where it is."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("the torch transport under mpirun needs MASTER_ADDR and MASTER_PORT, "
                           "or mpi4py to agree on them: pip install 'ringflow[mpi]' or export "
                           "MASTER_ADDR=<rank 0 host> MASTER_PORT=<free port>") from None
    td = datetime.timedelta(seconds=timeout)
    world = MPI.COMM_WORLD
    hosts = world.allgather(socket.gethostname())
    store, where = None, None
    if launch.rank == 0:                   # one node: loopback; several: rank 0's own name
        host = os.environ.get("MASTER_ADDR") or (
            "127.0.0.1" if len(set(hosts)) == 1 else socket.getfqdn())
        store = dist.TCPStore(host, int(os.environ.get("MASTER_PORT", 0)), launch.size, True,
                              timeout=td, wait_for_workers=False)
        where = (host, store.port)         # port 0 above: the OS picked a free one
    host, port = world.bcast(where, root=0)
    if launch.rank != 0:
        store = dist.TCPStore(host, port, launch.size, False, timeout=td)
    return store


def process_group_store(launch, timeout: float) -> dict:
    """init_process_group keyword arguments that say how ranks find each other."""
    if _has_master():
        if _agent_serves_store():
            return {"store": attempt_store(launch, timeout)}
        return {"init_method": "env://"}
    if launch.size == 1:
        return {"store": dist.HashStore()}
    if launch.launcher in ("mpirun", "pmi"):
        return {"store": mpi_store(launch, timeout)}
    raise RuntimeError(f"the torch transport needs MASTER_ADDR and MASTER_PORT for a world of "
                       f"{launch.size} ranks started by {launch.launcher}; export them (Slurm: "
                       "MASTER_ADDR=$(scontrol show hostnames $SLURM_NODELIST | head -n1) "
                       "MASTER_PORT=29500) or launch with torchrun")


def launch_store(launch, timeout: float) -> dist.Store:
    """The default process group's store if one exists, else the TCPStore at MASTER_ADDR:PORT
    (the shm transport's handshake, and the two-level algorithm's inside each node)."""
    if dist.is_available() and dist.is_initialized():
        return dist.distributed_c10d._get_default_store()
    if not _has_master():
        raise RuntimeError(f"the shm transport under {launch.launcher} needs MASTER_ADDR and "
                           "MASTER_PORT (torchrun sets them) or mpi4py under mpirun to exchange "
                           "segment names")
    return master_store(launch, timeout)
