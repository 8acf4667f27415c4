"""Cheap fingerprints of each call, compared across ranks when RINGFLOW_DEBUG=1.

Every rank sends every other rank a 6-integer fingerprint (collective, numel,
dtype, op, root, sequence number) of the call it is making. If any differ, every
rank raises the same CollectiveMismatch naming the first differing field and
which ranks hold which value, instead of hanging or mixing bytes.

How the fingerprints travel decides what the check costs (benchmarks/collectives/debug_overhead.py):
- on a board (``Transport.fingerprint_board``) when the transport has one: with every
  rank on one node, each writes its fingerprint in place in a shared-memory page that
  its peers read (shm, torch and MPI transports: transport/shm_board.py); MPI across
  nodes starts persistent requests on a tag of their own (transport/mpi_board.py);
- else as messages, posted as the collective starts, so each rank's first message to
  a peer is its fingerprint (messages between two ranks keep their order).
Where a receive of the wrong size only raises (threads, MPI, shared memory:
``Transport.checks_message_size``) data is posted at once and the fingerprints are
compared before the first wait returns, so the check runs beside the data. Over gloo a
larger message landing in a smaller buffer aborts the process, so the fingerprints are
compared before any data is posted: on one node that waits only for the slowest rank to
arrive, which the data would wait for anyway; across nodes it is one more message latency.

    RINGFLOW_DEBUG=1 torchrun --nproc_per_node=4 train.py
"""
from __future__ import annotations

import zlib

import torch

from .errors import CollectiveMismatch

FIELDS = ("collective", "numel", "dtype", "op", "root", "sequence number")


def _code(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


# Names a fingerprint can hold, so a rank can print what its peers called.
_KNOWN = ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor", "broadcast", "reduce",
          "all_to_all_single", "barrier", "sum", "avg", "max", "min", "product", "-",
          "float32", "float64", "float16", "bfloat16", "int8", "int32", "int64", "uint8")
_NAMES = {_code(t): t for t in _KNOWN}
_CODES = {t: c for c, t in _NAMES.items()}


def _coded(text: str) -> int:
    code = _CODES.get(text)
    return _code(text) if code is None else code


def fingerprint(rec) -> list[int]:
    return [_coded(rec.name), rec.numel, _coded(rec.dtype), _coded(rec.op), rec.root, rec.seq]


def describe(values: dict[int, str]) -> str:
    by_value: dict[str, list[int]] = {}
    for rank, v in values.items():
        by_value.setdefault(v, []).append(rank)
    return "; ".join(f"ranks {ranks} have {v}" for v, ranks in by_value.items())


def compare(table: list[list[int]], rank: int, rec) -> None:
    """Raise CollectiveMismatch on the first field (column) of ``table`` where ranks differ."""
    for i, field in enumerate(FIELDS):
        column = [row[i] for row in table]
        if any(v != column[0] for v in column):
            named = field in ("collective", "dtype", "op")
            values = {k: _NAMES.get(v, "?") if named else str(v) for k, v in enumerate(column)}
            raise CollectiveMismatch(
                f"rank {rank}: collective #{rec.seq} mismatch in {field}: {describe(values)} "
                f"(this rank called {rec.call()}). Every rank must issue the same collectives in "
                "the same order with the same size, dtype, op and root; look for a branch on rank "
                "or on data that skips or adds a call")


def _board(comm):
    """The transport's fingerprint board, for the world group only (a board has one sequence
    of slots; sub-groups, numbered on their own, send their fingerprints as messages)."""
    board = getattr(comm, "_fingerprint_board", False)
    if board is False:
        world = comm.parent is None and comm.is_world
        board = comm._fingerprint_board = comm.transport.fingerprint_board() if world else None
    return board


class PendingCheck:
    """A fingerprint exchange in flight: posted as a collective starts, verified before any data.

        check = PendingCheck(comm, rec)       # posts n-1 sends and n-1 receives (or a board row)
        check.verify(wait)                    # wait(work, peer) each; raises on a mismatch
    """

    def __init__(self, comm, rec):
        n, r = comm.size, comm.rank
        self.rank, self.rec, self.size = r, rec, n
        self.mine = mine = fingerprint(rec)
        self.recvs, self.sends, self.table = [], [], None
        board = _board(comm)
        if board is not None:          # one node / MPI: no message per call, plain lists (fast)
            board.post(rec.seq, mine)
            self.recvs = [(board.expect(p, rec.seq, len(mine)), p) for p in range(n) if p != r]
            return
        # Messages: one table per communicator, reused (its collectives run one at a time and
        # each check's messages finish before the next one posts).
        table, views = getattr(comm, "_fingerprint_table", (None, None))
        if table is None:
            table = torch.zeros((n, len(FIELDS)), dtype=torch.int64, device=comm.device)
            views = list(table)                      # row tensors, made once
            comm._fingerprint_table = (table, views)
        self.table = table
        table[r] = torch.tensor(mine, dtype=torch.int64)
        for shift in range(1, n):
            dst, src = (r + shift) % n, (r - shift) % n
            sw, rw = comm.sendrecv(views[r], dst, views[src], src)
            self.recvs.append((rw, src))
            self.sends.append((sw, dst))

    def verify(self, wait) -> None:
        """Wait for every peer's fingerprint and compare; the sends are finished by ``finish``."""
        for work, peer in self.recvs:
            wait(work, peer)
        if self.table is not None:
            compare(self.table.tolist(), self.rank, self.rec)
            return
        if all(work.row == self.mine for work, _ in self.recvs):
            return                                   # the common case
        rows = {peer: work.row for work, peer in self.recvs}
        rows[self.rank] = self.mine
        compare([rows[p] for p in range(self.size)], self.rank, self.rec)

    def finish(self, wait) -> None:
        for work, peer in self.sends:
            wait(work, peer)
