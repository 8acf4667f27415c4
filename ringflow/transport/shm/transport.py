"""Ranks on one node talking through shared-memory ring buffers (memory speed, no MPI needed).

Every directed pair (src -> dst) has one single-producer single-consumer ring
in dst's segment (``ring``, ``segment``); an Outbox streams sends into it and an Inbox
matches them to receives (``channel``). Copies are ``ctypes.memmove`` with
the GIL released. Sends and receives make progress whenever any Work of this
transport is waited on or polled, so the ring pattern "post a send right and a
receive left, wait for the receive first" cannot deadlock, even with messages
many times larger than a ring. A waiter spins briefly while every rank has a
core, then sleeps on its futex doorbell.

``irecv_reduce`` receives and reduces in one pass straight from the ring (one
copy less than receive-then-reduce); ring algorithms use it when present. Each
segment also ends with a staging area (``stage``) that staged collectives
read in place, with no messages at all.

    tr = ShmTransport(rank, size, store=store)          # or ringflow.init(transport="shm")
    sw, rw = tr.sendrecv(x, (rank + 1) % size, y, (rank - 1) % size)
    rw.wait(30); sw.wait(30)
"""
from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Callable

import torch

from ... import settings
from ..base import Transport, TransportError, Work, require_contiguous
from .board import Board
from .bootstrap import StoreExchange, launch_exchange, map_segments
from .channel import CODES, Inbox, Message, Outbox, post_any
from .ring import HEADER
from .segment import STATE_CLOSED, Segment, pid_alive
from .stage import Stage, stage_half
from .wait import Bell, spin_seconds, wait_until

_LIVE: "weakref.WeakSet[ShmTransport]" = weakref.WeakSet()


