"""Ranks on one node talking through shared-memory ring buffers (memory speed, no MPI needed).

Every directed pair (src -> dst) has one single-producer single-consumer ring
in dst's segment (see ``shm_ring``). A send copies the tensor's bytes into the
ring in pieces; the receiver copies them out; both run ``ctypes.memmove`` with
the GIL released. Sends and receives make progress whenever any Work of this
transport is waited on (or polled), so the ring pattern "post send right and
receive left, wait for the receive first" never deadlocks, even with messages
many times larger than a ring. Waiting spins briefly when there are spare cores,
then sleeps on this rank's futex doorbell.

Messages between a pair with the same tag are non-overtaking. A message whose
receive is not yet posted stays in the ring, unless a receive for a later
message from the same peer is waiting: then it is drained into a buffer.

    tr = ShmTransport(rank, size, store=store)          # or ringflow.init(transport="shm")
    sw, rw = tr.sendrecv(x, (rank + 1) % size, y, (rank - 1) % size)
    rw.wait(30); sw.wait(30)
"""
from __future__ import annotations

import atexit
import collections
import ctypes
import os
import threading
import time
import weakref

import torch

from .base import PeerTimeout, Transport, TransportError, Work, require_contiguous
from .shm_bootstrap import StoreExchange, launch_exchange, map_segments
from .shm_ring import HEADER, STATE_CLOSED, footprint

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
           torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128)
_CODES = {d: i for i, d in enumerate(_DTYPES)}
_LIVE: "weakref.WeakSet[ShmTransport]" = weakref.WeakSet()
_GENERATION = collections.Counter()   # per (prefix, rank): re-inits use fresh store keys


