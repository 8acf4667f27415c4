"""Communicator: who talks (rank, size, node layout) and through what transport.

A Communicator is passed to every collective as ``group=``; ``None`` means the
world from ``ringflow.init()``. Sub-groups map their ranks onto the world's
transport and use their own message tag, so groups never steal each other's
messages.

    comm = ringflow.init()
    intra, inter = comm.split_by_node()
"""
from __future__ import annotations

import collections
import dataclasses
import os
import sys
import time
import zlib
from typing import Callable, Sequence

import torch

from ..transport.base import DoneWork, PeerTimeout, Transport, TransportError, Work
from .engine import CollectiveWork, Engine
from .errors import CollectiveError, CollectiveTimeout

DEFAULT_TIMEOUT = float(os.environ.get("RINGFLOW_TIMEOUT", "300"))
_ENGINES: dict[int, Engine] = {}


@dataclasses.dataclass
class CallRecord:
    """One entry of the flight recorder: what this rank was doing, and how it ended."""
    seq: int
    name: str
    numel: int
    dtype: str
    op: str
    root: int
    state: str = "queued"
    step: int = -1
    peer: int = -1
    started: float = 0.0

    def line(self) -> str:
        where = f" step={self.step} peer={self.peer}" if self.step >= 0 else ""
        return (f"#{self.seq} {self.name}(numel={self.numel}, {self.dtype}, op={self.op}, "
                f"root={self.root}) {self.state}{where}")


