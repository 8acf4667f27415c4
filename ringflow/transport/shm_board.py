"""RINGFLOW_DEBUG fingerprints over shared memory: posted in place, no message per collective.

Each rank writes the fingerprint of its collective number s into slot s % 2 of a
small table in its own control page, the marker s + 1 last; peers read it in place
once the marker shows (on x86-64 stores become visible in program order, see
shm_ring). Two slots suffice: a rank cannot post s + 2 (reusing slot s % 2) before it
has read every peer's s + 1, and a peer posts s + 1 only after reading all of s.

    board = transport.fingerprint_board()
    board.post(seq, [3, 1024, 7, 1, -1, seq]); board.expect(peer, seq, into=row).wait(30)
"""
from __future__ import annotations

import numpy as np

from .base import Work

OFFSET = 1024                 # in the control page, clear of the doorbell, pid, state, sleepers
SLOTS, WIDTH = 2, 8           # marker + up to 7 values per slot


def _table(segment) -> np.ndarray:
    return np.frombuffer(segment.mm, dtype=np.int64, count=SLOTS * WIDTH,
                         offset=OFFSET).reshape(SLOTS, WIDTH)


class Board:
    """This rank's fingerprint slots and read-only views of every peer's."""

    def __init__(self, transport):
        self.tr = transport
        self.mine = _table(transport.own)
        self.theirs = {p: _table(seg) for p, seg in transport.peers.items()}

    def post(self, seq: int, row) -> None:
        if len(row) >= WIDTH:
            raise ValueError(f"a fingerprint holds at most {WIDTH - 1} values, got {len(row)}")
        slot = self.mine[seq % SLOTS]
        slot[1:1 + len(row)] = row
        slot[0] = seq + 1                     # the marker last: a reader that sees it sees the row
        for segment in self.tr.peers.values():
            segment.notify()                  # wake a peer asleep waiting for it

    def expect(self, peer: int, seq: int, into: np.ndarray) -> Work:
        """A Work that completes when ``peer`` has posted ``seq``, copying its row ``into``."""
        return _Read(self, peer, seq, into)


class _Read(Work):
    def __init__(self, board: Board, peer: int, seq: int, into: np.ndarray):
        self.board, self.peer, self.seq, self.into = board, peer, seq, into
        self.line = board.theirs[peer][seq % SLOTS]
        self.done = False

    def is_completed(self) -> bool:
        if not self.done and self.line[0] == self.seq + 1:
            self.into[:] = self.line[1:1 + len(self.into)]
            self.done = True
        return self.done

    def wait(self, timeout: float | None = None) -> None:
        if not self.is_completed():
            self.board.tr.wait_until(self.is_completed, self.peer, f"read rank {self.peer}'s "
                                     f"fingerprint of collective #{self.seq}", timeout)
