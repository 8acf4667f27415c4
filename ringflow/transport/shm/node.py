"""Shared memory beside the torch (gloo) and MPI transports when every rank is on one node.

Those transports move messages through gloo or MPI, but when all their ranks share a
node each rank also maps one small segment (a control page and a staging area), for the
two things that need no messages at all: RINGFLOW_DEBUG's fingerprint board
(``board``) and staged collectives (``stage``), which read peers' data in place
where a gloo message costs hundreds of microseconds and an MPI one, through Python, tens.

Mapped at start-up (``from_launch``), so whether staged collectives exist is settled before
any collective picks an algorithm: a choice made on one thread while another maps memory
could differ between ranks. A node without usable shared memory raises ShmUnavailable on
every rank alike, so all fall back together.

    node = NodeShm(exchange, rank, size, spin=2e-3)     # collective
    node.board.post(seq, row); node.stage.put(s, data); node.close()
"""
from __future__ import annotations

import threading

from ..base import TransportError
from .board import Board
from .bootstrap import map_segments
from .segment import STATE_CLOSED, Segment, pid_alive
from .stage import Stage, stage_half
from .wait import Bell, wait_until

RING_BYTES = 4096             # the smallest rings map_segments allows: no messages go through
# How long a staged wait beside gloo spins before it sleeps on the doorbell, which the peer
# rings as it posts, so the sleeper wakes at once (RINGFLOW_SPIN_US overrides). Not the 2 ms of
# a node whose ranks have a core each: gloo's threads and other processes share the cores, and
# a rank spinning 2 ms kept its peer off one. Staged all-reduces of 4-256 KiB beside gloo took
# 2.5 ms with a 2 ms spin and 0.1-0.5 ms with 50 us (2 ranks, load average 4 on 2 vCPUs; README,
# Across hosts). Beside MPI the transport's own spin stays: its native calls' fingerprint check
# waits here, and MPI answers in microseconds on an idle node.
BESIDE_SPIN_US = 50.0


class BesideNodeShm:
    """Mixed into the torch and MPI transports: staged collectives through ``node`` (a NodeShm
    the transport maps at start-up when every rank is on this node, else None)."""

    node: "NodeShm | None" = None

    @property
    def may_stage(self) -> bool:
        return self.node is not None and self.node.stage is not None

    def staging(self):
        """The staging area of staged collectives when every rank is on this node, else None."""
        return self.node.stage if self.node is not None else None


class NodeShm:
    """This rank's page and staging area, and views of every peer's."""

    def __init__(self, exchange, rank: int, size: int, spin: float, stage_bytes: int | None = None,
                 spin_yield: bool = True):
        half = stage_half(stage_bytes)
        self.rank, self.spin, self.spin_yield = rank, spin, spin_yield   # see wait.wait_until
        self._lock = threading.Lock()             # this process's threads asleep on our bell
        self.own, self.peers, _, _, _ = map_segments(exchange, rank, size, RING_BYTES, half)
        self.board = Board(self.own, self.peers, self.wait_until)
        self.stage = None if not half else Stage(
            {rank: self.own, **self.peers}, rank, Segment.stage_offset(max(size - 1, 1), RING_BYTES),
            half, self.wait_until)

    def wait_until(self, done, peer: int, what: str, timeout: float | None) -> None:
        """Spin, then sleep on our doorbell (peers ring it after posting) until ``done()``;
        PeerTimeout after ``timeout``, TransportError once ``peer`` has exited or closed."""
        wait_until(done, timeout, peer, lambda: f"rank {self.rank}: {what}", self.spin,
                   sleep=Bell(self.own, self._lock), check=lambda: self._check_alive(peer, what),
                   check_every=0.0, spin_yield=self.spin_yield)

    def _check_alive(self, peer: int, what: str) -> None:
        seg = self.peers[peer]
        if seg.state.value == STATE_CLOSED or not pid_alive(seg.pid.value):
            raise TransportError(f"rank {self.rank}: peer rank {peer} exited or closed while "
                                 f"waiting to {what}")

    def close(self) -> None:
        """Tell peers we are gone, wake them, unmap (idempotent)."""
        if self.board is None:
            return
        self.board.close()
        if self.stage is not None:
            self.stage.close()
        self.board = self.stage = None
        self.own.state.value = STATE_CLOSED
        for seg in self.peers.values():
            seg.notify()
        for seg in [self.own, *self.peers.values()]:
            seg.close()
