"""Point-to-point over mpi4py: zero-copy views of tensors handed to MPI_Isend/MPI_Irecv.

The transport moves bytes and never reduces, so every tensor is passed as a
flat uint8 view of its storage (bfloat16 has no numpy dtype, and no MPI type is
needed to copy bytes). CUDA tensors go through ``__cuda_array_interface__``
when the MPI build is CUDA-aware, and are refused with a clear error otherwise.
Waits poll ``MPI_Test`` with a backoff that sleeps, so oversubscribed ranks do
not steal their peers' cores.

    tr = MpiTransport.from_launch(read_launch_env(), torch.device("cpu"), timeout=60)
    tr.isend(x, dst=1).wait(30)
"""
from __future__ import annotations

import os
import subprocess
from typing import Callable

import torch

from .. import settings
from ..launch import started_by_mpi
from .base import (TAG_SPAN, StampMismatch, Transport, TransportError, Work, fold_tag,
                   require_contiguous)
from .shm.node import BesideNodeShm
from .shm.wait import affinity, node_spin_us, spin_seconds, wait_until

# 512 KiB-4 MiB slices were fastest over Open MPI's shared memory (MACHINE-FACTS).
SLICE_BYTES = 1 << 20
# numpy views of small cpu tensors are kept (_Views): making one costs ~1-3 us, as much as
# MPI's own 4 KiB all-reduce (benchmarks/collectives/overheads.py). Large ones are made afresh:
# an entry keeps its tensor's memory alive, and there a microsecond is nothing.
VIEW_BYTES, VIEW_ENTRIES = 1 << 16, 32


