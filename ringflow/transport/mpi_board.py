"""RINGFLOW_DEBUG fingerprints over MPI: persistent requests, started once per collective.

The same small buffers go to the same peers on every call, so the requests are built
once (MPI_Send_init / MPI_Recv_init) and each collective only starts them: a few
microseconds where a message through the transport layer costs tens. They use a tag of
their own, so they never meet a collective's data.

    board = MpiBoard(transport); board.post(seq, row); w = board.expect(peer, seq, 6); w.wait(30)
"""
from __future__ import annotations

import numpy as np

from .shm.wait import wait_until
from .base import Work

TAG = 32000                     # above every communicator's tag (0..30000), below MPI_TAG_UB


class MpiBoard:
    def __init__(self, transport):
        self.tr = transport
        self.table: np.ndarray | None = None
        self.sends, self.recvs, self.all = [], {}, []

    def _build(self, width: int) -> None:
        tr, n, r = self.tr, self.tr.size, self.tr.rank
        self.table = np.zeros((n, width), dtype=np.int64)
        peers = [p for p in range(n) if p != r]
        self.sends = [tr.comm.Send_init(self.table[r], dest=p, tag=TAG) for p in peers]
        self.recvs = {p: tr.comm.Recv_init(self.table[p], source=p, tag=TAG) for p in peers}
        self.all = self.sends + list(self.recvs.values())

    def post(self, seq: int, row) -> None:
        if self.table is None:
            self._build(len(row))
        else:
            self.tr.MPI.Request.Waitall(self.sends)   # the last call's, long delivered: frees the buffer
        self.table[self.tr.rank] = row
        self.tr.MPI.Prequest.Startall(self.all)

    def expect(self, peer: int, seq: int, width: int) -> Work:
        """A Work that completes when ``peer``'s row has come; then ``.row`` is its list."""
        return _Arrived(self, peer, seq)

    def close(self) -> None:
        for request in self.all:
            if request.Test():                 # an unfinished one belongs to a failed job
                request.Free()
        self.all, self.sends, self.recvs = [], [], {}


class _Arrived(Work):
    def __init__(self, board: MpiBoard, peer: int, seq: int):
        self.board, self.peer, self.seq = board, peer, seq
        self.request, self.row = board.recvs[peer], None

    def is_completed(self) -> bool:
        if self.row is None and self.request.Test():
            self.row = self.board.table[self.peer].tolist()
        return self.row is not None

    def wait(self, timeout: float | None = None) -> None:
        wait_until(self.is_completed, timeout, self.peer,
                   f"receive rank {self.peer}'s fingerprint of collective #{self.seq}",
                   self.board.tr.spin)
