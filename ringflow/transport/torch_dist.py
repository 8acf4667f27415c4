"""Point-to-point over torch.distributed: gloo for CPU tensors, NCCL for CUDA tensors.

Over NCCL every ring step goes through ``dist.batch_isend_irecv`` so that NCCL sees the
send and the receive of a step as one group (posting them one by one deadlocks NCCL);
over gloo they are posted as plain isend/irecv, which is cheaper.
The process group comes from torchrun's MASTER_ADDR/MASTER_PORT (env://); under
mpirun without them, rank 0 opens a TCPStore and tells the others its address
over MPI; a world of one uses an in-process store (``rendezvous``).

    tr = TorchTransport.from_launch(read_launch_env(), torch.device("cpu"), timeout=60)
    sw, rw = tr.sendrecv(x, dst=1, recv=y, src=1); rw.wait(30); sw.wait(30)
"""
from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from .base import (TAG_SPAN, PeerTimeout, Transport, TransportError, Work, fold_tag,
                   require_contiguous)
from .rendezvous import process_group_store
from .shm.node import BesideNodeShm
from .shm.wait import wait_until


# torch 2.13 renamed the tensor forms (*_single) and deprecated the old names; older torch has
# only the old ones.
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _translate(err: RuntimeError, peer: int, what: str, timeout: float | None) -> TransportError:
    """torch raises RuntimeError for everything; split timeouts from dead peers."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    if "timed out" in text.lower() or "timeout" in text.lower():
        limit = f" after {timeout:.1f}s" if timeout is not None else ""
        return PeerTimeout(f"{what} timed out{limit} ({text})", peer)
    return TransportError(f"{what} failed: {text}")


# gloo takes non-negative int32 tags: the stamp has this many multiples of TAG_SPAN above a tag
STAMP_SLOTS = (2**31 - 1) // TAG_SPAN - 1


class _TorchWork(Work):
    """Wraps a torch Work; gloo waits with a deadline, NCCL is polled (its wait does not block)."""

    def __init__(self, work, peer: int, what: str, poll: bool):
        self.work, self.peer, self.what, self.poll = work, peer, what, poll
        self.done = False

    def is_completed(self) -> bool:
        return self.done or self.work.is_completed()

    def wait(self, timeout: float | None = None) -> None:
        if self.done:
            return
        try:
            if self.poll:
                wait_until(self.work.is_completed, timeout, self.peer, self.what)
                self.work.wait()           # orders the NCCL stream before the caller's kernels
            elif timeout is None:
                self.work.wait()
            else:
                self.work.wait(timeout=datetime.timedelta(seconds=max(timeout, 1e-3)))
        except RuntimeError as e:
            raise _translate(e, self.peer, self.what, timeout) from e
        self.done = True


def init_process_group(launch, device: torch.device, timeout: float) -> bool:
    """Start torch.distributed's default group for any launcher; False if one already exists.

    gloo for a cpu ``device``, NCCL for cuda. Usage (e.g. under mpirun, to compare with torch):
        init_process_group(ringflow.launch.read_launch_env(), torch.device("cpu"), 60)
    """
    if dist.is_initialized():              # the user (or torch DDP code) already made one
        return False
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    td = datetime.timedelta(seconds=timeout)
    extra = {}
    if backend == "nccl":
        torch.cuda.set_device(device)
        extra["device_id"] = device         # eager NCCL init: the first batched p2p is then safe
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.size, timeout=td,
                            **process_group_store(launch, timeout), **extra)
    if backend == "gloo" and launch.size > 1:
        # Every rank fully connected before any returns: a rank that dies in its first
        # collective then fails its peers inside that collective, not inside their start-up.
        dist.barrier()
    return True


# The pipelined ring's channels across hosts: (at most, one per this many bytes of a chunk).
# Over a 2 Gbit/s link (2 emulated hosts x 1 rank, benchmarks/collectives/pipeline_sweep.py)
# two whole pieces ran 1.16-1.20x gloo at 1-16 MiB, one piece 0.88-1.00x, 4 or 8 pieces no
# better than two: a second piece overlaps the first's reduction with its own transfer. But in
# ringflow-bench two 256 KiB pieces of a 1 MiB all-reduce ran 0.51-0.53x gloo (one: 0.87-0.91x),
# so chunks under 2 MiB keep one channel.
ACROSS_HOSTS_CHANNELS = (2, 1 << 20)


class TorchTransport(BesideNodeShm, Transport):
    """One rank of the default torch.distributed process group, used point to point."""

    name = "torch"

    def __init__(self, device: torch.device, owns_group: bool):
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.device = torch.device(device)
        self.owns_group = owns_group
        self.poll = self.backend == "nccl"
        self.pipelines = not self.poll       # NCCL: a ring step's pair goes as one batch
        # gloo/TCP: slicing only adds per-call overhead (MACHINE-FACTS); NCCL pipelines itself.
        self.slice_bytes = None
        # the pipelined ring's channels at most (one per 4 MiB of a chunk): large chunks in 2-4
        # pieces let the reduction of one overlap the transfer of the next
        self.ring_channels = 4
        self.channel_bytes = None            # collectives' default: one channel per 4 MiB
        self.name = f"torch/{self.backend}"

    one_node = False                       # every rank on this node (shared memory beside gloo)
    timeout = 300.0

    @classmethod
    def from_launch(cls, launch, device: torch.device, timeout: float) -> "TorchTransport":
        """Join (or reuse) the default process group: gloo for a cpu device, NCCL for cuda."""
        tr = cls(device, owns_group=init_process_group(launch, device, timeout))
        tr.one_node, tr.timeout = launch.local_size == launch.size, timeout
        if not tr.one_node:
            tr.ring_channels, tr.channel_bytes = ACROSS_HOSTS_CHANNELS
        tr.node = tr._map_node_shm()
        return tr

    def _map_node_shm(self):
        """Shared memory beside gloo when every rank is on this node (shm.node): microseconds
        where a gloo message costs hundreds. Collective, at start-up, so that whether it exists
        is settled before any collective picks an algorithm; None where it cannot be had (on
        every rank alike)."""
        if not (self.one_node and self.size > 1 and self.backend == "gloo"):
            return None
        from .shm import ShmUnavailable
        from .shm.bootstrap import StoreExchange
        from .shm.node import BESIDE_SPIN_US, NodeShm
        from .shm.wait import spin_seconds
        exchange = StoreExchange(dist.distributed_c10d._get_default_store(), "ringflow/node",
                                 self.rank, self.size, self.timeout)
        try:
            return NodeShm(exchange, self.rank, self.size, spin_seconds(BESIDE_SPIN_US))
        except ShmUnavailable:                 # every rank alike: messages it is
            return None

    def fingerprint_board(self):
        """RINGFLOW_DEBUG's fingerprints in shared memory on one node; else None (messages)."""
        return self.node.board if self.node is not None else None

    # ---- point to point ---------------------------------------------------------------------
    def check_tensor(self, tensor: torch.Tensor) -> None:
        require_contiguous(tensor)
        want = "cuda" if self.backend == "nccl" else "cpu"
        if tensor.device.type != want:
            raise ValueError(f"the torch/{self.backend} transport moves {want} tensors, got one on "
                             f"{tensor.device}; move it with .to('{self.device}') or pick the "
                             f"transport for that device (gloo: cpu, nccl: cuda)")

    def _peer(self, peer: int) -> int:
        if not 0 <= peer < self.size:
            raise ValueError(f"peer rank {peer} out of range for a world of {self.size}")
        return peer

    def _post(self, fn, tensor: torch.Tensor, peer: int, tag: int, what: str) -> Work:
        self.check_tensor(tensor)
        try:
            return _TorchWork(fn(tensor, self._peer(peer), tag=tag), peer, what, self.poll)
        except RuntimeError as e:
            raise _translate(e, peer, what, None) from e

    # The stamp is folded into the tag (gloo matches by tag, so another call's message is never
    # taken: the wait times out instead). NCCL ignores tags: there a mismatch is not caught.
    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        return self._post(dist.isend, tensor, dst, fold_tag(tag, stamp, STAMP_SLOTS),
                          f"send to rank {dst}")

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        return self._post(dist.irecv, tensor, src, fold_tag(tag, stamp, STAMP_SLOTS),
                          f"receive from rank {src}")

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int,
                 tag: int = 0, stamp: tuple | None = None) -> tuple[Work, Work]:
        """NCCL: one batch, launched as a group; gloo: both posted before either waits."""
        if not self.poll:                  # gloo: plain isend/irecv never deadlock, and skip
            # batch_isend_irecv's coalescing (~100 us of Python per step, benchmarks/results)
            rw = self.irecv(recv, src, tag, stamp)
            return self.isend(send, dst, tag, stamp), rw
        tag = fold_tag(tag, stamp, STAMP_SLOTS)
        self.check_tensor(send)
        self.check_tensor(recv)
        ops = [dist.P2POp(dist.irecv, recv, self._peer(src), tag=tag),
               dist.P2POp(dist.isend, send, self._peer(dst), tag=tag)]
        try:
            works = dist.batch_isend_irecv(ops)
        except RuntimeError as e:
            raise _translate(e, src, f"send to {dst} / receive from {src}", None) from e
        recv_w, send_w = (works[0], works[-1]) if len(works) > 1 else (works[0], works[0])
        return (_TorchWork(send_w, dst, f"send to rank {dst}", self.poll),
                _TorchWork(recv_w, src, f"receive from rank {src}", self.poll))

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
            self.node = None
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False

    # ---- the backend's own collectives (the baseline for algorithm="native") -----------------
    def _op(self, op: str):
        """torch's op for a reduction named "sum" | "avg" | "max" | "min" | "product"."""
        if op == "avg" and self.backend != "nccl":
            return dist.ReduceOp.SUM       # gloo's AVG is missing in older torch: SUM, then divide
        return {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.AVG, "max": dist.ReduceOp.MAX,
                "min": dist.ReduceOp.MIN, "product": dist.ReduceOp.PRODUCT,
                "band": dist.ReduceOp.BAND, "bor": dist.ReduceOp.BOR, "bxor": dist.ReduceOp.BXOR}[op]

    def _avg(self, t: torch.Tensor, op: str) -> None:
        if op == "avg" and self.backend != "nccl" and t.numel():
            t.div_(self.size)

    def native_all_reduce(self, t: torch.Tensor, op) -> None:
        """torch.distributed.all_reduce of ``t`` in place."""
        dist.all_reduce(t, op=self._op(op))
        self._avg(t, op)

    def native_reduce_scatter(self, out: torch.Tensor, inp: torch.Tensor, op) -> None:
        _REDUCE_SCATTER(out, inp, op=self._op(op))
        self._avg(out, op)

    def native_all_gather(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        _ALL_GATHER(out, inp)

    def native_broadcast(self, t: torch.Tensor, root: int) -> None:
        dist.broadcast(t, src=root)

    def native_reduce(self, t: torch.Tensor, root: int, op) -> None:
        if self.rank != root:              # gloo scribbles on non-root inputs; ringflow keeps them
            dist.reduce(t.clone(), dst=root, op=self._op(op))
            return
        dist.reduce(t, dst=root, op=self._op(op))
        self._avg(t, op)

    def native_all_to_all(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        dist.all_to_all_single(out, inp)

    def native_barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()
