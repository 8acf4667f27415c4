"""Start and stop the world: pick device and transport from the launcher (launch.py), build the
world Communicator. The top of the stack: no layer imports this module.

    comm = ringflow.init(timeout=60)    # idempotent: later calls return the same world
"""
from __future__ import annotations

import atexit
import sys

import torch

from . import settings
from .launch import LaunchEnv, pick_device, read_launch_env

_WORLD = None


def _pick_transport(launch: LaunchEnv, requested: str,
                    device: torch.device = torch.device("cpu")) -> str:
    """The transport for ``requested`` ("auto" resolved); "shm|torch" means shm, else torch."""
    if requested not in ("auto", "torch", "mpi", "local", "shm"):
        raise ValueError(f"transport {requested!r} is unknown; use torch, mpi, shm, local or auto "
                         "(RINGFLOW_TRANSPORT)")
    if requested != "auto":
        return requested
    if launch.size == 1:
        return "local"
    if launch.launcher in ("mpirun", "pmi"):
        try:
            import mpi4py  # noqa: F401
            return "mpi"
        except ImportError:
            return "torch"
    if launch.launcher == "torchrun" and launch.local_size == launch.size and device.type == "cpu":
        # One node of CPU ranks: memory copies beat loopback TCP 2.5-4x (benchmarks/results).
        return "shm|torch"
    return "torch"


def _make_transport(kind: str, launch: LaunchEnv, device: torch.device, timeout: float):
    if kind == "shm|torch":
        from .transport.shm import ShmUnavailable
        try:
            return _make_transport("shm", launch, device, timeout)
        except ShmUnavailable as e:          # raised on every rank alike (shm.bootstrap)
            if launch.rank == 0:
                print(f"ringflow: shared memory unavailable ({e}); using the torch transport",
                      file=sys.stderr, flush=True)
            return _make_transport("torch", launch, device, timeout)
    if kind == "local":
        if launch.size != 1:
            raise ValueError("the local transport runs threads in one process; under a launcher "
                             "use RINGFLOW_TRANSPORT=torch or mpi")
        from .transport.local import LocalTransport
        return LocalTransport.group(1)[0]
    if kind == "torch":
        from .transport.torch_dist import TorchTransport
        return TorchTransport.from_launch(launch, device, timeout)
    if kind == "mpi":
        from .transport.mpi import MpiTransport
        return MpiTransport.from_launch(launch, device, timeout)
    from .transport.shm import ShmTransport
    return ShmTransport.from_launch(launch, device, timeout)


_SHM_GENERATION = [0]    # each node transport gets fresh store keys (init after shutdown)


def _make_intra(intra: str | None, launch: LaunchEnv, world_transport, timeout: float,
                device: torch.device = torch.device("cpu")):
    """The transport among this node's ranks for two-level collectives (None: the world's own).

    "shm": shared memory, its handshake over MPI under the mpi transport, else over
    torch.distributed's store. "auto" (None): shm where CPU ranks share a node of a world
    that spans several (the world's transport there is TCP, loopback inside the node: on two
    emulated hosts x 2 ranks this made two_level 1.0x gloo instead of 1.3x); the world's own
    transport where shared memory is unavailable."""
    if intra not in (None, "auto", "same", "shm"):
        raise ValueError(f"intra={intra!r} is unknown; use 'shm' (shared memory inside each node), "
                         "'same' (the world's transport) or 'auto'")
    if intra in (None, "auto"):
        return _auto_intra(launch, world_transport, timeout, device)
    if intra != "shm" or launch.local_size == 1:
        return None
    from .transport.shm import ShmTransport
    from .transport.rendezvous import launch_store
    from .transport.shm.bootstrap import MpiExchange, StoreExchange
    node = launch.rank // launch.local_size
    _SHM_GENERATION[0] += 1
    if world_transport.name == "mpi":
        exchange = MpiExchange(world_transport.comm.Split(color=node, key=launch.local_rank))
    else:
        exchange = StoreExchange(launch_store(launch, timeout),
                                 f"ringflow/shm/node{node}/{_SHM_GENERATION[0]}",
                                 launch.local_rank, launch.local_size, timeout)
    return ShmTransport(launch.local_rank, launch.local_size, exchange=exchange, timeout=timeout)


