"""Communicator: who talks (rank, size, node layout) and through what transport.

A Communicator is passed to every collective as ``group=``; ``None`` means the
world from ``ringflow.init()``. Sub-groups map their ranks onto the world's
transport and use their own message tag, so groups never steal each other's
messages.

    comm = ringflow.init()
    intra, inter = comm.split_by_node()
"""
from __future__ import annotations

import time
import zlib
from typing import Callable, Sequence

import torch

from .. import settings
from ..transport.base import (TAG_SPAN, DoneWork, PeerTimeout, StampMismatch, Transport,
                              TransportError, Work)
from .debug import CallCheck
from .engine import CollectiveWork, close_engine, engine_for
from .errors import CollectiveError, CollectiveMismatch, CollectiveTimeout, failure, refused
from .flight import CallRecord, FlightRecorder, call_record
from .stamp import mismatch_text, stamp_of


def default_timeout() -> float:
    """$RINGFLOW_TIMEOUT (seconds), read when a communicator is made (not at import), else 300."""
    return settings.get("RINGFLOW_TIMEOUT")


def _tracer_for(transport):
    """trace.tracer_for, imported here rather than at the top so that importing the package does
    not load trace.py: ``python -m ringflow.collectives.trace`` (the merge) would then run a
    second copy of a module already imported, and runpy warns about exactly that."""
    from .trace import tracer_for
    return tracer_for(transport)