def load_mpi():
    """``mpi4py.MPI``, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("the mpi transport needs mpi4py and an MPI library: "
                          "pip install 'ringflow[mpi]' (or use RINGFLOW_TRANSPORT=torch)") from e
    return MPI


def cuda_aware() -> bool:
    """Whether the MPI library can read device memory: $RINGFLOW_MPI_CUDA_AWARE, else ompi_info."""
    forced = settings.get("RINGFLOW_MPI_CUDA_AWARE")
    if forced is not None:
        return forced
    try:
        out = subprocess.run(["ompi_info", "--parsable", "--all"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "mpi_built_with_cuda_support:value:true" in out


def _refuse_without_mpi_launcher(launch) -> None:
    """Before MPI starts: refuse ranks that no MPI launcher started; keep a singleton off
    Open MPI's shared-memory BTL.

    Without mpirun each process's MPI_Init makes a singleton world of one (torchrun's ranks
    would never meet), and Open MPI singletons never unlink the 16 MiB /dev/shm/sm_segment.*
    file of their shared-memory BTL (open-mpi/ompi#13261). A world of one has no peer to reach
    through it, so its BTL is "self" unless the user chose one (OMPI_MCA_btl)."""
    if started_by_mpi():
        return
    if launch.size > 1:
        raise ValueError(
            f"the mpi transport needs ranks started by an MPI launcher (mpirun -np N python "
            f"script.py, or srun --mpi=pmix); these {launch.size} ranks were started by "
            f"{launch.launcher}, so each rank's MPI would start alone as a world of one. Launch "
            "with mpirun, or keep the launcher and set RINGFLOW_TRANSPORT=shm (one node) or torch")
    os.environ.setdefault("OMPI_MCA_btl", "self")      # read by MPI_Init, in load_mpi below


def _as_numpy(tensor: torch.Tensor):
    """A flat numpy view of a cpu tensor, in its own dtype."""
    return (tensor.detach() if tensor.requires_grad else tensor).numpy().reshape(-1)


def _as_bytes(tensor: torch.Tensor):
    """A flat uint8 numpy view of a cpu tensor (any dtype, bfloat16 included)."""
    return _as_numpy(tensor.view(torch.uint8))


class _Views:
    """numpy views of small cpu tensors by (address, bytes, dtype, kind): the same buffers come
    back call after call. Safe by address alone: a hit is a view of exactly the bytes the caller's
    (contiguous) tensor holds now, whatever tensor the view was first made from."""

    def __init__(self):
        self.views: dict = {}

    def get(self, tensor: torch.Tensor, make):
        nbytes = tensor.nbytes
        if not 0 < nbytes <= VIEW_BYTES:
            return make(tensor)
        key = (tensor.data_ptr(), nbytes, tensor.dtype, make)
        view = self.views.get(key)
        if view is None:
            if len(self.views) >= VIEW_ENTRIES:
                del self.views[next(iter(self.views))]      # the oldest
            view = self.views[key] = make(tensor)
        return view


class _MpiWork(Work):
    """An MPI request and the buffers it must keep alive until it completes.

    ``inflight`` (the transport's) holds every unfinished one: a collective that fails
    (a mismatch, a dead peer) drops its works with requests still posted, and MPI may
    write into their buffers later, so those buffers must never be freed.
    """

    def __init__(self, request, keep, peer: int, what: str, spin: tuple[float, bool],
                 inflight: set):
        self.request, self.keep, self.peer, self.what = request, keep, peer, what
        (self.spin, self.spin_yield), self.done, self.inflight = spin, False, inflight
        self.foreign: Callable[[], None] | None = None   # a receive's probe for another call's
        self._strikes = 0                                # message (MpiTransport._foreign)
        self.status = None            # a receive from any source: MPI's Status names the sender
        inflight.add(self)

    def is_completed(self) -> bool:
        if not self.done:
            self.done = bool(self.request.Test(self.status))
            if self.done:
                self.keep = None
                self.inflight.discard(self)
                if self.status is not None:
                    self.peer = self.status.Get_source()
        return self.done

    def _probe(self) -> None:
        """Another collective's message waiting from the peer while ours has not come: a
        mismatch, once seen on two looks in a row (MPI keeps one peer's messages in order)."""
        try:
            self.foreign()
            self._strikes = 0
        except StampMismatch:
            self._strikes += 1
            if self._strikes >= 2 and not self.is_completed():
                raise

    def wait(self, timeout: float | None = None) -> None:
        try:
            wait_until(self.is_completed, timeout, self.peer, self.what, self.spin,
                       spin_yield=self.spin_yield,
                       check=None if self.foreign is None else self._probe)
        except Exception as e:
            if type(e).__module__.startswith("mpi4py"):
                raise TransportError(f"{self.what} failed: {e}") from e
            raise


class MpiTransport(BesideNodeShm, Transport):
    """One rank of MPI_COMM_WORLD (a private duplicate, so user MPI traffic never mixes in)."""

    name = "mpi"
    checks_message_size = True        # see Transport
    slice_bytes = SLICE_BYTES

    def __init__(self, comm, device: torch.device):
        self.MPI = load_mpi()
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.device = torch.device(device)
        self.gpu = self.device.type == "cuda"
        local = comm.Split_type(self.MPI.COMM_TYPE_SHARED)     # ranks sharing this node's cores
        self.local_size = local.Get_size()
        node_cpus = set().union(*map(set, local.allgather(affinity())))
        self.spin = spin_seconds(node_spin_us(self.local_size, len(node_cpus)))
        # spinning yields the core only oversubscribed (as the shm transport's waits): while
        # every rank has a core a yield hands it to whatever else runs on the machine, and a
        # wait of a few microseconds became one of a scheduler slice (the fingerprint check
        # before MPI's own calls, staged rounds, MPI's requests)
        self.spin_yield = self.local_size > len(node_cpus)
        self._spin = (self.spin, self.spin_yield)
        local.Free()
        self._board = None
        self.node = None                   # NodeShm beside MPI on one node (from_launch)
        M = self.MPI
        self._ops = {"sum": M.SUM, "avg": M.SUM, "max": M.MAX, "min": M.MIN, "product": M.PROD,
                     "band": M.BAND, "bor": M.BOR, "bxor": M.BXOR}
        self._inflight: set = set()        # unfinished works (see _MpiWork)
        self._views = _Views()
        # MPI_TAG_UB is at least 32767 by the standard (Open MPI: 2**31 - 1); the stamp takes the
        # multiples of TAG_SPAN that fit above a communicator's tag (none at the minimum)
        tag_ub = comm.Get_attr(M.TAG_UB) or 32767
        self.stamp_slots = max(0, tag_ub // TAG_SPAN - 1)

    @classmethod
    def from_launch(cls, launch, device: torch.device, timeout: float) -> "MpiTransport":
        """Duplicate MPI_COMM_WORLD; CUDA buffers only when the MPI build is CUDA-aware."""
        _refuse_without_mpi_launcher(launch)
        MPI = load_mpi()
        world = MPI.COMM_WORLD
        if launch.launcher != "none" and world.Get_size() != launch.size:
            raise RuntimeError(f"MPI sees a world of {world.Get_size()} ranks but "
                               f"{launch.launcher} announced {launch.size}; launch with mpirun "
                               "(or srun --mpi=pmix), or use RINGFLOW_TRANSPORT=torch under "
                               "torchrun")
        device = torch.device(device)
        if device.type == "cuda" and not cuda_aware():
            device = torch.device("cpu")   # internal buffers stay on the host; see check_tensor
        tr = cls(world.Dup(), device)
        tr.node = tr._map_node_shm()
        return tr

    # ---- buffers ----------------------------------------------------------------------------
    # Buffers are converted on every message and collective call, so these use the cheap
    # tensor properties (is_cuda, is_cpu: ~0.1 us) and numpy's reshape (torch's costs 2 us).
    def check_tensor(self, tensor: torch.Tensor) -> None:
        require_contiguous(tensor)
        if tensor.is_cuda:
            if not self.gpu:
                raise ValueError(f"the mpi transport got a tensor on {tensor.device}, but this "
                                 "MPI build is not CUDA-aware; move it to cpu, use a CUDA-aware "
                                 "MPI (RINGFLOW_MPI_CUDA_AWARE=1 to assert it), or "
                                 "RINGFLOW_TRANSPORT=torch")
        elif not tensor.is_cpu:
            raise ValueError(f"the mpi transport moves cpu (or CUDA) tensors, got {tensor.device}")

    def _bytes(self, tensor: torch.Tensor):
        """A zero-copy uint8 view for MPI (numpy on cpu, the CUDA array interface on gpu)."""
        self.check_tensor(tensor)
        if tensor.is_cuda:
            torch.cuda.current_stream(tensor.device).synchronize()   # MPI sees no CUDA streams
            return tensor.detach().reshape(-1).view(torch.uint8)
        return self._views.get(tensor, _as_bytes)

    def _peer(self, peer: int) -> int:
        if not 0 <= peer < self.size:
            raise ValueError(f"peer rank {peer} out of range for a world of {self.size}")
        return peer

    # ---- point to point ---------------------------------------------------------------------
    # The stamp is folded into the tag: MPI never matches another call's message to a receive,
    # and a receive that waits finds such a message with a probe and reports it (_MpiWork._probe).
    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        buf = self._bytes(tensor)
        folded = fold_tag(tag, stamp, self.stamp_slots)
        req = self.comm.Isend(buf, dest=self._peer(dst), tag=folded)
        return _MpiWork(req, (buf, tensor), dst, f"send to rank {dst}", self._spin,
                        self._inflight)

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        buf = self._bytes(tensor)
        folded = fold_tag(tag, stamp, self.stamp_slots)
        req = self.comm.Irecv(buf, source=self._peer(src), tag=folded)
        work = _MpiWork(req, (buf, tensor), src, f"receive from rank {src}", self._spin,
                        self._inflight)
        if stamp is not None:
            work.foreign = lambda: self._foreign(src, tag, folded, stamp)
        return work

    def irecv_any(self, tensor: torch.Tensor, tag: int = 0, stamp: tuple | None = None) -> Work:
        """MPI_ANY_SOURCE: MPI itself orders it among the named receives."""
        buf = self._bytes(tensor)
        req = self.comm.Irecv(buf, source=self.MPI.ANY_SOURCE,
                              tag=fold_tag(tag, stamp, self.stamp_slots))
        work = _MpiWork(req, (buf, tensor), -1, "receive from any rank", self._spin,
                        self._inflight)
        work.status = self.MPI.Status()
        return work

    def _foreign(self, src: int, tag: int, folded: int, stamp: tuple) -> None:
        """Raise StampMismatch if ``src``'s next message of this communicator (``tag``) belongs
        to another collective: one that the receive waiting for ``folded`` will never match."""
        status = self.MPI.Status()
        if not self.comm.Iprobe(source=src, tag=self.MPI.ANY_TAG, status=status):
            return
        came = status.Get_tag()
        if came != folded and came % TAG_SPAN == tag and came >= TAG_SPAN:
            raise StampMismatch(f"rank {src} sent a message of another collective (tag {came}, "
                                f"this receive waits for tag {folded})", src, None, stamp)

    def _map_node_shm(self):
        """Shared memory beside MPI when every rank is on this node (shm.node): no message per
        fingerprint or staged round. Collective, at start-up, so that whether it exists is
        settled before any collective picks an algorithm; None where it cannot be had."""
        if not (self.local_size == self.size > 1 and not self.gpu):
            return None
        from .shm import ShmUnavailable
        from .shm.bootstrap import MpiExchange
        from .shm.node import NodeShm
        try:
            return NodeShm(MpiExchange(self.comm), self.rank, self.size, self.spin,
                           spin_yield=self.spin_yield)
        except ShmUnavailable:                 # every rank alike
            return None

    def fingerprint_board(self):
        """RINGFLOW_DEBUG's fingerprints: in shared memory when every rank is on this node,
        else through persistent MPI requests (mpi_board). Collective, made once."""
        if self.node is not None:
            return self.node.board
        if self._board is None:
            from .mpi_board import MpiBoard
            self._board = MpiBoard(self)
        return self._board

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None
        if self.node is not None:
            self.node.close()
            self.node = None
        if self.comm is not None and not self.MPI.Is_finalized():
            self.comm.Free()
        self.comm = None

    # ---- the MPI library's own collectives (the baseline for algorithm="native") -------------
    # Blocking calls: the fastest MPI offers, and not bounded by the timeout (benchmarks only).
    def _typed(self, tensor: torch.Tensor):
        self.check_tensor(tensor)
        if not self.native_reduces(tensor.dtype):
            raise TypeError("MPI has no bfloat16 reduction; use algorithm='ring' (or float32) "
                            "for bfloat16 with the mpi transport")
        if tensor.is_cuda:
            torch.cuda.current_stream(tensor.device).synchronize()
            return tensor.detach().reshape(-1)
        return self._views.get(tensor, _as_numpy)

    def native_reduces(self, dtype: torch.dtype) -> bool:
        return dtype != torch.bfloat16        # _typed refuses by this same test

    def _op(self, op: str):
        """MPI's op for a reduction named "sum" | "avg" | "max" | "min" | "product" | "band"..."""
        return self._ops[op]

    def _avg(self, t: torch.Tensor, op: str) -> None:
        if op == "avg" and t.numel():
            t.div_(self.size)

    def native_all_reduce(self, t: torch.Tensor, op) -> None:
        """MPI_Allreduce of ``t`` in place."""
        self.comm.Allreduce(self.MPI.IN_PLACE, self._typed(t), op=self._op(op))
        self._avg(t, op)

    def native_reduce_scatter(self, out: torch.Tensor, inp: torch.Tensor, op) -> None:
        self.comm.Reduce_scatter_block(self._typed(inp), self._typed(out), op=self._op(op))
        self._avg(out, op)

    def native_all_gather(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        self.comm.Allgather(self._bytes(inp), self._bytes(out))

    def native_broadcast(self, t: torch.Tensor, root: int) -> None:
        self.comm.Bcast(self._bytes(t), root=root)

    def native_reduce(self, t: torch.Tensor, root: int, op) -> None:
        buf = self._typed(t)
        if self.rank == root:
            self.comm.Reduce(self.MPI.IN_PLACE, buf, op=self._op(op), root=root)
            self._avg(t, op)
        else:
            self.comm.Reduce(buf, None, op=self._op(op), root=root)

    def native_all_to_all(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        self.comm.Alltoall(self._bytes(inp), self._bytes(out))

    def native_barrier(self) -> None:
        self.comm.Barrier()
