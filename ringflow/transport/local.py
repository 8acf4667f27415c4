"""N ranks as threads of one process: the transport for fast unit tests.

Sends are buffered (the tensor is copied when posted), receives match sends by
their posting order per (src, dst, tag), exactly MPI's non-overtaking rule.

    hub = LocalTransport.group(3)     # one transport per thread; see collectives.threads.run_ranks
"""
from __future__ import annotations

import threading
import time
import torch

from .base import (DoneWork, PeerTimeout, StampMismatch, Transport, TransportError, Work,
                   require_contiguous)


class _Hub:
    """State shared by the ranks of one local world: the posted messages."""

    def __init__(self, size: int):
        self.size = size
        self.cond = threading.Condition()
        self.messages: dict[tuple, tuple] = {}   # key -> (tensor, the sender's stamp)
        self.posted: dict[tuple, int] = {}     # (src, dst, tag, "send"|"recv") -> count
        self.failed: dict[int, str] = {}       # rank -> why it left

    def next_index(self, key: tuple) -> int:
        with self.cond:
            i = self.posted.get(key, 0)
            self.posted[key] = i + 1
            return i


class _LocalRecv(Work):
    def __init__(self, hub: _Hub, key: tuple, tensor: torch.Tensor, peer: int,
                 stamp: tuple | None):
        self.hub, self.key, self.tensor, self.peer, self.stamp = hub, key, tensor, peer, stamp
        self.done = False

    def is_completed(self) -> bool:
        with self.hub.cond:
            return self.done or self.key in self.hub.messages

    def wait(self, timeout: float | None = None) -> None:
        if self.done:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.hub.cond:
            while self.key not in self.hub.messages:
                if self.peer in self.hub.failed:
                    raise TransportError(f"peer rank {self.peer} failed: {self.hub.failed[self.peer]}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PeerTimeout(f"receive from rank {self.peer} timed out after {timeout:.1f}s",
                                      self.peer)
                self.hub.cond.wait(timeout=0.05 if left is None else min(left, 0.05))
            msg, came = self.hub.messages.pop(self.key)
        if self.stamp is not None and came is not None and came != self.stamp:
            raise StampMismatch(f"message from rank {self.peer} belongs to another collective",
                                self.peer, came, self.stamp)
        if msg.numel() != self.tensor.numel() or msg.dtype != self.tensor.dtype:
            raise TransportError(f"message from rank {self.peer} has {msg.numel()} x {msg.dtype}, "
                                 f"receiver posted {self.tensor.numel()} x {self.tensor.dtype}")
        self.tensor.view(-1).copy_(msg.view(-1))
        self.done = True


class LocalTransport(Transport):
    """One rank of an in-process world; build all ranks with :meth:`group`."""

    name = "local"
    checks_message_size = True        # see Transport

    def __init__(self, hub: _Hub, rank: int):
        self.hub, self.rank, self.size = hub, rank, hub.size

    @classmethod
    def group(cls, size: int) -> list["LocalTransport"]:
        if size < 1:
            raise ValueError(f"a local world needs at least 1 rank, got {size}")
        hub = _Hub(size)
        return [cls(hub, r) for r in range(size)]

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self.size:
            raise ValueError(f"peer rank {peer} out of range for a world of {self.size}")

    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        self._check_peer(dst)
        require_contiguous(tensor)
        i = self.hub.next_index((self.rank, dst, tag, "send"))
        with self.hub.cond:
            self.hub.messages[(self.rank, dst, tag, i)] = (tensor.detach().clone(), stamp)
            self.hub.cond.notify_all()
        return DoneWork()

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        self._check_peer(src)
        require_contiguous(tensor)
        i = self.hub.next_index((src, self.rank, tag, "recv"))
        return _LocalRecv(self.hub, (src, self.rank, tag, i), tensor, src, stamp)

    def check_tensor(self, tensor: torch.Tensor) -> None:
        require_contiguous(tensor)

    def mark_failed(self, why: str) -> None:
        """Tell peers this rank is gone, so their receives fail instead of waiting."""
        with self.hub.cond:
            self.hub.failed[self.rank] = why
            self.hub.cond.notify_all()