def _auto_intra(launch: LaunchEnv, world_transport, timeout: float, device: torch.device):
    """intra="auto": shared memory among a node's CPU ranks when the world spans nodes."""
    if (launch.local_size == 1 or launch.size == launch.local_size or device.type != "cpu"
            or world_transport.name.startswith("shm")):
        return None
    from .transport.shm import ShmUnavailable
    try:
        return _make_intra("shm", launch, world_transport, timeout)
    except ShmUnavailable as e:              # the node's ranks see the same /dev/shm
        if launch.local_rank == 0:
            print(f"ringflow: shared memory unavailable inside node {launch.rank // launch.local_size}"
                  f" ({e}); two_level uses the {world_transport.name} transport there",
                  file=sys.stderr, flush=True)
        return None


def init(transport: str | None = None, timeout: float | None = None,
         device: torch.device | str | None = None, algorithm: str | None = None,
         intra: str | None = None):
    """Start (once) and return the world Communicator.

    transport: "torch" | "mpi" | "shm" | "local" | "auto" (default: $RINGFLOW_TRANSPORT or auto:
    shm under torchrun when every rank is a CPU rank of one node (torch if /dev/shm is too
    small), else torch under torchrun and Slurm; mpi under mpirun when mpi4py imports; local
    for a world of one). timeout (seconds, default $RINGFLOW_TIMEOUT or 300) bounds every wait: each step of a
    collective, and the process-group rendezvous of the torch transport. device: where internal
    buffers live and which backend the torch transport uses (cuda: NCCL, cpu: gloo).
    algorithm: what RINGFLOW_ALGORITHM says (``ring``, ``all_reduce=rd,broadcast=tree``), given
    as an argument instead; default: the variable. intra: "shm" gives the two-level algorithm
    shared memory among each node's ranks (every rank must pass the same); "same": the world's
    transport; default ("auto"): shm for CPU ranks of a world that spans several nodes, else the
    world's transport.
    """
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    from .collectives.communicator import Communicator, default_timeout
    from .collectives.group import set_default
    launch = read_launch_env()
    timeout = default_timeout() if timeout is None else float(timeout)
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout}")
    dev = torch.device(device) if device is not None else pick_device(launch.local_rank)
    kind = _pick_transport(launch, transport or settings.get("RINGFLOW_TRANSPORT"), dev)
    try:
        tr = _make_transport(kind, launch, dev, timeout)
    except RuntimeError as e:    # torch's DistNetworkError & co: say where and what to check
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"ringflow.init: rank {launch.rank} of {launch.size} ({launch.launcher}) "
                           f"could not start the {kind} transport: {first}. Another rank may have "
                           "died or never started (read its log), MASTER_ADDR/MASTER_PORT may "
                           "point to the wrong host, or the port may be taken") from e
    _WORLD = Communicator(tr, timeout=timeout, local_size=launch.local_size, algorithm=algorithm,
                          intra_transport=_make_intra(intra, launch, tr, timeout, dev),
                          launch=launch)
    set_default(_WORLD)          # what group=None means in collectives/ and parallel/
    from .collectives import probe
    probe.run(_WORLD)            # where auto's prior leaves a choice to this machine's state
    if launch.size > 1:   # a launcher tearing the job down gets this rank's flight recorder first
        from .collectives.flight import install_signal_dump
        install_signal_dump(lambda: [_WORLD.recorder] if _WORLD is not None else [])
    atexit.register(shutdown)    # a script that forgets shutdown() still leaves cleanly
    return _WORLD


def is_initialized() -> bool:
    return _WORLD is not None


def world():
    """The world Communicator; raises if ``init()`` was not called."""
    from .collectives.group import default
    return default()


def shutdown() -> None:
    """Stop the background thread, compare the ranks' collectives (collectives/tally.py: a rank
    that made calls its peers did not is named on stderr), close the transport; init() may be
    called again."""
    global _WORLD
    if _WORLD is None:
        return
    comm, _WORLD = _WORLD, None
    from .collectives.group import set_default
    set_default(None)
    atexit.unregister(shutdown)
    try:
        comm.close()                      # runs what is queued first
        from .collectives.tally import tally
        tally(comm, timeout=min(comm.timeout, 10.0))
    finally:
        comm.transport.close()
