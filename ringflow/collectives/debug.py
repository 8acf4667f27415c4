"""Cheap fingerprints of each call, compared across ranks when RINGFLOW_DEBUG=1.

Every rank sends every other rank a 6-integer fingerprint (collective, numel,
dtype, op, root, sequence number) of the call it is making. If any differ, every
rank raises the same CollectiveMismatch naming the first differing field and
which ranks hold which value, instead of hanging or mixing bytes.

How the fingerprints travel decides what the check costs (benchmarks/collectives/check_overhead.py):
- on a board (``Transport.fingerprint_board``) when the transport has one: with every
  rank on one node, each writes its fingerprint in place in a shared-memory page that
  its peers read (shm, torch and MPI transports: transport/shm/board.py); MPI across
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

from .errors import CollectiveError, CollectiveMismatch

FIELDS = ("collective", "numel", "dtype", "op", "root", "sequence number")


def _code(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


# Names a fingerprint can hold, so a rank can print what its peers called.
_KNOWN = ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor", "broadcast", "reduce",
          "all_to_all_single", "barrier", "all_reduce_wire_bfloat16", "all_reduce_wire_float16",
          "sum", "avg", "max", "min", "product", "-",
          "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
          "bool", "complex64", "complex128")
_NAMES = {_code(t): t for t in _KNOWN}
_CODES = {t: c for c, t in _NAMES.items()}


def _coded(text: str) -> int:
    code = _CODES.get(text)
    return _code(text) if code is None else code


code_of = _coded            # the stamp (stamp.py) names calls with the same codes


def name_of(code: int) -> str:
    """The name a code stands for ("?" when it is not one ringflow knows)."""
    return _NAMES.get(code, "?")


def fingerprint(rec) -> list[int]:
    stamp = rec.stamp
    if stamp is not None:            # the same codes, already made (stamp.py)
        return [stamp[2] >> 32, rec.numel, stamp[2] & 0xFFFFFFFF, stamp[3] >> 32, rec.root, rec.seq]
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

    def __init__(self, comm, rec, slot: int | None = None):
        n, r = comm.size, comm.rank
        self.rank, self.rec, self.size = r, rec, n
        self.mine = mine = fingerprint(rec)
        self.recvs, self.sends, self.table = [], [], None
        board = _board(comm)
        if board is not None:          # one node / MPI: no message per call, plain lists (fast)
            slot = rec.seq if slot is None else slot      # board slots numbered by the caller
            board.post(slot, mine)
            self.recvs = [(board.expect(p, slot, len(mine)), p) for p in range(n) if p != r]
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
            sw, rw = comm.sendrecv(views[r], dst, views[src], src, stamped=False)
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


def check_on_board(comm) -> None:
    """Compare this call's fingerprint with every rank's on the transport's board, if it has one;
    CollectiveMismatch (and the transport marked unusable) where they differ.

    For the backends' own collectives (native.py), whose messages carry no stamp: a rank in
    another call fails here instead of the backend mixing their bytes. The board's slots are
    numbered by these calls alone (``comm.board_calls``). Without a board (gloo across nodes)
    there is no check but RINGFLOW_DEBUG's."""
    if comm.debug or comm.size == 1 or not comm.stamps:
        return
    board = _board(comm)
    if board is None:
        return
    # PendingCheck's steps written out: this runs before every native call, and its objects
    # and callbacks cost as much as MPI's own 4 KiB all-reduce (benchmarks/collectives/overheads.py)
    slot, comm.board_calls = comm.board_calls, comm.board_calls + 1
    rec, me = comm.current, comm.rank
    mine = fingerprint(rec)
    board.post(slot, mine)
    reads = [board.expect(p, slot, len(mine)) for p in range(comm.size) if p != me]
    for read in reads:
        if not read.is_completed():
            comm._wait(read, read.peer, -1)
    if all(read.row == mine for read in reads):
        return
    rows = {read.peer: read.row for read in reads}
    rows[me] = mine
    try:
        compare([rows[p] for p in range(comm.size)], me, rec)
    except CollectiveMismatch as e:
        comm.engine.broken = comm.engine.broken or str(e)
        raise


class CallCheck:
    """RINGFLOW_DEBUG's fingerprint exchange for the collective running on one communicator.

    Posted as the collective starts; compared before its first wait returns (before its first
    post, where the transport cannot survive a message of the wrong size); its sends finished
    as it ends.
        comm.checks.run(comm, job)      # job() alone unless comm.debug and comm.size > 1
    """

    def __init__(self):
        self.pending: PendingCheck | None = None     # posted, not compared yet
        self.sending: PendingCheck | None = None     # compared, its sends still to finish

    def verify(self, comm, timeout: float) -> None:
        check, self.pending = self.pending, None
        check.verify(lambda w, p: comm._wait(w, p, -1, timeout))
        self.sending = check

    def run(self, comm, job) -> None:
        """Run ``job``; with RINGFLOW_DEBUG, around a fingerprint exchange."""
        if not (comm.debug and comm.size > 1):
            job()
            return
        self.pending = PendingCheck(comm, comm.current)
        try:
            job()
            if self.pending is not None:          # the job never waited (nothing to receive)
                self.verify(comm, comm.timeout)
        except CollectiveMismatch as e:
            comm.engine.broken = comm.engine.broken or str(e)   # data may be in flight: unusable
            raise
        except CollectiveError:
            if self.pending is not None:          # failed before comparing: a mismatch explains it
                self.verify(comm, min(comm.timeout, 2.0))      # better, if fingerprints came
            raise
        self.sending.finish(lambda w, p: comm._wait(w, p, -1))

    def clear(self) -> None:
        self.pending = self.sending = None
