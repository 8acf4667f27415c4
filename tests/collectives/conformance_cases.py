"""The conformance matrix's cases: inputs every rank can rebuild, exact answers, and the table
of verbs (a row per verb: its inputs, its oracle, ringflow's call and torch's). Run by
conformance.py.

Inputs are small integers (values in [-8, 8]; products in {-1, 1, 2}), so sums and products
are exact in every dtype up to 4 ranks and any summation order must give the same bytes.
At 2^20+3 elements only float32 (and SUM where there is an op) runs.
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Any, Callable

import torch

from ringflow import collectives as rc

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int8, torch.int32, torch.int64, torch.uint8)
OPS = ("sum", "avg", "max", "min", "product")
BIG = (1 << 20) + 3


def sizes(n: int) -> list[int]:
    """{0, 1, ranks-1, ranks+1, 1000, 2^20+3}."""
    return sorted({0, 1, n - 1, n + 1, 1000, BIG})


def combos(numel: int, with_op: bool):
    """(dtype, op) pairs for a size: all of them, except float32 SUM only at the big size."""
    for dtype in DTYPES:
        if numel == BIG and dtype != torch.float32:
            continue
        for op in (OPS if with_op else ("-",)):
            if op == "avg" and not dtype.is_floating_point:
                continue                     # refused by design (an integer mean truncates)
            if numel == BIG and op not in ("sum", "-"):
                continue
            yield dtype, op


def make(rank: int, key: str, numel: int, dtype: torch.dtype, op: str) -> torch.Tensor:
    """Rank ``rank``'s input for case ``key``: the same on every process that asks."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{key}/{rank}".encode()))
    if op == "product":
        v = torch.tensor([-1, 1, 2] if dtype != torch.uint8 else [1, 1, 2])
        return v[torch.randint(0, 3, (numel,), generator=g)].to(dtype)
    low = 0 if dtype == torch.uint8 else -8
    return torch.randint(low, 9, (numel,), generator=g).to(dtype)


@functools.lru_cache(maxsize=4)
def inputs(key: str, numel: int, dtype: torch.dtype, op: str, n: int) -> tuple[torch.Tensor, ...]:
    """Every rank's input for a case, made once per process (threads of a local world share it)."""
    return tuple(make(k, key, numel, dtype, op) for k in range(n))


@functools.lru_cache(maxsize=4)
def reduced(key: str, numel: int, dtype: torch.dtype, op: str, n: int) -> torch.Tensor:
    """The exact reduction of :func:`inputs` (never modified: callers clone what they change)."""
    return reduce_all(list(inputs(key, numel, dtype, op, n)), op)


def reduce_all(parts: list[torch.Tensor], op: str) -> torch.Tensor:
    """The exact reduction in a wide type, rounded once to the parts' dtype."""
    dtype = parts[0].dtype
    wide = torch.stack([p.to(torch.float64 if dtype.is_floating_point else torch.int64)
                        for p in parts])
    out = {"sum": wide.sum, "avg": wide.sum, "max": lambda dim: wide.amax(dim),
           "min": lambda dim: wide.amin(dim), "product": wide.prod}[op](dim=0).to(dtype)
    if op == "avg":
        out.div_(len(parts))                 # what every ringflow algorithm does: exact sum / n
    return out


@dataclasses.dataclass(frozen=True)
class Case:
    """One cell of a row in one group: size ``m``, dtype, op and root, and every rank's input."""
    comm: Any
    key: str
    m: int
    dtype: torch.dtype
    op: str
    root: int | None
    parts: tuple                             # every rank's input; this rank's is ``mine``

    @property
    def r(self) -> int:
        return self.comm.rank

    @property
    def mine(self) -> torch.Tensor:
        return self.parts[self.r]

    @property
    def rop(self):
        return getattr(rc.ReduceOp, self.op.upper())

    @property
    def top(self):
        import torch.distributed as dist
        return getattr(dist.ReduceOp, self.op.upper())

    def reduced(self) -> torch.Tensor:
        """The exact reduction of every rank's input (cached and shared: never modify it)."""
        first, n = self.parts[0], len(self.parts)
        return reduced(self.key, first.numel(), self.dtype, self.op, n).view(first.shape)


def on_clone(c: Case, call) -> torch.Tensor:
    """``call`` on a copy of this rank's input (in-place verbs); returns the copy."""
    t = c.mine.clone()
    call(t)
    return t


