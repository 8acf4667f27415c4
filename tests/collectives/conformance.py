"""The conformance matrix: every collective x algorithm x op x dtype x size, in one group.

Each rank builds every rank's input from a seed, so it knows the exact answer
(the local oracle). Every registered algorithm (``select.available``) is run
and compared bitwise with that answer, with ``algorithm="naive"`` and, when
torch.distributed is initialised, with torch's own collective on the same input.
Inputs are small integers (values in [-8, 8]; products in {-1, 1, 2}), so sums
and products are exact in every dtype up to 4 ranks and any summation order
must give the same bytes; no float tolerance is needed.

Size reduction (time budget): at 2^20+3 elements only float32 (and SUM where
there is an op) runs; every other size runs every dtype and op.

    report = run_matrix(comm, use_torch=dist.is_initialized())
    assert not report.failures, report.summary()
"""
from __future__ import annotations

import dataclasses
import functools
import time
import zlib

import torch

from ringflow import collectives as rc
from ringflow.collectives import select

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16,
          torch.int8, torch.int32, torch.int64, torch.uint8)
OPS = ("sum", "avg", "max", "min", "product")
BIG = (1 << 20) + 3
COLLECTIVES = ("all_reduce", "float_order", "reduce_scatter", "all_gather", "broadcast", "reduce",
               "all_to_all")


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


@dataclasses.dataclass
class Report:
    checks: int = 0
    failures: list = dataclasses.field(default_factory=list)
    skipped: set = dataclasses.field(default_factory=set)
    digest: int = 0                          # crc of results that must match on every rank
    seconds: dict = dataclasses.field(default_factory=dict)   # collective -> wall time

    def summary(self) -> str:
        head = f"{self.checks} checks, {len(self.failures)} failures"
        return "\n".join([head, *self.failures[:20], *sorted(self.skipped)])


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and
            torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


