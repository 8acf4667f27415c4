"""Buffers, inputs and expected results of one benchmark row (nccl-tests' size/count conventions).

``size`` is the larger buffer in bytes; ``count`` is elements per rank block
(all-reduce, broadcast, reduce, sendrecv: the whole buffer). Inputs are small
integers (powers of two for prod), so every result is exactly representable
and ``--check`` compares bit for bit.
"""
from __future__ import annotations

import dataclasses

import torch

BUSBW_FACTOR = {  # nccl-tests' PERFORMANCE.md: bus bandwidth = algbw * factor
    "all_reduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n, "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0, "reduce": lambda n: 1.0, "sendrecv": lambda n: 1.0}
BLOCKED = ("reduce_scatter", "all_gather", "all_to_all")       # the big buffer is n blocks
IN_PLACE_ONLY = ("all_reduce", "broadcast", "reduce")          # the torch-shaped verbs
REDUCING = ("all_reduce", "reduce_scatter", "reduce")           # the others print redop "none"
ROOTED = ("broadcast", "reduce")                                # the others print root -1


@dataclasses.dataclass
class Case:
    collective: str
    count: int              # elements per block
    dtype: torch.dtype
    op: str
    root: int
    n: int
    rank: int

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    @property
    def big(self) -> int:
        """Elements of the larger buffer."""
        return self.count * (self.n if self.collective in BLOCKED else 1)

    @property
    def size(self) -> int:
        return self.big * self.itemsize


def case_for(collective: str, nbytes: int, dtype, op: str, root: int, n: int, rank: int) -> Case:
    """The row for ``nbytes`` (rounded down to whole elements and whole blocks)."""
    item = torch.empty(0, dtype=dtype).element_size()
    per = n if collective in BLOCKED else 1
    return Case(collective, nbytes // item // per, dtype, op, root, n, rank)


def inputs(rank: int, numel: int, dtype, op: str) -> torch.Tensor:
    """Rank ``rank``'s exact-sum input of ``numel`` elements."""
    i = torch.arange(numel, dtype=torch.int64)
    if op == "prod":
        return torch.where((i + rank) % 5 == 0, 2, 1).to(dtype)
    shift = 0 if dtype == torch.uint8 else 5
    return ((i * 7 + rank * 5) % 11 - shift).to(dtype)


def _reduce(case: Case, numel: int) -> torch.Tensor:
    parts = [inputs(r, numel, case.dtype, case.op) for r in range(case.n)]
    out = parts[0].clone()
    for p in parts[1:]:
        if case.op in ("sum", "avg"):
            out.add_(p)
        elif case.op == "prod":
            out.mul_(p)
        elif case.op == "max":
            torch.maximum(out, p, out=out)
        else:
            torch.minimum(out, p, out=out)
    if case.op == "avg":
        out.div_(case.n)
    return out


def send_numel(case: Case) -> int:
    return case.big if case.collective in ("reduce_scatter", "all_to_all") else case.count


def recv_numel(case: Case) -> int:
    return case.big if case.collective in ("all_gather", "all_to_all") else case.count


def expected(case: Case) -> torch.Tensor | None:
    """What rank ``case.rank``'s output must hold (None: nothing to check on this rank)."""
    c, n, r, k = case.collective, case.n, case.rank, case.count
    if c == "all_reduce":
        return _reduce(case, k)
    if c == "reduce_scatter":
        return _reduce(case, k * n)[r * k:(r + 1) * k]
    if c == "reduce":                        # non-root buffers are scratch for some backends
        return _reduce(case, k) if r == case.root else None
    if c == "all_gather":
        return torch.cat([inputs(s, k, case.dtype, case.op) for s in range(n)])
    if c == "broadcast":
        return inputs(case.root, k, case.dtype, case.op)
    if c == "all_to_all":
        return torch.cat([inputs(s, k * n, case.dtype, case.op)[r * k:(r + 1) * k]
                          for s in range(n)])
    return inputs((r - 1) % n, k, case.dtype, case.op)        # sendrecv: from the left


def wrong(out: torch.Tensor, case: Case) -> int:
    """Elements of ``out`` that differ from the expected result (0 when nothing to check)."""
    want = expected(case)
    if want is None:
        return 0
    return int((out.view(-1).cpu() != want).sum())