def into(numel: int, c: Case, call, fill: bool = True) -> torch.Tensor:
    """``call`` into a fresh output of ``numel`` elements (filled with 7s: an unwritten element
    shows, or left empty); returns the output."""
    out = torch.full((numel,), 7, dtype=c.dtype) if fill else torch.empty(numel, dtype=c.dtype)
    call(out)
    return out


def reduce_theirs(c: Case, dist) -> torch.Tensor | None:
    t = on_clone(c, lambda t: dist.reduce(t, dst=c.root, op=c.top))
    return t if c.r == c.root else None      # torch leaves non-roots' tensors undefined


def rs_theirs(c: Case, dist) -> torch.Tensor:
    verb = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return into(c.m, c, lambda out: verb(out, c.mine.clone(), op=c.top), fill=False)


def ag_theirs(c: Case, dist) -> torch.Tensor:
    verb = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return into(c.m * len(c.parts), c, lambda out: verb(out, c.mine), fill=False)


@dataclasses.dataclass(frozen=True)
class Verb:
    """One row: for each size ``m`` and (dtype, op), each rank's input, the oracle, ringflow's
    call and torch.distributed's on the same input."""
    key: str                  # seeds the inputs: "<key>/<m>/<dtype>[/<op>]"
    label: str                # names a case in failures: .format(m=, dtype=, op=, root=)
    with_op: bool             # the cases run every reduce op (else none)
    shared: bool              # results must be the same bytes on every rank (the digest)
    numel: Callable           # (m, n) -> elements of each rank's input
    oracle: Callable          # (case) -> the exact result on this rank
    ours: Callable            # (case, algorithm) -> what ringflow's verb gives
    theirs: Callable          # (case, torch.distributed) -> what torch's gives; None: unchecked
    root: Callable = lambda m, n: None                  # (m, n) -> the root of a size's cases
    shape: Callable = lambda numel: (numel,)            # of each rank's input


VERBS = {
    "all_reduce": Verb(
        "ar", "all_reduce {op} {dtype} x{m}", with_op=True, shared=True,
        numel=lambda m, n: m, oracle=Case.reduced,
        ours=lambda c, a: on_clone(c, lambda t: rc.all_reduce(t, op=c.rop, group=c.comm,
                                                              algorithm=a)),
        theirs=lambda c, dist: on_clone(c, lambda t: dist.all_reduce(t, op=c.top)),
        shape=lambda numel: (8, 125) if numel == 1000 else (numel,)),   # any shape: flattened
    "reduce_scatter": Verb(
        "rs", "reduce_scatter {op} {dtype} x{m}/rank", with_op=True, shared=False,
        numel=lambda m, n: m * n, oracle=lambda c: c.reduced()[c.r * c.m:(c.r + 1) * c.m],
        ours=lambda c, a: into(c.m, c, lambda out: rc.reduce_scatter_tensor(
            out, c.mine, op=c.rop, group=c.comm, algorithm=a)),
        theirs=rs_theirs),
    "all_gather": Verb(
        "ag", "all_gather {dtype} x{m}/rank", with_op=False, shared=True,
        numel=lambda m, n: m, oracle=lambda c: torch.cat(c.parts),
        ours=lambda c, a: into(c.m * len(c.parts), c, lambda out: rc.all_gather_into_tensor(
            out, c.mine, group=c.comm, algorithm=a)),
        theirs=ag_theirs),
    "broadcast": Verb(
        "bc", "broadcast from {root} {dtype} x{m}", with_op=False, shared=True,
        numel=lambda m, n: m, oracle=lambda c: c.parts[c.root],
        ours=lambda c, a: on_clone(c, lambda t: rc.broadcast(t, src=c.root, group=c.comm,
                                                             algorithm=a)),
        theirs=lambda c, dist: on_clone(c, lambda t: dist.broadcast(t, src=c.root)),
        root=lambda m, n: m % n),                                 # roots vary with the size
    "reduce": Verb(
        "rd", "reduce {op} to {root} {dtype} x{m}", with_op=True, shared=False,
        numel=lambda m, n: m,
        # ringflow leaves non-roots' tensors unchanged; torch leaves them undefined
        oracle=lambda c: c.reduced() if c.r == c.root else c.mine,
        ours=lambda c, a: on_clone(c, lambda t: rc.reduce(t, dst=c.root, op=c.rop, group=c.comm,
                                                          algorithm=a)),
        theirs=reduce_theirs, root=lambda m, n: (m + 1) % n),
}