class Communicator:
    """A set of ranks and the transport that connects them."""

    def __init__(self, transport: Transport, *, timeout: float | None = None,
                 local_size: int | None = None, ranks: Sequence[int] | None = None,
                 debug: bool | None = None, history: int = 64, algorithm: str | None = None,
                 intra_transport: Transport | None = None, launch=None,
                 parent: "Communicator | None" = None, stream: int = 0):
        self.transport = transport
        self.intra_transport = intra_transport   # two-level's transport inside a node, if any
        self.launch = launch                     # the LaunchEnv the world was built from, if any
        self.ranks = list(range(transport.size)) if ranks is None else list(ranks)
        if transport.rank not in self.ranks:
            raise ValueError(f"rank {transport.rank} is not a member of group {self.ranks}")
        self.rank, self.size = self.ranks.index(transport.rank), len(self.ranks)
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self.local_size = local_size or self.size
        if self.size % self.local_size:
            raise ValueError(f"world of {self.size} ranks cannot be split into nodes of "
                             f"{self.local_size} ranks ({self.size} % {self.local_size} != 0)")
        self.local_rank = self.rank % self.local_size
        # stream k > 0: another group over the same ranks, its tags 8k above (past the lanes
        # of stream 0), so two threads can each drive one at once (two-level's pieces in flight)
        if not 0 <= stream < 256:
            raise ValueError(f"stream must be in [0, 256), got {stream}")
        self.tag = 0 if ranks is None else \
            1 + zlib.crc32(repr(self.ranks).encode()) % 30000 + 8 * stream
        self.is_world = self.ranks == list(range(transport.size))   # every rank of the transport
        self.debug = settings.get("RINGFLOW_DEBUG") if debug is None else debug
        self.engine = engine_for(transport)
        self._owns_engine = ranks is None
        self.slice_bytes = getattr(transport, "slice_bytes", None)   # ring pipelining granularity
        self.ring_channels = getattr(transport, "ring_channels", 1)  # the pipelined ring's (C)
        # bytes of a chunk per channel of the pipelined ring (None: pipeline.CHANNEL_BYTES)
        self.channel_bytes = getattr(transport, "channel_bytes", None)
        self.device = torch.device(getattr(transport, "device", "cpu"))  # for internal buffers
        self._scratch: dict[tuple, torch.Tensor] = {}
        # what RINGFLOW_ALGORITHM would say, given as an argument (the trainer's --algorithm);
        # None: select reads the variable
        self.algorithm_env = algorithm
        self.auto_memo: tuple[str, dict] | None = None   # select's, filled on first "auto"
        self.seq = 0
        self.stamps = True             # messages carry their call's stamp (stamp.py); False
        #                                only to measure what that costs (benchmarks/collectives/check_overhead.py)
        self.board_calls = 0           # native calls checked on the fingerprint board (debug.py)
        self.recorder = FlightRecorder(self.rank, self.size, transport.rank, history)
        self.current: CallRecord | None = None
        self.checks = CallCheck()      # RINGFLOW_DEBUG's fingerprint exchange of the running call
        self.parent = parent        # the group this one was cut from (its failures name ours)
        # RINGFLOW_TRACE's timeline (trace.NULL when off): one per world rank, so a sub-group
        # (or two-level's node group over another transport) records into its parent's
        self.tracer = parent.tracer if parent is not None else _tracer_for(transport)

    @property
    def history(self):
        """The flight recorder's records, oldest first."""
        return self.recorder.records

    # ---- topology ---------------------------------------------------------------------------
    @property
    def node(self) -> int:
        return self.rank // self.local_size

    @property
    def num_nodes(self) -> int:
        return self.size // self.local_size

    def subgroup(self, members: Sequence[int], stream: int = 0) -> "Communicator":
        """A Communicator over ``members`` (ranks of this group); only members may call it.
        ``stream`` k > 0: a group over the same members whose messages never match stream 0's."""
        members = list(members)
        if len(set(members)) != len(members) or any(not 0 <= m < self.size for m in members):
            raise ValueError(f"subgroup members {members} must be distinct ranks in [0, {self.size})")
        return Communicator(self.transport, timeout=self.timeout, debug=self.debug,
                            ranks=[self.ranks[m] for m in members], parent=self, stream=stream)

    def split_by_node(self) -> tuple["Communicator", "Communicator"]:
        """(ranks on my node, ranks with my local_rank on every node): the two-level layout."""
        n0 = self.node * self.local_size
        intra = self.subgroup(range(n0, n0 + self.local_size))
        inter = self.subgroup(range(self.local_rank, self.size, self.local_size))
        return intra, inter

    # ---- point to point inside a collective (group ranks) -------------------------------------
    # Empty messages are never put on the wire: both ends know the size, so both skip it.
    # ``lane``: a second stream of messages between the same pair, on its own tag (the
    # pipelined ring's channels); lane 0 is the group's tag.
    def isend(self, tensor: torch.Tensor, dst: int, lane: int = 0) -> Work:
        if tensor.numel() == 0:
            return DoneWork()
        stamp, tag = self.current_stamp(), (self.tag + lane) % TAG_SPAN
        return self._post(lambda: self.transport.isend(tensor, self.ranks[dst], tag, stamp), dst)

    def irecv(self, tensor: torch.Tensor, src: int, lane: int = 0) -> Work:
        if tensor.numel() == 0:
            return DoneWork()
        stamp, tag = self.current_stamp(), (self.tag + lane) % TAG_SPAN
        return self._post(lambda: self.transport.irecv(tensor, self.ranks[src], tag, stamp), src)

    def irecv_any(self, tensor: torch.Tensor) -> Work:
        """Receive the group's next message from whichever member sends first (transports with
        ``irecv_any``). Once done, the Work's ``peer`` is the sender's transport rank
        (``member`` makes it a group rank). Empty messages too must be on the wire for this:
        the backend's point-to-point sends a one-byte token for them (backend/p2p.py).
        Refused here, for every transport, in a group of one (a sub-group of one rank of a
        larger world too): no message could ever come."""
        if self.size == 1:
            raise ValueError("a receive from any source needs another rank; this group has one")
        stamp, tag = self.current_stamp(), self.tag
        return self._post(lambda: self.transport.irecv_any(tensor, tag, stamp), -1)

    def member(self, transport_rank: int) -> int:
        """The group rank of the transport's ``transport_rank``; an error if not a member."""
        try:
            return self.ranks.index(transport_rank)
        except ValueError:
            raise CollectiveError(f"rank {self.rank}: a message from rank {transport_rank} of the "
                                  f"transport reached group {self.ranks}, which it is not in "
                                  "(two groups share a message tag)") from None

    def sendrecv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int,
                 stamped: bool = True) -> tuple[Work, Work]:
        """Post a send to ``dst`` and a receive from ``src`` together. ``stamped=False``: the
        messages carry no stamp (RINGFLOW_DEBUG's fingerprints, which compare the calls)."""
        if send.numel() == 0 or recv.numel() == 0:
            return self.isend(send, dst), self.irecv(recv, src)
        stamp = self.current_stamp() if stamped else None
        return self._post(lambda: self.transport.sendrecv(send, self.ranks[dst], recv,
                                                          self.ranks[src], self.tag, stamp), src)

    def irecv_reduce(self, out: torch.Tensor, first: torch.Tensor, src: int,
                     combine: Callable) -> Work:
        """Receive from ``src`` and set out = combine(out, first, arrived) in one pass.

        Only for transports that have ``irecv_reduce`` (shm reduces straight from its ring).
        """
        if out.numel() == 0:
            return DoneWork()
        stamp = self.current_stamp()
        return self._post(lambda: self.transport.irecv_reduce(out, first, self.ranks[src], self.tag,
                                                              combine, stamp), src)

    def current_stamp(self) -> tuple | None:
        """The stamp of the running collective (None outside one: plain point-to-point)."""
        owner = self._owner()
        rec = owner.current
        return None if rec is None or not owner.stamps else rec.stamp

    def _post(self, post: Callable, peer: int):
        """Post a send/receive; a transport that finds the peer gone while posting is a failure of
        the running collective too (gloo reports a closed connection here, not in the wait)."""
        owner = self._owner()
        if owner.checks.pending is not None and not self.transport.checks_message_size:
            owner.checks.verify(owner, owner.timeout)   # RINGFLOW_DEBUG over gloo: compare, post
        try:
            return post()
        except PeerTimeout as e:
            raise failure(self, CollectiveTimeout, "timed out posting a message", peer, -2, e)
        except TransportError as e:
            raise failure(self, CollectiveError, f"failed ({e})", peer, -2, e)

    def wait(self, work: Work, peer: int, step: int = 0) -> None:
        """Wait for ``work``; turn transport failures into errors that name the call and peer."""
        owner = self._owner()
        if owner.checks.pending is not None:   # RINGFLOW_DEBUG: compare fingerprints before data
            owner.checks.verify(owner, owner.timeout)
        if self.tracer.on:                     # RINGFLOW_TRACE: the same wait, as a span
            self._timed_wait(work, peer, step)
            return
        self._wait(work, peer, step)

    def _timed_wait(self, work: Work, peer: int, step: int) -> None:
        t0 = self.tracer.now()
        self._wait(work, peer, step)
        who = self.ranks[peer] if peer >= 0 else -1   # world rank, as the recorder names it
        self.tracer.complete(f"wait rank {who}", t0, {"peer": who, "step": step})

    def _owner(self) -> "Communicator":
        """The communicator whose collective is running: this one, or the parent group of a
        sub-group that an algorithm drives directly (two-level: node and cross-node rings)."""
        comm = self
        while comm.current is None and comm.parent is not None:
            comm = comm.parent
        return comm

    def _wait(self, work: Work, peer: int, step: int, timeout: float | None = None) -> None:
        rec = self._owner().current
        if rec is not None:
            rec.step, rec.peer = step, self.ranks[peer]    # world rank: one numbering per log
        timeout = self.timeout if timeout is None else timeout
        try:
            work.wait(timeout)
        except PeerTimeout as e:
            raise failure(self, CollectiveTimeout, f"timed out after {timeout:.1f}s", peer, step, e)
        except StampMismatch as e:
            raise failure(self, CollectiveMismatch, mismatch_text(e), peer, step, e)
        except TransportError as e:
            raise failure(self, CollectiveError, f"failed ({e})", peer, step, e)

    def backend_failure(self, cause: Exception) -> CollectiveError:
        """The error for a failure inside a backend's own collective (algorithm="native")."""
        timeout = "timed out" in str(cause).lower() or "timeout" in str(cause).lower()
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return failure(self, CollectiveTimeout if timeout else CollectiveError, f"failed ({text})",
                             -1, -3, cause)

    def dump_history(self, file=None) -> str:
        """The flight recorder: this rank's recent collectives, oldest first."""
        return self.recorder.dump(file, why="requested")

    # ---- running a collective ---------------------------------------------------------------
    def run(self, name: str, job: Callable[[], None], *, tensor: torch.Tensor | None = None,
            op=None, root: int = -1, async_op: bool = False,
            algorithm: str = "") -> CollectiveWork | None:
        """Number, record, (optionally) fingerprint-check and execute one collective.
        ``algorithm``: the name select chose, for the timeline (RINGFLOW_TRACE)."""
        rec = call_record(self.seq, name, tensor, op, root)
        rec.stamp = stamp_of(rec)
        self.seq += 1
        self.recorder.add(rec)

        def execute() -> None:
            outer = self.current     # set when a running job calls verbs on this group itself
            self.current, rec.state, rec.started = rec, "running", time.monotonic()
            try:
                if outer is not None:
                    job()            # the outer call's fingerprint check covers what it runs
                elif self.engine.broken:
                    self._refuse_if_broken(rec)
                elif self.debug:
                    self.checks.run(self, job)
                else:
                    job()            # CallCheck.run's own test, skipped: a call is microseconds
                rec.state = "done"
            except BaseException:
                if rec.state == "running":
                    rec.state = "failed"
                raise
            finally:
                self.current = outer
                if outer is None and (self.checks.pending or self.checks.sending):
                    self.checks.clear()

        if self.tracer.on:           # RINGFLOW_TRACE: run the same, timed (off: nothing added)
            from .trace import timed_collective
            execute = timed_collective(self, execute, rec, tensor, algorithm)

        if async_op:
            return self.engine.submit(name, execute)
        self.engine.run(name, execute)
        return None

    def _refuse_if_broken(self, rec: CallRecord) -> None:
        broken = self.engine.broken
        if broken:
            rec.state = "refused"
            raise CollectiveError(refused(self.rank, f"{rec.name} #{rec.seq}", broken))

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
        if self._owns_engine:
            close_engine(self.transport)
            self.tracer.flush()          # after the queue ran: the timeline is complete

    def __repr__(self) -> str:
        return (f"Communicator(rank={self.rank}, size={self.size}, local_size={self.local_size}, "
                f"transport={self.transport.name})")
