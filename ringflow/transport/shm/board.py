"""RINGFLOW_DEBUG fingerprints over shared memory: posted in place, no message per collective.

Each rank writes the fingerprint of its collective number s into slot s % 2 of a
small table in its own control page, the marker s + 1 last; peers read it in place
once the marker shows (on x86-64 stores become visible in program order, see
ring). Two slots suffice: a rank cannot post s + 2 (reusing slot s % 2) before it
has read every peer's s + 1, and a peer posts s + 1 only after reading all of s.

The shm transport lends its own control pages; the torch and MPI transports, when all
their ranks share a node, map a page per rank (``node``), so the check costs
microseconds instead of a message over gloo or MPI.

    board = transport.fingerprint_board()
    board.post(seq, [3, 1024, 7, 1, -1, seq]); w = board.expect(peer, seq, 6); w.wait(30); w.row
"""
from __future__ import annotations

from typing import Callable

from ..base import Work

OFFSET = 1024                 # in the control page, clear of the doorbell, pid, state, sleepers
SLOTS, WIDTH = 2, 8           # marker + up to 7 values per slot


def _slots(segment) -> memoryview:
    """The board's int64 words in ``segment``'s control page (plain Python reads and writes:
    for seven integers numpy's per-call overhead is the larger cost)."""
    return memoryview(segment.mm)[OFFSET:OFFSET + SLOTS * WIDTH * 8].cast("q")


class Board:
    """This rank's fingerprint slots and views of every peer's.

    ``wait_until(done, peer, what, timeout)`` blocks until ``done()`` or raises
    (PeerTimeout, or TransportError when ``peer`` is gone).
    """

    def __init__(self, own, peers: dict, wait_until: Callable):
        self.own, self.peers, self.wait_until = own, peers, wait_until
        self.mine = _slots(own)
        self.theirs = {p: _slots(seg) for p, seg in peers.items()}

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
        """Release the views (the segments belong to whoever mapped them)."""
        for view in [self.mine, *self.theirs.values()]:
            view.release()                    # or the mapping could not close
        self.theirs = {}


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
