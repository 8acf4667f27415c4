"""The fault matrix: every fault of issue 7 injected many times, counted as errors, hangs, data lost.

    python -m tests.stress.fault_matrix --trials 20 --out /tmp/fault_matrix_table.md
    python -m tests.stress.fault_matrix --only dead_gloo,ckpt_kill --trials 5     # a subset

Each trial draws its fault point at random (victim rank, collective number, ring step,
algorithm, checkpoint kill point, ...; seeded, so a run can be repeated) and checks the
contract: the expected error on every surviving rank within timeout + slack, no rank
still running past the harness deadline (a hang), no data lost (a wrong result, an
unloadable previous checkpoint, ranks that disagree). The table goes to stdout and --out.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

from tests.stress import fault_trials as local
from tests.stress import fault_trials_procs as procs
from tests.stress import unmatched_trials as unmatched

FAULTS = {   # name: (what, where, contract, function)
    "dead_local": ("dead peer (vanishes mid-collective)", "local threads, 2-4 ranks, all algorithms",
                   "every survivor raises", local.dead_local),
    "stall_local": ("stalled peer (sleeps past timeout)", "local threads", "every survivor raises",
                    local.stall_local),
    "slow_local": ("slow peer (0.4 x timeout)", "local threads", "same bytes, no error",
                   local.slow_local),
    "mismatch_debug": ("mismatched call, RINGFLOW_DEBUG=1", "local threads",
                       "every rank names field+ranks", local.mismatch_local),
    "mismatch_plain": ("mismatched call, no debug", "local threads", "no hang past timeout",
                       lambda rng: local.mismatch_local(rng, debug=False)),
    "nonfinite": ("NaN/Inf on one rank", "local threads", "all skip the same step",
                  local.nonfinite_local),
    "uneven": ("uneven batches per rank", "local threads", "all stop together", local.uneven_local),
    "ckpt_kill": ("kill -9 during checkpoint save", "forked writer", "previous loads",
                  local.ckpt_kill),
    "ckpt_corrupt": ("truncated / bit-flipped file", "checkpoint", "detected, falls back",
                     local.ckpt_corrupt),
    "dead_gloo": ("kill -9 mid all-reduce", "torch/gloo, bare ranks, all algorithms",
                  "every survivor raises", procs.dead_gloo),
    "stall_gloo": ("stalled peer", "torch/gloo, bare ranks", "every rank raises", procs.stall_gloo),
    "mismatch_gloo": ("mismatched call, RINGFLOW_DEBUG=1", "torch/gloo", "both name the field",
                      procs.mismatch_gloo),
    "dead_shm": ("kill -9 mid all-reduce", "shm, bare ranks, all algorithms",
                 "every survivor raises", procs.dead_shm),
    "mismatch_shm": ("mismatched call, RINGFLOW_DEBUG=1", "shm (fingerprint board)",
                     "both name the field", lambda rng: procs.mismatch_gloo(rng, "shm")),
    "mismatch_mpi": ("mismatched call, RINGFLOW_DEBUG=1", "mpirun, mpi (one node: shared-memory board)",
                     "both name the field", lambda rng: procs.mismatch_gloo(rng, "mpi")),
    "dead_torchrun": ("kill -9 mid all-reduce", "torchrun, gloo", "launcher exits non-zero",
                      procs.dead_torchrun),
    "dead_mpirun": ("kill -9 mid all-reduce", "mpirun, mpi", "launcher exits non-zero",
                    procs.dead_mpirun),
    "unmatched_local": ("unmatched call, no debug (extra, missing, order, verb, op, dtype)",
                        "local threads, 2-3 ranks, all algorithms", "every rank raises, no wrong data",
                        unmatched.unmatched_local),
    "unmatched_shm": ("unmatched call, no debug", "torchrun, shm", "every rank raises, no wrong data",
                      lambda rng: unmatched.unmatched_procs(rng, "shm")),
    "unmatched_gloo": ("unmatched call, no debug", "torchrun, gloo", "every rank raises, no wrong data",
                       lambda rng: unmatched.unmatched_procs(rng, "torch")),
    "unmatched_mpi": ("unmatched call, no debug", "mpirun, mpi", "every rank raises, no wrong data",
                      lambda rng: unmatched.unmatched_procs(rng, "mpi")),
    "restart": ("rank exits mid-training", "torchrun --max-restarts=1, ringflow.train",
                "6 steps, bitwise = uninterrupted", procs.restart),
}


def table(results: dict[str, list[dict]]) -> str:
    head = ("| fault | where | contract | trials | as contracted | errors raised | hangs | "
            "data lost | median s to error |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, trials in results.items():
        what, where, contract, _ = FAULTS[name]
        secs = [t["seconds"] for t in trials if t["seconds"]]
        median = f"{statistics.median(secs):.2f}" if secs else "-"
        counts = " | ".join(str(sum(t[k] for t in trials)) for k in ("ok", "raised", "hang", "lost"))
        rows.append(f"| {what} | {where} | {contract} | {len(trials)} | {counts} | {median} |")
    return head + "\n" + "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--only", default="", help="comma-separated fault names (default: all)")
    p.add_argument("--restart-trials", type=int, default=3,
                   help="trials of 'restart' (each is a whole training run, ~1 min here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="also write the table (markdown) here")
    a = p.parse_args()
    names = [n for n in a.only.split(",") if n] or list(FAULTS)
    rng, results, start = random.Random(a.seed), {}, time.monotonic()
    for name in names:
        t0 = time.monotonic()
        count = a.restart_trials if name == "restart" else a.trials
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
            results[name] = [FAULTS[name][3](rng) for _ in range(count)]  # flight dumps: muted
        good = sum(t["ok"] for t in results[name])
        for t in results[name]:
            if not t["ok"] and t["note"]:
                print(f"  {name} failed trial: {t['note']}", flush=True)
        print(f"{name}: {good}/{count} as contracted ({time.monotonic() - t0:.0f}s)",
              flush=True)
    text = (table(results) + f"\n\n{a.trials} trials per fault ({a.restart_trials} of restart), "
            f"seed {a.seed}, "
            f"{time.monotonic() - start:.0f}s wall; timeouts: threads {local.LOCAL_T}s, processes "
            f"{local.PROC_T}s, slack {local.SLACK}s.\n")
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0 if all(t["ok"] for ts in results.values() for t in ts) else 1


if __name__ == "__main__":
    sys.exit(main())