class ShmTransport(Transport):
    """Point-to-point over /dev/shm rings between ``size`` processes of one node.

    rank, size: this process's index and the number of processes in this (node-local) group.
    store: a torch.distributed Store every member can reach (or ``exchange``, see shm.bootstrap).
    prefix: store-key namespace; distinct per group when several groups share one store.
    ring_bytes: bytes per directed ring ($RINGFLOW_SHM_RING_BYTES, default 8 MiB).
    slice_bytes: the ring algorithms' pipelining slice ($RINGFLOW_SHM_SLICE_BYTES, 2 MiB).
    spin_us: spin before sleeping ($RINGFLOW_SPIN_US; 50 with a core per rank, else 0).
    stage_bytes: each half of the staging area for staged collectives
        ($RINGFLOW_SHM_STAGE_BYTES, default 2 MiB; 0: none, staged collectives unavailable).
    """

    name = "shm"
    checks_message_size = True        # see Transport
    device = torch.device("cpu")

    def __init__(self, rank: int, size: int, *, store=None, exchange=None, prefix: str = "",
                 ring_bytes: int | None = None, slice_bytes: int | None = None,
                 timeout: float = 300.0, spin_us: float | None = None,
                 stage_bytes: int | None = None):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside a group of {size} ranks")
        if (store is None) == (exchange is None) and size > 1:
            raise ValueError("ShmTransport needs exactly one of store= (a torch.distributed Store "
                             "reachable by all ranks) or exchange= (see shm.bootstrap)")
        self.rank, self.size = rank, size
        ring_bytes = ring_bytes or settings.get("RINGFLOW_SHM_RING_BYTES")
        if ring_bytes < 4096 or ring_bytes % 4096:
            raise ValueError(f"ring_bytes must be a multiple of 4096 and >= 4096, got {ring_bytes}")
        self.ring_bytes = ring_bytes
        self.slice_bytes = slice_bytes or settings.get("RINGFLOW_SHM_SLICE_BYTES")
        half = stage_half(stage_bytes)

        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()             # a forked child must not close the parent's rings
        if exchange is None and size > 1:
            exchange = StoreExchange(store, f"ringflow/shm/{prefix}", rank, size, timeout)
        self.own, self.peers, inbound, outbound, cpus = map_segments(exchange, rank, size,
                                                                     ring_bytes, half)
        # the ranks' CPUs together: under mpirun each is bound to one core, not oversubscribed
        self.oversubscribed = size > cpus
        # spinning pays only while every rank has a core; oversubscribed it steals the peer's
        self.spin = (spin_seconds(0.0 if self.oversubscribed else 50.0) if spin_us is None
                     else spin_us * 1e-6)
        # Rank 0 may host the rendezvous store (no torchrun agent): freeing it now would reset
        # peers still inside the last barrier of the handshake.
        self._exchange = exchange
        piece = max(HEADER, ring_bytes // 4)            # publish often enough to overlap copies
        self.inboxes = {s: Inbox(ring, self.peers[s], piece, rank, s)
                        for s, ring in inbound.items()}
        self.outboxes = {d: Outbox(ring, self.peers[d], piece) for d, ring in outbound.items()}
        self._board: Board | None = None
        self.stage = None if not half or size == 1 else Stage(
            {rank: self.own, **self.peers}, rank, Segment.stage_offset(size - 1, ring_bytes),
            half, self.wait_until)
        _LIVE.add(self)

    # ---- construction from a launcher ----------------------------------------------------------
    @classmethod
    def from_launch(cls, launch, device, timeout: float) -> "ShmTransport":
        """The world transport under torchrun/mpirun; every rank must be on this node."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"the shm transport moves CPU tensors, but the device is {device}; "
                             "use RINGFLOW_TRANSPORT=torch (NCCL) for GPUs")
        if launch.local_size != launch.size:
            raise ValueError(
                f"the shm transport connects ranks of one node, but this job has {launch.size} "
                f"ranks with {launch.local_size} per node. Use RINGFLOW_TRANSPORT=torch or mpi for "
                "the world; the two-level algorithm uses ShmTransport.node_local() inside a node")
        exchange = launch_exchange(launch, timeout) if launch.size > 1 else None
        return cls(launch.rank, launch.size, exchange=exchange, timeout=timeout)

    @classmethod
    def node_local(cls, global_rank: int, node_ranks: list[int], store, prefix: str,
                   **kwargs) -> "ShmTransport":
        """The transport of one node's ranks (global ranks ``node_ranks``), for two-level use.

            intra = ShmTransport.node_local(rank, [4, 5, 6, 7], store, prefix="node1/")
        Ranks of the group are indices into ``node_ranks``; ``prefix`` must differ between nodes.
        """
        if global_rank not in node_ranks:
            raise ValueError(f"rank {global_rank} is not in its node's rank list {node_ranks}")
        return cls(node_ranks.index(global_rank), len(node_ranks), store=store, prefix=prefix,
                   **kwargs)

    # ---- posting -----------------------------------------------------------------------------
    def check_tensor(self, tensor: torch.Tensor) -> None:
        require_contiguous(tensor)
        if tensor.device.type != "cpu":
            raise ValueError(f"the shm transport moves CPU tensors, got one on {tensor.device}; "
                             "copy it with .cpu() or use the torch (NCCL) transport for GPUs")

    def _message(self, tensor: torch.Tensor, peer: int, tag: int, kind: str,
                 stamp: tuple | None) -> Message:
        if self._closed:
            raise TransportError(f"the shm transport of rank {self.rank} is closed; cannot {kind}")
        if not 0 <= peer < self.size or peer == self.rank:
            raise ValueError(f"peer rank {peer} must be another rank in [0, {self.size})")
        self.check_tensor(tensor)
        return Message(self, kind, peer, tag, tensor, tensor.numel() * tensor.element_size(),
                       CODES.get(tensor.dtype, -1), tensor.numel(), stamp)

    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        msg = self._message(tensor, dst, tag, "send", stamp)
        with self._lock:
            box = self.outboxes[dst]
            box.queue.append(msg)
            box.push()                      # eager: most messages fit and complete right here
        return msg

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        msg = self._message(tensor, src, tag, "recv", stamp)
        with self._lock:
            self.inboxes[src].post(msg)
        return msg

    def irecv_any(self, tensor: torch.Tensor, tag: int = 0, stamp: tuple | None = None) -> Work:
        """Receive the first message of ``tag`` from any peer (see Transport.irecv_any)."""
        msg = self._message(tensor, (self.rank + 1) % self.size, tag, "recv", stamp)
        msg.peer = -1                       # the inbox that matches it names the sender
        with self._lock:
            post_any(list(self.inboxes.values()), msg)
        return msg

    def irecv_reduce(self, out: torch.Tensor, first: torch.Tensor, src: int, tag: int,
                     combine: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
                     stamp: tuple | None = None) -> Work:
        """Receive a message shaped like ``out`` and compute ``combine(out, first, arrived)``.

        ``combine`` is applied piece by piece to aligned 1-D slices of the three, reading
        the arrived piece straight from shared memory (no landing buffer, one copy less).
            w = tr.irecv_reduce(acc, mine, left, 0, lambda o, a, b: torch.add(a, b, out=o))
        """
        if first.shape != out.shape or first.dtype != out.dtype:
            raise ValueError(f"irecv_reduce: first {tuple(first.shape)} {first.dtype} must match "
                             f"out {tuple(out.shape)} {out.dtype}")
        require_contiguous(first, "first")
        msg = self._message(out, src, tag, "recv", stamp)
        msg.tensor, msg.first, msg.combine = out.view(-1), first.view(-1), combine
        with self._lock:
            self.inboxes[src].post(msg)
        return msg

    def sendrecv(self, send, dst, recv, src, tag=0, stamp=None):
        rw = self.irecv(recv, src, tag, stamp)
        return self.isend(send, dst, tag, stamp), rw

    # ---- progress and waiting -------------------------------------------------------------------
    def _progress(self) -> bool:
        """One pass over every busy inbox and outbox (caller holds the lock)."""
        moved = False
        for box in self.inboxes.values():
            if box.busy():
                moved |= box.pull()
        for box in self.outboxes.values():
            if box.queue:
                moved |= box.push()
        return moved

    def poll(self, msg: Message) -> bool:
        with self._lock:
            self._progress()
        return msg.done

    def wait_for(self, msg: Message, timeout: float | None) -> None:
        if not msg.done:
            self.wait_until(lambda: msg.done, msg.peer,
                            lambda: f"{_verb(msg)} of {msg.describe()}", timeout)
        if msg.error is not None:
            raise msg.error

    def wait_until(self, done: Callable[[], bool], peer: int, what,
                   timeout: float | None) -> None:
        """Make progress until ``done()``: spin a little, then sleep on our doorbell; a dead
        ``peer`` fails it within 0.1 s, a silent one after ``timeout`` seconds. ``what``
        (a string, or a callable making one) names the wait in errors."""
        if done():
            return

        def ready() -> bool:
            if done():
                return True
            if self._closed:
                raise TransportError(f"rank {self.rank}: the shm transport was closed while "
                                     f"waiting to {_text(what)}")
            return False
        # spinning yields the core only oversubscribed: else the yield is a wasted syscall
        wait_until(ready, timeout, peer, lambda: f"rank {self.rank}: {_text(what)}", self.spin,
                   sleep=Bell(self.own, self._lock, self._progress),
                   check=lambda: self._check_alive(peer, done, what),
                   spin_yield=self.oversubscribed)

    def _check_alive(self, rank: int, done: Callable[[], bool], what: str) -> None:
        """A peer that closed or died can no longer complete our wait: fail now, not at timeout.
        ``rank`` -1 (a receive from any source): only once every peer is gone."""
        whys = {r: _gone(self.peers[r]) for r in ([rank] if rank >= 0 else self.peers)}
        if not all(whys.values()):
            return
        with self._lock:
            self._progress()                    # whatever it sent before leaving still counts
            if done():
                return
        gone = ", ".join(f"peer rank {r} {why}" for r, why in whys.items())
        raise TransportError(f"rank {self.rank}: {gone} while waiting to {_text(what)}")

    @property
    def may_stage(self) -> bool:
        return self.stage is not None

    def staging(self) -> "Stage | None":
        """The staging area of staged collectives (mapped with the rings)."""
        return self.stage

    # ---- RINGFLOW_DEBUG fingerprints without messages --------------------------------------------
    def fingerprint_board(self) -> "Board":
        """Each rank's fingerprints in its own control page, read in place by its peers."""
        if self._board is None:
            self._board = Board(self.own, self.peers, self.wait_until)
        return self._board

    # ---- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Tell peers we are gone, wake them, unlink and unmap (idempotent)."""
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                return
            self._closed = True
            self.own.state.value = STATE_CLOSED
            for peer in self.peers.values():
                peer.bell.ring()
            for box in [*self.inboxes.values(), *self.outboxes.values()]:
                box.ring.release()
            if self.stage is not None:
                self.stage.close()
            self.inboxes, self.outboxes = {}, {}
            for seg in [self.own, *self.peers.values()]:
                seg.close()
        _LIVE.discard(self)


def _gone(peer: Segment) -> str:
    """Why a peer can send no more ("" while it can)."""
    if peer.state.value == STATE_CLOSED:
        return "closed its transport"
    if not pid_alive(peer.pid.value):
        return f"(pid {peer.pid.value}) exited"
    return ""


def _text(what) -> str:
    return what() if callable(what) else what


def _verb(msg: Message) -> str:
    if msg.kind == "send":
        return f"send to rank {msg.peer}"
    return f"receive from rank {msg.peer}" if msg.peer >= 0 else "receive from any rank"


@atexit.register
def _close_all() -> None:
    for tr in list(_LIVE):
        tr.close()
