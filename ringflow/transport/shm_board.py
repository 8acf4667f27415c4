"""RINGFLOW_DEBUG fingerprints over shared memory: posted in place, no message per collective.

Each rank writes the fingerprint of its collective number s into slot s % 2 of a
small table in its own control page, the marker s + 1 last; peers read it in place
once the marker shows (on x86-64 stores become visible in program order, see
shm_ring). Two slots suffice: a rank cannot post s + 2 (reusing slot s % 2) before it
has read every peer's s + 1, and a peer posts s + 1 only after reading all of s.

The shm transport lends its own control pages; the torch and MPI transports, when all
their ranks share a node, map a page per rank just for this (``node_board``), so the
check costs microseconds instead of a message over gloo or MPI.

    board = transport.fingerprint_board()
    board.post(seq, [3, 1024, 7, 1, -1, seq]); w = board.expect(peer, seq, 6); w.wait(30); w.row
"""
from __future__ import annotations

import os
import time
from typing import Callable

from .base import PeerTimeout, TransportError, Work
from .shm_ring import STATE_CLOSED, fence, pid_alive

OFFSET = 1024                 # in the control page, clear of the doorbell, pid, state, sleepers
SLOTS, WIDTH = 2, 8           # marker + up to 7 values per slot
_NAP = 0.02                   # longest doorbell sleep between liveness checks


def _slots(segment) -> memoryview:
    """The board's int64 words in ``segment``'s control page (plain Python reads and writes:
    for seven integers numpy's per-call overhead is the larger cost)."""
    return memoryview(segment.mm)[OFFSET:OFFSET + SLOTS * WIDTH * 8].cast("q")


class Board:
    """This rank's fingerprint slots and views of every peer's.

    ``wait_until(done, peer, what, timeout)`` blocks until ``done()`` or raises
    (PeerTimeout, or TransportError when ``peer`` is gone).
    """

    def __init__(self, own, peers: dict, wait_until: Callable, owns_segments: bool = False):
        self.own, self.peers, self.wait_until = own, peers, wait_until
        self.mine = _slots(own)
        self.theirs = {p: _slots(seg) for p, seg in peers.items()}
        self.owns_segments = owns_segments

    def post(self, seq: int, row) -> None:
        if len(row) >= WIDTH:
            raise ValueError(f"a fingerprint holds at most {WIDTH - 1} values, got {len(row)}")
        base, mine = (seq % SLOTS) * WIDTH, self.mine
        for i, value in enumerate(row):
            mine[base + 1 + i] = value
        mine[base] = seq + 1                  # the marker last: a reader that sees it sees the row
        for segment in self.peers.values():
            segment.notify()                  # wake a peer asleep waiting for it

    def expect(self, peer: int, seq: int, width: int) -> Work:
        """A Work that completes when ``peer`` has posted ``seq``; then ``.row`` is its list."""
        return _Read(self, peer, seq, width)

    def close(self) -> None:
        """Release segments mapped for the board alone (a transport's own are left to it)."""
        for view in [self.mine, *self.theirs.values()]:
            view.release()                    # or the mapping could not close
        self.theirs = {}
        if not self.owns_segments:
            return
        self.own.state.value = STATE_CLOSED
        for seg in self.peers.values():
            seg.notify()
        for seg in [self.own, *self.peers.values()]:
            seg.close()
        self.owns_segments = False


class _Read(Work):
    def __init__(self, board: Board, peer: int, seq: int, width: int):
        self.board, self.peer, self.seq = board, peer, seq
        self.view, self.base, self.width = board.theirs[peer], (seq % SLOTS) * WIDTH, width
        self.row: list[int] | None = None

    def is_completed(self) -> bool:
        if self.row is None and self.view[self.base] == self.seq + 1:
            self.row = self.view[self.base + 1:self.base + 1 + self.width].tolist()
        return self.row is not None

    def wait(self, timeout: float | None = None) -> None:
        if not self.is_completed():
            self.board.wait_until(self.is_completed, self.peer, f"read rank {self.peer}'s "
                                  f"fingerprint of collective #{self.seq}", timeout)


def node_board(exchange, rank: int, size: int, spin: float) -> Board:
    """A board on pages mapped for it alone (every rank of the group on this node).

    Collective: every rank calls it. Raises ShmUnavailable on every rank alike when one cannot
    map its page, so callers may fall back to messages together.
    """
    from .shm_bootstrap import map_segments
    own, peers, _, _, _ = map_segments(exchange, rank, size, ring_bytes=4096)   # smallest rings

    def wait_until(done, peer: int, what: str, timeout: float | None) -> None:
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while not done():
            bell = own.bell.value()               # read before looking, so no wake-up is lost
            if done():
                return
            now = time.monotonic()
            if now - start < spin:
                os.sched_yield()
                continue
            if deadline is not None and now >= deadline:
                raise PeerTimeout(f"rank {rank}: {what} timed out after {timeout:.1f}s", peer)
            seg = peers[peer]
            if seg.state.value == STATE_CLOSED or not pid_alive(seg.pid.value):
                raise TransportError(f"rank {rank}: peer rank {peer} exited or closed while "
                                     f"waiting to {what}")
            own.sleepers.value += 1
            fence()                               # Dekker with Segment.notify, see shm_ring
            try:
                if not done():
                    own.bell.wait(bell, _NAP if deadline is None else
                                  max(1e-4, min(_NAP, deadline - now)))
            finally:
                own.sleepers.value -= 1

    return Board(own, peers, wait_until, owns_segments=True)
