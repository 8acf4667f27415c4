"""Fault-matrix trials of unmatched collectives (issue 13): one rank calls something else; every
rank must end in an error within the timeout, none may return another call's bytes.

Each trial draws a case of tests/collectives/unmatched_cases.py (extra, missing, reordered call;
another verb, op or dtype), a size and, on threads, an algorithm.
"""
from __future__ import annotations

import time

from ringflow.collectives.threads import run_ranks
from tests.collectives.unmatched_cases import CASES, results_in, run_case
from tests.launchers import run_mpirun, run_torchrun
from tests.stress.fault_trials import LOCAL_T, PROC_T, SLACK, trial

SIZES = (64, 1000, 100_000)
ALGOS = ("auto", "ring", "rd", "rhd", "direct", "naive")
WORKER = "tests/collectives/unmatched_worker.py"


def _judge(outs: list[dict], timeout: float, note: str) -> dict:
    wrong = [o["rank"] for o in outs if o["wrong"]]
    silent = [o["rank"] for o in outs if not o["error"]]
    late = max(o["seconds"] for o in outs)
    ok = not wrong and not silent and late < timeout + SLACK
    return trial(ok, raised=not silent, hang=late >= timeout + SLACK, lost=bool(wrong),
                 seconds=late, note="" if ok else f"{note}: wrong {wrong}, silent {silent}")


def unmatched_local(rng) -> dict:
    case, numel, algo = rng.choice(sorted(CASES)), rng.choice(SIZES), rng.choice(ALGOS)
    n = rng.choice([2, 3])

    def fn(comm):
        out = run_case(case, comm, numel, algo)
        if out["error"]:
            comm.transport.mark_failed(out["error"])     # as a process would: peers see it go
        return out
    return _judge(run_ranks(n, fn, timeout=LOCAL_T), LOCAL_T, f"{case} {numel} {algo} n={n}")


def unmatched_procs(rng, transport: str) -> dict:
    case, numel = rng.choice(sorted(CASES)), rng.choice(SIZES)
    env = {"RINGFLOW_TIMEOUT": str(PROC_T)}
    start = time.monotonic()
    try:
        if transport == "mpi":
            _, out = run_mpirun(2, WORKER, case, str(numel), env=env, timeout=60)
        else:
            env["RINGFLOW_TRANSPORT"] = transport
            _, out = run_torchrun(2, WORKER, case, str(numel), env=env, timeout=60)
    except AssertionError as e:                           # the launcher's timeout: a hang
        return trial(False, hang=True, seconds=time.monotonic() - start, note=str(e)[:200])
    outs = results_in(out)
    if len(outs) != 2:
        return trial(False, note=f"{case} {numel}: {len(outs)} ranks reported")
    return _judge(outs, PROC_T, f"{case} {numel} {transport}")
