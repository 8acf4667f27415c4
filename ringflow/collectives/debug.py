"""Cheap fingerprints of each call, compared across ranks when RINGFLOW_DEBUG=1.

Every rank sends every other rank a 6-integer fingerprint (collective, numel,
dtype, op, root, sequence number) of the call it is making. If any differ, every
rank raises the same CollectiveMismatch naming the first differing field and
which ranks hold which value, instead of hanging or mixing bytes.

The exchange is posted when the collective starts and completed before its first
data message is posted: a receive of the wrong size would already be fatal (gloo
aborts the process when a larger message lands in a smaller buffer), and posting
sends early would need transport-specific rules (NCCL and the shared-memory ring
want a step's send and receive together). So the check costs one small exchange,
one latency, per collective: see benchmarks/bench_debug_overhead.py.

    RINGFLOW_DEBUG=1 torchrun --nproc_per_node=4 train.py
"""
from __future__ import annotations

import zlib

import numpy as np
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


def fingerprint(rec) -> list[int]:
    return [_code(rec.name), rec.numel, _code(rec.dtype), _code(rec.op), rec.root, rec.seq]


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


class PendingCheck:
    """A fingerprint exchange in flight: posted as a collective starts, verified before any data.

        check = PendingCheck(comm, rec)       # posts n-1 sends and n-1 receives
        check.verify(wait)                    # wait(work, peer) each; raises on a mismatch
    """

    def __init__(self, comm, rec):
        n, r = comm.size, comm.rank
        self.rank, self.rec = r, rec
        self.mine = fingerprint(rec)
        table = np.empty((n, len(FIELDS)), dtype=np.int64)   # numpy: a few µs, not torch's tens
        table[r] = self.mine
        self.table = torch.from_numpy(table).to(comm.device)
        self.recvs, self.sends = [], []
        for shift in range(1, n):
            dst, src = (r + shift) % n, (r - shift) % n
            sw, rw = comm.sendrecv(self.table[r], dst, self.table[src], src)
            self.recvs.append((rw, src))
            self.sends.append((sw, dst))

    def verify(self, wait) -> None:
        """Wait for every peer's fingerprint and compare; the sends are finished by ``finish``."""
        for work, peer in self.recvs:
            wait(work, peer)
        compare(self.table.tolist(), self.rank, self.rec)

    def finish(self, wait) -> None:
        for work, peer in self.sends:
            wait(work, peer)