class Communicator:
    """A set of ranks and the transport that connects them."""

    def __init__(self, transport: Transport, *, timeout: float | None = None,
                 local_size: int | None = None, ranks: Sequence[int] | None = None,
                 debug: bool | None = None, history: int = 64):
        self.transport = transport
        self.ranks = list(range(transport.size)) if ranks is None else list(ranks)
        if transport.rank not in self.ranks:
            raise ValueError(f"rank {transport.rank} is not a member of group {self.ranks}")
        self.rank, self.size = self.ranks.index(transport.rank), len(self.ranks)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.local_size = local_size or self.size
        if self.size % self.local_size:
            raise ValueError(f"world of {self.size} ranks cannot be split into nodes of "
                             f"{self.local_size} ranks ({self.size} % {self.local_size} != 0)")
        self.local_rank = self.rank % self.local_size
        self.tag = 0 if ranks is None else 1 + zlib.crc32(repr(self.ranks).encode()) % 30000
        self.debug = os.environ.get("RINGFLOW_DEBUG", "0") not in ("", "0") if debug is None else debug
        self.engine = _ENGINES.setdefault(id(transport), Engine())
        self._owns_engine = ranks is None
        self.slice_bytes = getattr(transport, "slice_bytes", None)   # ring pipelining granularity
        self.device = torch.device(getattr(transport, "device", "cpu"))  # for internal buffers
        self._scratch: dict[tuple, torch.Tensor] = {}
        self.seq = 0
        self.history: collections.deque[CallRecord] = collections.deque(maxlen=history)
        self.current: CallRecord | None = None

    # ---- topology ---------------------------------------------------------------------------
    @property
    def node(self) -> int:
        return self.rank // self.local_size

    @property
    def num_nodes(self) -> int:
        return self.size // self.local_size

    def subgroup(self, members: Sequence[int]) -> "Communicator":
        """A Communicator over ``members`` (ranks of this group); only members may call it."""
        members = list(members)
        if len(set(members)) != len(members) or any(not 0 <= m < self.size for m in members):
            raise ValueError(f"subgroup members {members} must be distinct ranks in [0, {self.size})")
        return Communicator(self.transport, timeout=self.timeout, debug=self.debug,
                            ranks=[self.ranks[m] for m in members])

    def split_by_node(self) -> tuple["Communicator", "Communicator"]:
        """(ranks on my node, ranks with my local_rank on every node): the two-level layout."""
        n0 = self.node * self.local_size
        intra = self.subgroup(range(n0, n0 + self.local_size))
        inter = self.subgroup(range(self.local_rank, self.size, self.local_size))
        return intra, inter

    # ---- point to point inside a collective (group ranks) -------------------------------------
    # Empty messages are never put on the wire: both ends know the size, so both skip it.
    def isend(self, tensor: torch.Tensor, dst: int) -> Work:
        if tensor.numel() == 0:
            return DoneWork()
        return self.transport.isend(tensor, self.ranks[dst], self.tag)

    def irecv(self, tensor: torch.Tensor, src: int) -> Work:
        if tensor.numel() == 0:
            return DoneWork()
        return self.transport.irecv(tensor, self.ranks[src], self.tag)

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int) -> tuple[Work, Work]:
        """Post a send to ``dst`` and a receive from ``src`` together."""
        if send.numel() == 0 or recv.numel() == 0:
            return self.isend(send, dst), self.irecv(recv, src)
        return self.transport.sendrecv(send, self.ranks[dst], recv, self.ranks[src], self.tag)

    def wait(self, work: Work, peer: int, step: int = 0) -> None:
        """Wait for ``work``; turn transport failures into errors that name the call and peer."""
        rec = self.current
        if rec is not None:
            rec.step, rec.peer = step, peer
        try:
            work.wait(self.timeout)
        except PeerTimeout as e:
            raise self._failure(CollectiveTimeout, f"timed out after {self.timeout:.1f}s", peer, step, e)
        except TransportError as e:
            raise self._failure(CollectiveError, f"failed: {e}", peer, step, e)

    def _failure(self, cls, what: str, peer: int, step: int, cause: Exception) -> CollectiveError:
        rec = self.current
        name = f"{rec.name} #{rec.seq}" if rec else "point-to-point"
        msg = (f"rank {self.rank}: {name} {what} at step {step} waiting for rank {peer}"
               f" (transport {self.transport.name}, world rank {self.ranks[peer]})")
        if rec is not None:
            rec.state = "timed out" if cls is CollectiveTimeout else "failed"
        self.dump_history(file=sys.stderr)
        err = cls(msg, peer=peer, step=step) if cls is CollectiveTimeout else cls(msg)
        err.__cause__ = cause
        return err

    def dump_history(self, file=None) -> str:
        """The flight recorder: this rank's recent collectives, oldest first."""
        text = f"ringflow rank {self.rank}/{self.size} recent collectives:\n" + "\n".join(
            "  " + r.line() for r in self.history)
        if file is not None:
            print(text, file=file, flush=True)
        return text

    # ---- running a collective ---------------------------------------------------------------
    def run(self, name: str, job: Callable[[], None], *, tensor: torch.Tensor | None = None,
            op=None, root: int = -1, async_op: bool = False) -> CollectiveWork | None:
        """Number, record, (optionally) fingerprint-check and execute one collective."""
        rec = CallRecord(self.seq, name, tensor.numel() if tensor is not None else 0,
                         str(tensor.dtype).replace("torch.", "") if tensor is not None else "-",
                         getattr(op, "name", "-").lower(), root)
        self.seq += 1
        self.history.append(rec)

        def execute() -> None:
            self.current, rec.state, rec.started = rec, "running", time.monotonic()
            try:
                if self.debug and self.size > 1:
                    from .debug import check_fingerprints
                    check_fingerprints(self, rec)
                job()
                rec.state = "done"
            except BaseException:
                if rec.state == "running":
                    rec.state = "failed"
                raise
            finally:
                self.current = None

        if async_op:
            return self.engine.submit(name, execute)
        self.engine.run(name, execute)
        return None

    def scratch(self, dtype: torch.dtype, numel: int, device: torch.device) -> torch.Tensor:
        """A reusable 1-D work buffer of at least ``numel`` elements (grown, never shrunk)."""
        key = (dtype, device)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, 1), dtype=dtype, device=device)
            self._scratch[key] = buf
        return buf[:numel]

    def close(self) -> None:
        """Stop the background thread (world communicator only; subgroups share it)."""
        if not self._owns_engine:
            return
        engine = _ENGINES.pop(id(self.transport), None)
        if engine is not None:
            engine.close()

    def __repr__(self) -> str:
        return (f"Communicator(rank={self.rank}, size={self.size}, local_size={self.local_size}, "
                f"transport={self.transport.name})")
