"""``ringflow-bench --tune``: fit the alpha-beta model on this machine and cache it.

alpha and beta come from a ring step (every rank sends to its right neighbour
and receives from its left, the pattern of every algorithm here), gamma from
reducing two local buffers, and one line a + b*size per built-in collective; then
every algorithm auto may pick is timed at every tune size, and predictions go
through those points (costmodel).
Times are medians, maxed over ranks, so every rank fits the same numbers and
every node writes the same file (the selector's choice must agree everywhere).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..collectives import costmodel, select
from ..collectives.ops import ReduceOp, reduce_out
from .cases import Case
from .measure import Impl, builtin_impl, ringflow_impl, time_row
from .report import human

NATIVE = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce")


def _sizes(a) -> list[int]:
    if a.minbytes == a.maxbytes:                   # flags left at their defaults: a sensible sweep
        return [4 << 10 << (2 * i) for i in range(7)]   # 4 KiB .. 16 MiB
    return a.sizes


def _case(comm, collective: str, nbytes: int) -> Case:
    per = comm.size if collective in ("reduce_scatter", "all_gather") else 1
    return Case(collective, max(1, nbytes // 4 // per), torch.float32, "sum", 0, comm.size, comm.rank)


def _median(comm, case: Case, impl: Impl, a) -> float:
    """Median seconds of ``impl`` in place (out of place where it has no in-place form)."""
    secs = time_row(comm, case, [impl], a.iters, a.warmup_iters, comm.device)
    return float(np.median(secs.get((impl.label, "ip"), secs.get((impl.label, "oop")))))


def fit_link(comm, sizes, a) -> tuple[float, float]:
    """alpha, beta from ring steps of ``sizes`` bytes."""
    times = [_median(comm, _case(comm, "sendrecv", s), ringflow_impl(
        comm, _case(comm, "sendrecv", s), "p2p"), a) for s in sizes]
    return costmodel.fit_line(sizes, times)


def fit_gamma(sizes, device, reps: int = 5) -> float:
    """Seconds per byte of an in-place reduction (the slope; the intercept is Python's)."""
    times = []
    for s in sizes:
        x, y = torch.ones(s // 4, device=device), torch.ones(s // 4, device=device)
        best = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reduce_out(x, x, y, ReduceOp.SUM)
            best.append(time.perf_counter() - t0)
        times.append(float(np.median(best)))
    return costmodel.fit_line(sizes, times)[1]


def fit_native(comm, sizes, a) -> dict:
    out = {}
    for coll in NATIVE:
        impl = builtin_impl(comm.transport, _case(comm, coll, sizes[0]))
        if impl is None:
            continue
        times = [_median(comm, _case(comm, coll, s), impl, a) for s in sizes]
        out[coll] = list(costmodel.fit_line([_case(comm, coll, s).size for s in sizes], times))
    return out


def measure_candidates(comm, sizes, a) -> dict:
    """{"collective/alg": [[bytes, seconds], ...]} for every algorithm auto may pick, timed
    side by side (one row per size, interleaved) so that the points compare like with like."""
    out = {}
    for coll in select.ALGORITHMS:
        names = [n for n in select.available(comm, coll) if n not in select.NEVER_AUTO]
        for s in sizes:
            case = _case(comm, coll, s)
            impls = [builtin_impl(comm.transport, case) if n == "native" else
                     ringflow_impl(comm, case, n) for n in names]
            impls = [i for i in impls if i is not None]
            secs = time_row(comm, case, impls, a.iters, a.warmup_iters, comm.device)
            for impl in impls:
                t = secs.get((impl.label, "ip"), secs.get((impl.label, "oop")))
                out.setdefault(f"{coll}/{impl.algorithm}", []).append([case.size, float(np.median(t))])
    return out


def tune(comm, a, say) -> costmodel.Model:
    """Measure, fit, write the cache on every node, print the model and the choices it implies."""
    sizes = _sizes(a)
    say(f"# tuning {comm.transport.name}, {comm.size} ranks: sizes {[human(s) for s in sizes]}")
    alpha, beta = fit_link(comm, sizes, a)
    gamma = fit_gamma([s for s in sizes if s >= 1 << 20] or sizes[-2:], comm.device)
    model = costmodel.Model(alpha, beta, gamma, fit_native(comm, sizes, a),
                            measure_candidates(comm, sizes, a), comm.local_size,
                            comm.slice_bytes or 0)
    path = costmodel.cache_path(costmodel.kind(comm.transport), comm.size, comm.local_size)
    if comm.local_rank == 0:
        costmodel.save(dataclasses.replace(model, source="tune"), path)
    costmodel.forget()
    say(f"# wrote {path}")
    say(f"# alpha {alpha * 1e6:.1f} us, beta {1e-9 / beta:.2f} GB/s, gamma {1e-9 / gamma:.2f} GB/s")
    for coll, (ca, cb) in model.native.items():
        say(f"# builtin {coll}: {ca * 1e6:.1f} us + size / {1e-9 / cb:.2f} GB/s")
    _show_choices(comm, say)
    return model


def _show_choices(comm, say) -> None:
    say("# auto's choice per size (predicted us of each candidate)")
    for coll in select.ALGORITHMS:
        for s in [1 << k for k in range(10, 28, 3)]:
            ranked = select.ranked(comm, coll, s)
            say(f"#   {coll:<15} {human(s):>8}: " + ", ".join(f"{n} {t * 1e6:.0f}" for n, t in ranked))
