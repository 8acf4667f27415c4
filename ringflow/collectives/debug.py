"""Cheap fingerprints of each call, compared across ranks when RINGFLOW_DEBUG=1.

Before a collective runs, every rank sends every other rank a 6-integer
fingerprint (collective, numel, dtype, op, root, sequence number). If any
differ, every rank raises the same CollectiveMismatch naming the first differing
field and which ranks hold which value, instead of hanging or mixing bytes.
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


def fingerprint(rec) -> torch.Tensor:
    return torch.tensor([_code(rec.name), rec.numel, _code(rec.dtype), _code(rec.op), rec.root,
                         rec.seq], dtype=torch.int64)


def describe(values: dict[int, str]) -> str:
    by_value: dict[str, list[int]] = {}
    for rank, v in values.items():
        by_value.setdefault(v, []).append(rank)
    return "; ".join(f"ranks {ranks} have {v}" for v, ranks in by_value.items())


def check_fingerprints(comm, rec) -> None:
    """Exchange fingerprints with every rank (pairwise) and raise on the first difference."""
    n, r = comm.size, comm.rank
    mine = fingerprint(rec).to(comm.device)
    table = torch.empty(n, len(FIELDS), dtype=torch.int64, device=comm.device)
    table[r] = mine
    for shift in range(1, n):
        dst, src = (r + shift) % n, (r - shift) % n
        sw, rw = comm.sendrecv(mine, dst, table[src], src)
        comm.wait(rw, peer=src, step=-shift)
        comm.wait(sw, peer=dst, step=-shift)
    table = table.cpu()
    for i, field in enumerate(FIELDS):
        column = table[:, i]
        if bool((column != column[0]).any()):
            named = field in ("collective", "dtype", "op")
            values = {k: _NAMES.get(int(column[k]), "?") if named else str(int(column[k]))
                      for k in range(n)}
            raise CollectiveMismatch(
                f"rank {r}: collective #{rec.seq} mismatch in {field}: {describe(values)} "
                f"(this rank called {rec.name}(numel={rec.numel}, {rec.dtype}, op={rec.op}, "
                f"root={rec.root}))")
