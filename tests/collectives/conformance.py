"""The conformance matrix: every collective x algorithm x op x dtype x size, in one group.

Each rank builds every rank's input from a seed, so it knows the exact answer
(the local oracle). Every registered algorithm (``select.available``) is run
and compared bitwise with that answer, with ``algorithm="naive"`` and, when
torch.distributed is initialised, with torch's own collective on the same input.
Inputs are small integers (values in [-8, 8]; products in {-1, 1, 2}), so sums
and products are exact in every dtype up to 4 ranks and any summation order
must give the same bytes; no float tolerance is needed.

The five verbs whose cases are sizes x dtypes x ops are one table, ``VERBS`` in
conformance_cases.py: a row per verb says how its inputs are built, its oracle, ringflow's
call and torch's. Float summation order and all_to_all (per-rank splits) have cases of their
own, so they keep a method each here.

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
from tests.collectives.conformance_cases import (VERBS, Case, Verb, combos, inputs, make,
                                                 reduce_all, sizes)

COLLECTIVES = ("all_reduce", "float_order", "reduce_scatter", "all_gather", "broadcast", "reduce",
               "all_to_all")


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
            if collective in VERBS:
                self.run_verb(collective)
            else:
                getattr(self, collective)()      # cases of their own: float_order, all_to_all
            if collective == "all_reduce":
                self.async_op()
            self.report.seconds[collective] = round(time.monotonic() - start, 1)
        return self.report

    # ---- the table's rows, then cases of their own; every rank runs them in the same order ----
    def _torch(self):
        import torch.distributed as dist
        return dist

    def _each(self, collective: str, label: str, call, want: torch.Tensor, shared: bool) -> None:
        for algo in self.algorithms(collective):
            got = self.run_algo(label, algo, call)
            if got is not None:
                self.check(f"{label} [{algo}]", got, want, shared)

    def run_verb(self, name: str) -> None:
        """Every case of one row of ``VERBS``, in the same order on every rank."""
        verb = VERBS[name]
        for m in sizes(self.n):
            root = verb.root(m, self.n)
            for dtype, op in combos(m, verb.with_op):
                case = self.case(verb, m, dtype, op, root)
                label = verb.label.format(m=m, dtype=dtype, op=op, root=root)
                want = verb.oracle(case)
                self._each(name, label, functools.partial(verb.ours, case), want, verb.shared)
                got = verb.theirs(case, self._torch()) if self.use_torch else None
                if got is not None:
                    self.check(f"{label} [torch]", got, want, shared=False)

    def case(self, verb: Verb, m: int, dtype: torch.dtype, op: str, root: int | None) -> Case:
        key = f"{verb.key}/{m}/{dtype}" + (f"/{op}" if verb.with_op else "")
        numel = verb.numel(m, self.n)
        parts = inputs(key, numel, dtype, op if verb.with_op else "sum", self.n)
        shape = verb.shape(numel)
        return Case(self.comm, key, m, dtype, op, root, tuple(p.view(shape) for p in parts))

    def async_op(self) -> None:
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
