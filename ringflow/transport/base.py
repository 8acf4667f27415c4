"""The point-to-point protocol every collective is written against.

A Transport moves whole tensors between ranks: ``isend``/``irecv`` return a
:class:`Work` whose ``wait(timeout)`` either completes or raises
:class:`PeerTimeout`. ``sendrecv`` posts one send and one receive together,
which is what every ring step needs (posting the send alone and blocking on it
deadlocks rendezvous transports such as NCCL).

    t = LocalTransport.group(2)[0]          # or TorchTransport / MpiTransport
    w = t.isend(x, dst=1); w.wait(timeout=30)
"""
from __future__ import annotations

import abc
import functools
import torch


class TransportError(RuntimeError):
    """A transport could not move data (peer gone, bad tensor, closed)."""


class PeerTimeout(TransportError):
    """A wait on ``peer`` did not complete within the timeout."""

    def __init__(self, message: str, peer: int):
        super().__init__(message)
        self.peer = peer


class StampMismatch(TransportError):
    """A message carried another collective's stamp (collectives/stamp.py) than the receive
    that took it: ``came`` (None where the transport only saw that its tag differs) and
    ``wanted``."""

    def __init__(self, message: str, peer: int, came: tuple | None, wanted: tuple):
        super().__init__(message)
        self.peer, self.came, self.wanted = peer, came, wanted


# Communicator tags are below TAG_SPAN; tag-matched transports add a multiple of it for the stamp.
TAG_SPAN = 1 << 15


@functools.lru_cache(maxsize=64)      # a collective's messages share one stamp
def stamp_hash(stamp: tuple) -> int:
    """A hash of a stamp (four int64 words), the same on every rank."""
    h = 0
    for word in stamp:
        h = (h * 1_000_003 ^ word) & 0x7FFFFFFFFFFFFFFF
    return h ^ (h >> 31)


def fold_tag(tag: int, stamp: tuple | None, slots: int) -> int:
    """``tag`` with the stamp folded in (one of ``slots`` multiples of TAG_SPAN above it): messages
    of different collectives then never match a receive. No stamp: the tag itself."""
    if stamp is None or slots < 1:
        return tag
    return tag + TAG_SPAN * (1 + stamp_hash(stamp) % slots)


class Work(abc.ABC):
    """Handle of an outstanding send or receive."""

    peer: int = -1

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> None:
        """Block until done; raise PeerTimeout after ``timeout`` seconds."""

    @abc.abstractmethod
    def is_completed(self) -> bool:
        """True once the operation finished (never blocks)."""


class DoneWork(Work):
    """A Work that is already complete (rank talking to itself, empty tensors)."""

    def wait(self, timeout: float | None = None) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class Transport(abc.ABC):
    """Point-to-point messaging between ``size`` ranks.

    Messages between a pair of ranks with the same ``tag`` arrive in the order
    they were posted (MPI's non-overtaking rule); tags separate communicators
    that share one transport. ``stamp`` (collectives/stamp.py) is the identity of the
    collective a message belongs to: a transport carries it with the message, or folds it
    into the tag, so that a receive never takes the bytes of another collective.
    """

    name: str = "abstract"
    rank: int
    size: int
    # True when a receive posted for fewer bytes than arrive fails with an error instead of
    # crashing the process (gloo aborts): RINGFLOW_DEBUG may then post data before comparing.
    checks_message_size: bool = False

    @abc.abstractmethod
    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        """Start sending a contiguous ``tensor`` to ``dst``."""

    @abc.abstractmethod
    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        """Start receiving into the contiguous ``tensor`` from ``src``; its Work raises
        StampMismatch where the message came from another collective than ``stamp``."""

    def irecv_any(self, tensor: torch.Tensor, tag: int = 0, stamp: tuple | None = None) -> Work:
        """Start receiving into ``tensor`` the first message of ``tag`` from whichever rank
        sends it; once the Work completes, its ``peer`` is that rank. It takes its place among
        the receives of every peer in posting order, like one posted to each peer, and is
        withdrawn from all the others when one message matches it. Reached through
        Communicator.irecv_any, which refuses a group of one first."""
        raise NotImplementedError(f"the {self.name} transport receives from a named rank only "
                                  "(any-source receives: shm, mpi, the backend's gloo)")

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int,
                 tag: int = 0, stamp: tuple | None = None) -> tuple[Work, Work]:
        """Post a send and a receive together; returns (send_work, recv_work)."""
        rw = self.irecv(recv, src, tag, stamp)
        sw = self.isend(send, dst, tag, stamp)
        return sw, rw

    # Whether sends and receives may be posted one by one, many ahead, before any is waited
    # on (the pipelined ring, collectives/pipeline.py): not over NCCL, whose lone receive
    # blocks its stream until the partner's send is posted.
    pipelines: bool = True

    # Staged collectives (collectives/staged.py) read peers' data in shared memory in place.
    # ``may_stage``: whether ``staging()`` gives them a Stage (shm.stage). It is settled when
    # the transport is made and the same on every rank, because "auto" consults it.
    may_stage: bool = False

    def staging(self):
        return None

    def native_reduces(self, dtype: torch.dtype) -> bool:
        """Whether the backend's own reductions (``native_all_reduce``, ``_reduce_scatter``,
        ``_reduce``) take ``dtype``: "auto" weighs "native" only where they do, so it never picks
        a call that fails (MPI has no bfloat16 reduction). Moving bytes (all-gather, broadcast)
        takes every dtype."""
        return True

    def fingerprint_board(self):
        """A cheaper channel than messages for RINGFLOW_DEBUG's per-call fingerprints, or None.

        A board has ``post(seq, row)`` (this rank's ints for its collective ``seq``) and
        ``expect(peer, seq, width) -> Work`` (completes once ``peer`` posted ``seq``; its
        ``.row`` is then that rank's list of ``width`` ints).
        """
        return None

    @abc.abstractmethod
    def check_tensor(self, tensor: torch.Tensor) -> None:
        """Raise ValueError if this transport cannot move ``tensor`` (device, layout)."""

    def close(self) -> None:
        """Release resources; further calls are errors."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


def require_contiguous(tensor: torch.Tensor, what: str = "tensor") -> None:
    """Transports move raw bytes, so views with gaps are refused up front."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_contiguous():
        raise ValueError(f"{what} must be contiguous (got strides {tuple(tensor.stride())} "
                         f"for shape {tuple(tensor.shape)}); call .contiguous() first")