class Matrix:
    """Runs the cases of one group; ``use_torch`` adds torch.distributed as a second reference."""

    def __init__(self, comm, use_torch: bool):
        self.comm, self.n, self.r = comm, comm.size, comm.rank
        self.use_torch = use_torch
        self.report = Report()

    def algorithms(self, collective: str) -> list[str]:
        if collective == "all_to_all":
            return ["pairwise"]
        pick = getattr(select, "available", None)
        return pick(self.comm, collective) if pick else list(select.ALGORITHMS[collective])

    def check(self, label: str, got: torch.Tensor, want: torch.Tensor, shared: bool) -> None:
        self.report.checks += 1
        if not same_bytes(got, want):
            where = ""
            if got.shape == want.shape and got.numel():
                differ = (got.reshape(-1).double() != want.reshape(-1).double()).nonzero()
                where = f", first differing index {int(differ[0])}" if len(differ) else \
                    " (equal values, different bytes: the sign of a zero?)"
            self.report.failures.append(f"rank {self.r}: {label}: got {got.reshape(-1)[:6].tolist()} "
                                        f"want {want.reshape(-1)[:6].tolist()}{where}")
        if shared:
            self.report.digest = zlib.crc32(got.contiguous().view(torch.uint8).numpy().tobytes(),
                                            self.report.digest)

    def run_algo(self, label: str, algo: str, call) -> torch.Tensor | None:
        """Run one algorithm; the documented gaps (MPI has no bfloat16 reduction) are skipped."""
        try:
            return call(algo)
        except TypeError as e:
            if algo == "native" and "bfloat16" in str(e):
                self.report.skipped.add(f"skipped: native {label.split()[0]} bfloat16 ({e})")
                return None
            raise

    def run(self) -> Report:
        for collective in COLLECTIVES:
            start = time.monotonic()
            getattr(self, collective)()
            self.report.seconds[collective] = round(time.monotonic() - start, 1)
        return self.report

    # ---- one method per collective; every rank runs the same cases in the same order ----------
    def _torch(self):
        import torch.distributed as dist
        return dist

    def _ops(self, op: str):
        return getattr(rc.ReduceOp, op.upper()), getattr(self._torch().ReduceOp, op.upper())

    def _each(self, collective: str, label: str, call, want: torch.Tensor, shared: bool) -> None:
        for algo in self.algorithms(collective):
            got = self.run_algo(label, algo, call)
            if got is not None:
                self.check(f"{label} [{algo}]", got, want, shared)

    def all_reduce(self) -> None:
        for numel in sizes(self.n):
            for dtype, op in combos(numel, True):
                key = f"ar/{numel}/{dtype}/{op}"
                shape = (8, 125) if numel == 1000 else (numel,)     # any shape: flattened inside
                parts = [p.view(shape) for p in inputs(key, numel, dtype, op, self.n)]
                want = reduced(key, numel, dtype, op, self.n).view(shape)
                rop, top = self._ops(op)

                def call(algo, x=parts[self.r], rop=rop):
                    t = x.clone()
                    rc.all_reduce(t, op=rop, group=self.comm, algorithm=algo)
                    return t
                label = f"all_reduce {op} {dtype} x{numel}"
                self._each("all_reduce", label, call, want, shared=True)
                if self.use_torch:
                    t = parts[self.r].clone()
                    self._torch().all_reduce(t, op=top)
                    self.check(f"{label} [torch]", t, want, shared=False)
        t = make(self.r, "async", 1000, torch.float32, "sum")      # async_op: same answer
        want = reduce_all([make(k, "async", 1000, torch.float32, "sum") for k in range(self.n)], "sum")
        rc.all_reduce(t, group=self.comm, async_op=True).wait()
        self.check("all_reduce async_op=True", t, want, shared=True)

    def float_order(self) -> None:
        """Non-integer floats: each algorithm must give the same bytes every time and on every
        rank (its order is fixed, not timing's). Against torch, whose summation order differs,
        the tolerance is n roundings of the largest partial sum: n * eps * (n * 4.5), where
        4.5 bounds |x| for these seeded normal samples."""
        for dtype in (torch.float32, torch.bfloat16):
            g = torch.Generator().manual_seed(7 + self.r)
            x = torch.randn(1003, generator=g).to(dtype)
            for algo in self.algorithms("all_reduce"):
                def call(a, x=x):
                    t = x.clone()
                    rc.all_reduce(t, group=self.comm, algorithm=a)
                    return t
                runs = [self.run_algo(f"all_reduce randn {dtype}", algo, call) for _ in range(3)]
                if runs[0] is None:
                    continue
                for k in (1, 2):
                    self.check(f"all_reduce randn {dtype} [{algo}] repeat {k}", runs[k], runs[0],
                               shared=k == 1)
                if self.use_torch:
                    ref = x.clone()
                    self._torch().all_reduce(ref)
                    tol = self.n * torch.finfo(dtype).eps * (self.n * 4.5)
                    err = float((runs[0].double() - ref.double()).abs().max())
                    self.report.checks += 1
                    if err > tol:
                        self.report.failures.append(f"rank {self.r}: all_reduce randn {dtype} "
                                                    f"[{algo}] vs torch: |diff| {err} > {tol}")

    def reduce_scatter(self) -> None:
        for m in sizes(self.n):
            for dtype, op in combos(m, True):
                key = f"rs/{m}/{dtype}/{op}"
                parts = inputs(key, m * self.n, dtype, op, self.n)
                want = reduced(key, m * self.n, dtype, op, self.n)[self.r * m:(self.r + 1) * m]
                rop, top = self._ops(op)

                def call(algo, x=parts[self.r], rop=rop, m=m, dtype=dtype):
                    out = torch.full((m,), 7, dtype=dtype)
                    rc.reduce_scatter_tensor(out, x, op=rop, group=self.comm, algorithm=algo)
                    return out
                label = f"reduce_scatter {op} {dtype} x{m}/rank"
                self._each("reduce_scatter", label, call, want, shared=False)
                if self.use_torch:
                    out = torch.empty(m, dtype=dtype)
                    dist = self._torch()
                    (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)(
                        out, parts[self.r].clone(), op=top)
                    self.check(f"{label} [torch]", out, want, shared=False)

    def all_gather(self) -> None:
        for m in sizes(self.n):
            for dtype, _ in combos(m, False):
                key = f"ag/{m}/{dtype}"
                parts = inputs(key, m, dtype, "sum", self.n)
                want = torch.cat(parts)

                def call(algo, x=parts[self.r], m=m, dtype=dtype):
                    out = torch.full((m * self.n,), 7, dtype=dtype)
                    rc.all_gather_into_tensor(out, x, group=self.comm, algorithm=algo)
                    return out
                label = f"all_gather {dtype} x{m}/rank"
                self._each("all_gather", label, call, want, shared=True)
                if self.use_torch:
                    out = torch.empty(m * self.n, dtype=dtype)
                    dist = self._torch()
                    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(
                        out, parts[self.r])
                    self.check(f"{label} [torch]", out, want, shared=False)

    def broadcast(self) -> None:
        for numel in sizes(self.n):
            root = numel % self.n                                   # roots vary with the size
            for dtype, _ in combos(numel, False):
                key = f"bc/{numel}/{dtype}"
                mine, want = make(self.r, key, numel, dtype, "sum"), make(root, key, numel, dtype, "sum")

                def call(algo, x=mine, root=root):
                    t = x.clone()
                    rc.broadcast(t, src=root, group=self.comm, algorithm=algo)
                    return t
                label = f"broadcast from {root} {dtype} x{numel}"
                self._each("broadcast", label, call, want, shared=True)
                if self.use_torch:
                    t = mine.clone()
                    self._torch().broadcast(t, src=root)
                    self.check(f"{label} [torch]", t, want, shared=False)

    def reduce(self) -> None:
        for numel in sizes(self.n):
            root = (numel + 1) % self.n
            for dtype, op in combos(numel, True):
                key = f"rd/{numel}/{dtype}/{op}"
                parts = inputs(key, numel, dtype, op, self.n)
                # ringflow leaves non-roots' tensors unchanged; torch leaves them undefined
                want = reduced(key, numel, dtype, op, self.n) if self.r == root else parts[self.r]
                rop, top = self._ops(op)

                def call(algo, x=parts[self.r], rop=rop, root=root):
                    t = x.clone()
                    rc.reduce(t, dst=root, op=rop, group=self.comm, algorithm=algo)
                    return t
                label = f"reduce {op} to {root} {dtype} x{numel}"
                self._each("reduce", label, call, want, shared=False)
                if self.use_torch:
                    t = parts[self.r].clone()
                    self._torch().reduce(t, dst=root, op=top)
                    if self.r == root:
                        self.check(f"{label} [torch]", t, want, shared=False)

    def all_to_all(self) -> None:
        n, r = self.n, self.r
        for rows in sorted({0, 1, n + 1, 1000}):
            self._all_to_all_case(f"x{rows}/block", [rows] * n, [[rows] * n for _ in range(n)])
        # uneven: rank i sends (i + 2j) % 3 rows to rank j
        splits = [[(i + 2 * j) % 3 for j in range(n)] for i in range(n)]
        self._all_to_all_case("uneven", splits[r], splits)

    def _all_to_all_case(self, what: str, my_splits: list[int], splits: list[list[int]]) -> None:
        n, r = self.n, self.r
        out_splits = [splits[i][r] for i in range(n)]
        for dtype, _ in combos(0, False):
            key = f"a2a/{what}/{dtype}"
            parts = [make(i, key, sum(splits[i]), dtype, "sum") for i in range(n)]
            want = torch.cat([parts[i][sum(splits[i][:r]):sum(splits[i][:r + 1])] for i in range(n)])

            def call(_algo, x=parts[r], dtype=dtype):
                out = torch.full((sum(out_splits),), 7, dtype=dtype)
                rc.all_to_all_single(out, x, out_splits, my_splits, group=self.comm)
                return out
            label = f"all_to_all_single {what} {dtype}"
            self._each("all_to_all", label, call, want, shared=False)
            if self.use_torch:
                out = torch.empty(sum(out_splits), dtype=dtype)
                self._torch().all_to_all_single(out, parts[r], out_splits, my_splits)
                self.check(f"{label} [torch]", out, want, shared=False)


def run_matrix(comm, use_torch: bool = False) -> Report:
    """Run the whole matrix on ``comm``; a barrier closes it so every rank leaves together."""
    report = Matrix(comm, use_torch).run()
    rc.barrier(group=comm)
    return report