def _env_bytes(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class _Message(Work):
    """A send, a receive, or a drained unexpected message: ``pos`` bytes of ``foot`` moved."""

    def __init__(self, tr: "ShmTransport", kind: str, peer: int, tag: int, addr: int, nbytes: int,
                 code: int, numel: int, keep: torch.Tensor | None):
        self.tr, self.kind, self.peer, self.tag = tr, kind, peer, tag
        self.addr, self.nbytes, self.code, self.numel = addr, nbytes, code, numel
        self.keep = keep                  # holds the tensor (or drain buffer) alive while in flight
        self.foot, self.pos = footprint(nbytes), 0
        self.done, self.error = False, None
        self.claimer: _Message | None = None    # an unexpected message's late receive

    def describe(self) -> str:
        dtype = _DTYPES[self.code] if 0 <= self.code < len(_DTYPES) else "bytes"
        return f"{self.numel} x {str(dtype).replace('torch.', '')} (tag {self.tag})"

    def wait(self, timeout: float | None = None) -> None:
        self.tr._wait(self, timeout)

    def is_completed(self) -> bool:
        if not self.done:
            with self.tr._lock:
                self.tr._progress()
        return self.done


class ShmTransport(Transport):
    """Point-to-point over /dev/shm rings between ``size`` processes of one node.

    rank, size: this process's index and the number of processes in this (node-local) group.
    store: a torch.distributed Store every member can reach (or pass ``exchange``).
    prefix: store-key namespace; distinct per group when several groups share one store.
    ring_bytes: bytes per directed ring ($RINGFLOW_SHM_RING_BYTES, default 8 MiB).
    """

    name = "shm"
    device = torch.device("cpu")

    def __init__(self, rank: int, size: int, *, store=None, exchange=None, prefix: str = "",
                 ring_bytes: int | None = None, slice_bytes: int | None = None,
                 timeout: float = 300.0, spin_us: float | None = None):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside a group of {size} ranks")
        if (store is None) == (exchange is None) and size > 1:
            raise ValueError("ShmTransport needs exactly one of store= (a torch.distributed Store "
                             "reachable by all ranks) or exchange= (see shm_bootstrap)")
        self.rank, self.size = rank, size
        ring_bytes = ring_bytes or _env_bytes("RINGFLOW_SHM_RING_BYTES", 8 << 20)
        if ring_bytes < 4 * HEADER or ring_bytes % 4096:
            raise ValueError(f"ring_bytes must be a multiple of 4096 and >= 4096, got {ring_bytes}")
        self.ring_bytes, self.piece = ring_bytes, max(HEADER, ring_bytes // 4)
        self.slice_bytes = slice_bytes or _env_bytes("RINGFLOW_SHM_SLICE_BYTES", 1 << 20)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        # Spinning only pays while every rank has a core; oversubscribed, it steals the core
        # of the rank we are waiting for, so go straight to the futex.
        default_spin = 50.0 if size <= (cores or 1) else 0.0
        self.spin = (spin_us if spin_us is not None else
                     float(os.environ.get("RINGFLOW_SHM_SPIN_US", default_spin))) * 1e-6
        self._lock = threading.RLock()
        self._closed = False
        self._sendq = collections.defaultdict(collections.deque)     # dst -> pending sends
        self._posted = collections.defaultdict(dict)                  # src -> tag -> deque
        self._unexpected = collections.defaultdict(dict)              # src -> tag -> deque
        self._current: dict[int, _Message | None] = {}               # src -> message streaming in
        self._waiting = collections.Counter()                         # src -> posted receives
        if exchange is None and size > 1:
            _GENERATION[prefix, rank] += 1
            exchange = StoreExchange(store, f"ringflow/shm/{prefix}{_GENERATION[prefix, rank]}",
                                     rank, size, timeout)
        self.own, self.peers, self.inbound, self.outbound = map_segments(
            exchange, rank, size, ring_bytes)
        self._head = {s: 0 for s in self.inbound}       # my read position per inbound ring
        self._tail = {d: 0 for d in self.outbound}      # my write position per outbound ring
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
        return cls(launch.rank, launch.size, exchange=launch_exchange(launch, timeout),
                   timeout=timeout)

    @classmethod
    def node_local(cls, global_rank: int, node_ranks: list[int], store, prefix: str,
                   **kwargs) -> "ShmTransport":
        """The transport of one node's ranks (global ranks ``node_ranks``), for two-level algorithms.

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

    def _message(self, tensor: torch.Tensor, peer: int, tag: int, kind: str) -> _Message:
        if self._closed:
            raise TransportError(f"shm transport of rank {self.rank} is closed; cannot {kind}")
        if not 0 <= peer < self.size or peer == self.rank:
            raise ValueError(f"peer rank {peer} must be another rank in [0, {self.size})")
        self.check_tensor(tensor)
        nbytes = tensor.numel() * tensor.element_size()
        return _Message(self, kind, peer, tag, tensor.data_ptr(), nbytes, _CODES.get(tensor.dtype, -1),
                        tensor.numel(), tensor)

    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0) -> Work:
        msg = self._message(tensor, dst, tag, "send")
        with self._lock:
            self._sendq[dst].append(msg)
            self._push(dst)                 # eager: most messages fit and complete right here
        return msg

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0) -> Work:
        msg = self._message(tensor, src, tag, "recv")
        with self._lock:
            early = self._unexpected[src].get(tag)
            if early:
                self._claim(early.popleft(), msg)
            else:
                self._posted[src].setdefault(tag, collections.deque()).append(msg)
                self._waiting[src] += 1
                self._pull(src)
        return msg

    def sendrecv(self, send, dst, recv, src, tag=0):
        rw = self.irecv(recv, src, tag)
        return self.isend(send, dst, tag), rw

    # ---- progress (callers hold the lock) ------------------------------------------------------
    def _progress(self) -> bool:
        moved = False
        for src in [s for s, n in self._waiting.items() if n or self._current.get(s)]:
            moved |= self._pull(src)
        for dst in [d for d, q in self._sendq.items() if q]:
            moved |= self._push(dst)
        return moved

    def _push(self, dst: int) -> bool:
        """Write queued sends to ``dst`` into its ring as far as space allows."""
        ring, q, moved = self.outbound[dst], self._sendq[dst], False
        while q:
            msg, tail = q[0], self._tail[dst]
            free = ring.size - (tail - ring.head.value)
            if msg.pos == 0:
                if free < HEADER:
                    break
                ring.put_header(tail, msg.tag, msg.code, msg.nbytes, msg.numel)
                msg.pos, tail, free = HEADER, tail + HEADER, free - HEADER
            n = min(free, msg.foot - msg.pos, self.piece)
            if tail + n == self._tail[dst]:
                break                           # no room for even the header
            data = max(0, min(n, HEADER + msg.nbytes - msg.pos))
            if data:
                ring.copy_in(tail, msg.addr + msg.pos - HEADER, data)
            msg.pos, self._tail[dst] = msg.pos + n, tail + n
            ring.tail.value = tail + n      # publish after the copy (see shm_ring on ordering)
            self.peers[dst].bell.ring()
            moved = True
            if msg.pos < msg.foot:
                continue                        # next piece, while the ring has room
            q.popleft()
            msg.done, msg.keep = True, None
        return moved

    def _pull(self, src: int) -> bool:
        """Copy arrived bytes from ``src``'s ring into the receives they belong to."""
        ring, moved = self.inbound[src], False
        while True:
            head = self._head[src]
            avail = ring.tail.value - head
            msg = self._current.get(src)
            if msg is None:
                if avail < HEADER:
                    break
                msg = self._match(src, *ring.get_header(head))
                if msg is None:
                    break                       # nobody asked for it yet: leave it in the ring
                self._current[src], msg.pos, head, avail = msg, HEADER, head + HEADER, avail - HEADER
            n = min(avail, msg.foot - msg.pos, self.piece)
            if head + n == self._head[src]:
                break                           # the rest has not arrived yet
            data = max(0, min(n, HEADER + msg.nbytes - msg.pos))
            if data and msg.addr:
                ring.copy_out(head, msg.addr + msg.pos - HEADER, data)
            msg.pos, self._head[src] = msg.pos + n, head + n
            ring.head.value = head + n
            self.peers[src].bell.ring()         # the sender may be waiting for space
            moved = True
            if msg.pos < msg.foot:
                continue                        # next piece, as far as it has arrived
            self._current[src] = None
            self._finish(msg)
        return moved

    def _match(self, src: int, tag: int, code: int, nbytes: int, numel: int) -> _Message | None:
        """The receive for the arriving message, a drain buffer, or None to leave it queued."""
        queue = self._posted[src].get(tag)
        if queue:
            msg = queue.popleft()
            self._waiting[src] -= 1
            if msg.nbytes != nbytes or (msg.code != code and -1 not in (code, msg.code)):
                came = _Message(self, "recv", src, tag, 0, nbytes, code, numel, None)
                msg.error = TransportError(
                    f"rank {self.rank}: message from rank {src} has {came.describe()}, but the "
                    f"receive posted for it expects {msg.describe()}; both sides must agree")
                came.claimer = msg
                return came                     # consume the bytes, fail the receive
            return msg
        if not self._waiting[src]:
            return None
        buf = torch.empty(nbytes, dtype=torch.uint8)     # a later message is awaited: drain this
        early = _Message(self, "recv", src, tag, buf.data_ptr(), nbytes, code, numel, buf)
        self._unexpected[src].setdefault(tag, collections.deque()).append(early)
        return early

    def _claim(self, early: _Message, msg: _Message) -> None:
        """Match a receive to a message that was drained before it was posted."""
        if early.nbytes != msg.nbytes:
            msg.error = TransportError(
                f"rank {self.rank}: message from rank {early.peer} has {early.describe()}, but the "
                f"receive posted for it expects {msg.describe()}; both sides must agree")
            msg.done = True
            return
        early.claimer = msg
        if early.done:
            self._finish(early)

    def _finish(self, msg: _Message) -> None:
        msg.done = True
        late = msg.claimer
        if late is None:
            return
        if late.error is None and msg.keep is not None:
            ctypes.memmove(late.addr, msg.addr, msg.nbytes)
        late.done, late.keep, msg.keep = True, None, None

    # ---- waiting -----------------------------------------------------------------------------
    def _wait(self, msg: _Message, timeout: float | None) -> None:
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        next_check = start + 0.1
        while True:
            bell = self.own.bell.value()        # read before looking, so no wake-up is lost
            with self._lock:
                moved = self._progress()
                if msg.done:
                    break
            now = time.monotonic()
            if moved or now - start < self.spin:
                continue
            if deadline is not None and now >= deadline:
                raise PeerTimeout(f"rank {self.rank}: {self._verb(msg)} rank {msg.peer} of "
                                  f"{msg.describe()} timed out after {timeout:.1f}s", msg.peer)
            if now >= next_check:
                self._check_alive(msg)
                next_check = now + 0.1
            left = 0.1 if deadline is None else max(1e-4, min(0.1, deadline - now))
            self.own.bell.wait(bell, left)
        if msg.error is not None:
            raise msg.error

    @staticmethod
    def _verb(msg: _Message) -> str:
        return "send to" if msg.kind == "send" else "receive from"

    def _check_alive(self, msg: _Message) -> None:
        """A peer that closed or died can no longer complete ``msg``: fail now, not at timeout."""
        peer = self.peers[msg.peer]
        why = None
        if peer.state.value == STATE_CLOSED:
            why = "closed its transport"
        elif not _pid_alive(peer.pid.value):
            why = f"(pid {peer.pid.value}) exited"
        if why is not None:
            with self._lock:
                self._progress()
                if msg.done:
                    return
            raise TransportError(f"rank {self.rank}: peer rank {msg.peer} {why} while "
                                 f"{self._verb(msg)} it of {msg.describe()} was pending")

    # ---- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Tell peers we are gone, wake them, unlink and unmap (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.own.state.value = STATE_CLOSED
            for peer in self.peers.values():
                peer.bell.ring()
            for ring in list(self.inbound.values()) + list(self.outbound.values()):
                ring.release()
            for seg in [self.own, *self.peers.values()]:
                seg.close()
        _LIVE.discard(self)


def _pid_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (a dead child its launcher has not reaped yet)."""
    if pid <= 0:                      # unknown (another PID namespace): rely on the timeout
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return True


@atexit.register
def _close_all() -> None:
    for tr in list(_LIVE):
        tr.close()
