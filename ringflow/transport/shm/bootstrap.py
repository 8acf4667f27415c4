"""Setting up the shared-memory rings: swap segment names through the launcher, map, unlink.

The handshake needs only an all-gather and a barrier, so it runs over either a
torch.distributed Store (torchrun: the agent's or rank 0's TCPStore, or the
default process group's store; see transport/rendezvous.py) or MPI (mpirun:
``MPI.COMM_WORLD``).

1. each rank creates its segment (its inbound rings) under a fresh random name;
2. all-gather (node id, path, ring size); every rank maps every other segment;
3. barrier; then each rank unlinks its own name. From here on nothing is left in
   /dev/shm even if a rank is killed: the kernel frees the pages with the last map.

    ex = StoreExchange(store, "ringflow/shm", r, n, timeout=60)
    own, peers, inbound, outbound, cpus = map_segments(ex, r, n, ring_bytes=8 << 20)
"""
from __future__ import annotations

import datetime
import os
import secrets
import socket
import tempfile

from ... import settings
from .ring import Ring
from .segment import Segment, ShmUnavailable
from .wait import affinity


class StoreExchange:
    """All-gather and barrier over a torch.distributed Store (keys under ``prefix``).

    Each rank counts its own handshakes on the store, so the k-th transport built on a
    store uses fresh keys ``prefix/k/...`` on every rank (re-init, several groups).
    """

    def __init__(self, store, prefix: str, rank: int, size: int, timeout: float):
        self.store, self.rank, self.size = store, rank, size
        self.timeout = datetime.timedelta(seconds=timeout)
        self.prefix = f"{prefix}/{store.add(f'{prefix}/generation/{rank}', 1)}"

    def allgather(self, value: str) -> list[str]:
        self.store.set(f"{self.prefix}/info/{self.rank}", value)
        keys = [f"{self.prefix}/info/{i}" for i in range(self.size)]
        self.store.wait(keys, self.timeout)
        return [self.store.get(k).decode() for k in keys]

    def barrier(self) -> None:
        self.store.set(f"{self.prefix}/mapped/{self.rank}", "1")
        self.store.wait([f"{self.prefix}/mapped/{i}" for i in range(self.size)], self.timeout)


class MpiExchange:
    """All-gather and barrier over an mpi4py communicator (bootstrap under mpirun)."""

    def __init__(self, comm):
        self.comm = comm

    def allgather(self, value: str) -> list[str]:
        return self.comm.allgather(value)

    def barrier(self) -> None:
        self.comm.Barrier()


def launch_exchange(launch, timeout: float):
    """The handshake channel the launcher offers: MPI under mpirun, else a torch Store."""
    if launch.launcher in ("mpirun", "pmi"):
        try:
            from mpi4py import MPI
            return MpiExchange(MPI.COMM_WORLD)
        except ImportError:
            pass
    from ..rendezvous import launch_store, restart_count
    return StoreExchange(launch_store(launch, timeout), f"ringflow/shm/a{restart_count()}",
                         launch.rank, launch.size, timeout)


def _node_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


def _shm_dir() -> str:
    folder = settings.get("RINGFLOW_SHM_DIR")
    if folder is not None:
        return folder
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def map_segments(exchange, rank: int, size: int, ring_bytes: int, stage_half: int = 0):
    """(own segment, {peer: segment}, {src: inbound Ring}, {dst: outbound Ring}, node CPUs) for
    this rank; node CPUs: how many CPUs the ranks may use together (their affinities' union).
    Each segment ends with a staging area of two ``stage_half`` halves (see stage)."""
    nbytes = Segment.bytes_for(max(size - 1, 1), ring_bytes, stage_half)
    path = os.path.join(_shm_dir(), f"ringflow-{os.getpid()}-{secrets.token_hex(4)}-r{rank}")
    try:
        own = Segment.create(path, nbytes)
    except ShmUnavailable as e:
        if size > 1:                             # the peers must not wait for our segment
            exchange.allgather(f"!{e}")
        raise
    if size == 1:
        own.unlink()
        return own, {}, {}, {}, len(affinity())
    try:
        said = exchange.allgather(f"{_node_id()}|{path}|{ring_bytes}/{stage_half}|"
                                  + ",".join(map(str, affinity())))
        failed = [(p, text[1:]) for p, text in enumerate(said) if text.startswith("!")]
        if failed:                               # every rank raises alike: callers may fall back
            own.close()
            raise ShmUnavailable(f"rank {failed[0][0]}: {failed[0][1]}")
        infos = [i.split("|") for i in said]
        _check_same_node(infos, rank)
        peers = {p: Segment.open(infos[p][1], nbytes) for p in range(size) if p != rank}
        exchange.barrier()                       # everybody mapped everything: the names can go
    finally:
        own.unlink()
    for p, seg in peers.items():
        if not _visible(seg.pid.value):
            seg.pid = _Unknown()                # another PID namespace: death shows as timeout
    inbound = {s: Ring(own, s if s < rank else s - 1, ring_bytes) for s in peers}
    outbound = {d: Ring(peers[d], rank if rank < d else rank - 1, ring_bytes) for d in peers}
    cpus = {c for info in infos for c in info[3].split(",") if c}
    return own, peers, inbound, outbound, len(cpus)


def _check_same_node(infos: list[list[str]], rank: int) -> None:
    mine = infos[rank]
    for p, info in enumerate(infos):
        if info[0] != mine[0]:
            raise RuntimeError(f"the shm transport needs every rank on one node, but rank {p} runs "
                               f"on {info[0]} and rank {rank} on {mine[0]}; use the torch or mpi "
                               "transport across nodes (shm serves inside a node)")
        if info[2] != mine[2]:
            raise ValueError(f"ranks disagree on the ring/stage sizes (rank {p}: {info[2]} bytes, "
                             f"rank {rank}: {mine[2]}); set RINGFLOW_SHM_RING_BYTES and "
                             "RINGFLOW_SHM_STAGE_BYTES the same everywhere")


def _visible(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True
    except (ProcessLookupError, OverflowError, ValueError):
        return False


class _Unknown:
    value = 0
