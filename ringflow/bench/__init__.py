"""``ringflow-bench``: nccl-tests-style bandwidth of ringflow's collectives beside the backend's own.

    torchrun --nproc_per_node=4 -m ringflow.bench -b 1M -e 128M -f 2 --algorithm ring,rhd -c 1
    mpirun -np 4 python -m ringflow.bench --transport mpi -b 4K -e 64K --json out.json
    torchrun --nproc_per_node=2 -m ringflow.bench --tune          # fit the alpha-beta model

Each row prints median time, algbw and busbw (nccl-tests' factors) out of place
and in place, the model's prediction and the busbw ratio to the built-in
collective measured in the same processes; ``--json`` adds p10/p90.
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

from .. import runtime
from ..launch import read_launch_env
from ..collectives import costmodel, select
from . import args as cli
from .cases import BUSBW_FACTOR, REDUCING, ROOTED, case_for
from .measure import MODES, builtin_impl, check_row, ringflow_impl, summarise, time_row
from .report import add_link_share, add_ratios, footer, header, human, line, write_json

__all__ = ["main"]


def algorithms(comm, collective: str, spec: str, dtype) -> list[str]:
    """The ringflow algorithms to run: 'auto', a comma list, or 'all'."""
    if collective not in select.ALGORITHMS:
        return ["p2p" if collective == "sendrecv" else "pairwise"]
    if spec != "all":
        names = [s.strip() for s in spec.split(",") if s.strip()]
        for name in names:
            if name != "auto" and name not in select.available(comm, collective):
                raise SystemExit(f"ringflow-bench: --algorithm {name} is not available for "
                                 f"{collective} here; choose from "
                                 f"{select.available(comm, collective) + ['auto', 'all']}")
        return names
    half = dtype in (torch.float16, torch.bfloat16)
    return [a for a in select.available(comm, collective)
            if a not in ("native", "naive") and (a != "fp32acc" or half)]


def make_row(case, impl, stats: dict, wrongs: dict, model) -> dict:
    factor = BUSBW_FACTOR[case.collective](case.n)
    row = {"collective": case.collective, "size": case.size, "count": case.count,
           "type": cli.TYPE_NAMES[case.dtype],
           "redop": case.op if case.collective in REDUCING else "none",
           "root": case.root if case.collective in ROOTED else -1,
           "label": impl.label, "algorithm": impl.algorithm, "ranks": case.n,
           "pred_us": None}
    for mode in MODES:
        secs = stats.get((impl.label, mode))
        if secs is None:
            row[mode] = None
            continue
        s = summarise(secs)
        s["algbw"] = case.size / (s["time_us"] * 1e-6) / 1e9
        s["busbw"] = s["algbw"] * factor
        s["wrong"] = wrongs.get((impl.label, mode))
        row[mode] = s
    if case.collective in select.ALGORITHMS:
        t = costmodel.predict(model, case.collective, impl.algorithm, case.n, case.size)
        row["pred_us"] = None if t is None else t * 1e6
    return row


def baselines(comm, spec: str) -> list[tuple[str, object]]:
    """(label, transport) of each built-in to compare with: 'auto', 'torch', 'mpi', a list, 'none'."""
    if spec == "none":
        return []
    if spec == "auto":
        if hasattr(comm.transport, "native_all_reduce"):
            return [(f"builtin:{_backend(comm.transport)}", comm.transport)]
        launch = read_launch_env()
        spec = "mpi" if launch.launcher in ("mpirun", "pmi") else "torch"
    out = []
    for kind in spec.split(","):
        tr = comm.transport if kind.strip() == comm.transport.name.split("/")[0] else \
            runtime._make_transport(kind.strip(), read_launch_env(), comm.device, comm.timeout)
        out.append((f"builtin:{_backend(tr)}", tr))
    return out


def _backend(transport) -> str:
    return getattr(transport, "backend", None) or transport.name


def distinct(impls: list) -> list:
    """``impls`` without the named row of the algorithm auto picked: auto's row is that
    algorithm. Timed twice, the second of the pair (always adjacent in the rotation) ran up to
    2x faster here (staged on shm, 4 KiB-64 MiB), which made auto look far from the best."""
    picked = {i.algorithm for i in impls if i.label.startswith("auto:")}
    return [i for i in impls if i.label.startswith("auto:") or i.algorithm not in picked]


def run_rows(comm, a, say) -> list[dict]:
    model = costmodel.load(comm)
    names = algorithms(comm, a.collective, a.algorithm, a.dtype)
    bases = baselines(comm, a.builtin)
    rows = []
    for nbytes in a.sizes:
        case = case_for(a.collective, nbytes, a.dtype, a.op, a.root, comm.size, comm.rank)
        impls = distinct([ringflow_impl(comm, case, name) for name in names])
        impls += [i for i in (builtin_impl(tr, case, label, tr is comm.transport)
                              for label, tr in bases) if i]
        stats = time_row(comm, case, impls, a.iters, a.warmup_iters, comm.device, a.modes)
        wrongs = check_row(comm, case, impls, comm.device, a.modes) if a.check else {}
        size_rows = [make_row(case, impl, stats, wrongs, model) for impl in impls]
        add_ratios(size_rows)
        if a.link_Bps:
            add_link_share(size_rows, a.link_Bps)
        for r in size_rows:
            say(line(r))
        rows += size_rows
    return rows


def meta(comm, a) -> dict:
    model = costmodel.load(comm)
    return {"collective": a.collective, "transport": comm.transport.name, "ranks": comm.size,
            "local_size": comm.local_size, "datatype": a.datatype, "op": a.op, "iters": a.iters,
            "warmup": a.warmup_iters, "check": bool(a.check), "argv": sys.argv,
            "link_rate_Bps": a.link_Bps,
            "model": {"alpha_us": model.alpha * 1e6, "beta_GBps": 1e-9 / model.beta,
                      "gamma_GBps": 1e-9 / model.gamma, "native": model.native,
                      "source": model.source, "probe": model.probe}}


def bench(comm, a, say) -> None:
    """One collective's table, footer and --json/--plot files."""
    m = meta(comm, a)
    say(f"# ringflow-bench {a.collective}: transport {m['transport']}, {comm.size} ranks "
        f"({comm.local_size} per node), {a.datatype} {a.op}, median of {a.iters} iters "
        f"(+{a.warmup_iters} warmup), interleaved with the builtin")
    md = m["model"]
    say(f"# model ({md['source']}): alpha {md['alpha_us']:.1f} us, beta {md['beta_GBps']:.2f} "
        f"GB/s, gamma {md['gamma_GBps']:.2f} GB/s; all_reduce/broadcast/reduce out-of-place "
        "= copy + in-place verb")
    if md["probe"]:
        say("# start-up probe (us, slowest rank's mean): " + "; ".join(
            f"{name} " + ", ".join(f"{t * 1e6:.0f} at {human(b)}" for b, t in pts)
            for name, pts in md["probe"].items()))
    if md["source"] == "default" and "auto" in a.algorithm:
        say("# no tune for this transport and world size: auto chooses from default priors; "
            "run once with --tune (same launcher and ranks) to measure them")
    say(header(bool(a.link_Bps)))
    rows = run_rows(comm, a, say)
    for text in footer(rows):
        say(text)
    if comm.rank == 0 and a.json:
        write_json(a.json, m, rows)
        say(f"# wrote {os.path.abspath(a.json)}")
    if comm.rank == 0 and a.plot:
        from .plot import plot
        plot(rows, a.plot, f"{a.collective} {m['transport']} n={comm.size} {a.datatype}",
             a.link_Bps)
        say(f"# wrote {os.path.abspath(a.plot)}")


def main(argv=None) -> None:
    a = cli.parse(argv)
    # torch renamed reduce_scatter_tensor/all_gather_into_tensor; the built-ins still use them
    warnings.filterwarnings("ignore", message=".*torch.distributed.* is deprecated")
    comm = runtime.init(transport=None if a.transport == "auto" else a.transport, intra=a.intra)
    say = print if comm.rank == 0 else (lambda *_: None)
    try:
        if a.tune:
            from .tune import tune
            tune(comm, a, say)
            return
        for collective in a.collectives:      # one launch, a table per collective
            bench(comm, cli.one(a, collective), say)
    finally:
        runtime.shutdown()
