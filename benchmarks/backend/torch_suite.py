"""torch's own distributed test suite (torch/testing/_internal/distributed/distributed_test.py,
shipped in the wheel) against backend "ringflow" and against gloo, counted.

    python benchmarks/backend/torch_suite.py --backend ringflow -k "all_reduce or broadcast"
    python benchmarks/backend/torch_suite.py --both --out benchmarks/results/torch_suite.md
    python benchmarks/backend/torch_suite.py --backend gloo -k cpu --log /tmp/gloo.log  # all CPU tests

The suite is driven as torch's test_distributed_spawn.py drives it (BACKEND, WORLD_SIZE,
TEMP_DIR; one spawned process per rank per test). Its feature tables list gloo, nccl and ucc by
name; ringflow is entered in the CPU ones gloo is in (ddp, subgroup), never in gpu/cuda, so the
same CPU tests run on both. Counts come from pytest's summary of the same selection.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(backend: str, select: str, world: int, per_test: int, budget: int,
        log: str | None, start: str = "spawn") -> tuple[dict, float]:
    """Run the selection on ``backend``; ({passed, failed, skipped, ...}, seconds)."""
    env = dict(os.environ, BACKEND=backend, WORLD_SIZE=str(world), SUITE_START=start,
               TEMP_DIR=tempfile.mkdtemp(prefix="ringflow_suite_"),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", RINGFLOW_TIMEOUT="60")
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "addopts=",
           f"--timeout={per_test}", "-rfEs", str(Path(__file__).with_name("suite_case.py"))]
    if select:
        cmd += ["-k", select]
    out = Path(log or tempfile.mkstemp(prefix="ringflow_suite_", suffix=".log")[1])
    t0 = time.monotonic()
    with open(out, "w") as f:             # written as it runs: a run past --budget keeps its log
        try:
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                           timeout=budget)
        except subprocess.TimeoutExpired:
            f.write(f"\nstopped after --budget {budget} s\n")
    took = time.monotonic() - t0
    tail = [line for line in out.read_text().splitlines() if line.strip()]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)",
                                               tail[-1] if tail else "")}
    counts["budget"] = bool(tail) and tail[-1].startswith("stopped after")
    counts["failures"] = [line.split(" ", 1)[1].split(" - ")[0] for line in tail
                          if line.startswith(("FAILED", "ERROR"))]
    return counts, took


# The verbs the backend implements, on CPU, without the variants that repeat a verb on the full
# group, the CUDA/NCCL ones (skipped on both) and the profiler/timeout/monitored ones.
DEFAULT_SELECT = ("(all_reduce or broadcast or reduce or all_gather or gather or scatter or barrier "
                  "or send_recv or isend or irecv or batch_isend_irecv or all_to_all or "
                  "new_subgroups) and not cuda and not nccl and not profiler and not ddp and not "
                  "monitored and not sparse and not accumulate and not skip_all_reduce and not "
                  "timeout and not coalesced_group and not coalesced_full and not full_group")


# Every test that applies to a CPU backend: the whole file less the tests named for CUDA, NCCL or
# GPUs (they skip on any CPU backend, gloo included; 45 of the 285).
CPU_SELECT = "not cuda and not nccl and not gpu"
SELECTIONS = {"cpu": CPU_SELECT, "verbs": DEFAULT_SELECT}


def _need_expecttest() -> None:
    try:
        import expecttest  # noqa: F401 - torch's test utilities import it
    except ImportError:
        raise SystemExit("torch's test suite needs expecttest: pip install -e '.[torchsuite]' "
                         "(or make torchsuite)") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="ringflow")
    ap.add_argument("--both", action="store_true", help="ringflow and gloo, one after the other")
    ap.add_argument("-k", dest="select", default=DEFAULT_SELECT,
                    help="pytest -k expression over test names, or 'cpu' (every test that applies "
                         "to a CPU backend) or 'verbs' (the default); '' for the whole suite")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--per-test", type=int, default=120, help="seconds before a test fails")
    ap.add_argument("--budget", type=int, default=3600, help="seconds for each backend's run")
    ap.add_argument("--start", choices=("spawn", "fork"), default="spawn",
                    help="how each test's ranks start: spawn (torch's test_distributed_spawn.py) "
                         "or fork (about 10x faster here: no rank re-imports torch and the suite)")
    ap.add_argument("--out", default=None, help="append a markdown table here")
    ap.add_argument("--log", default=None, help="write pytest's output here ({backend} is replaced)")
    args = ap.parse_args()
    _need_expecttest()
    args.select = SELECTIONS.get(args.select, args.select)
    rows = []
    for backend in (["ringflow", "gloo"] if args.both else [args.backend]):
        log = args.log.replace("{backend}", backend) if args.log else None
        counts, took = run(backend, args.select, args.world, args.per_test, args.budget, log,
                           args.start)
        rows.append(f"| {backend} | {counts.get('passed', 0)} | {counts.get('failed', 0)} | "
                    f"{counts.get('skipped', 0)} | {counts.get('error', 0) + counts.get('errors', 0)}"
                    f" | {took:.0f} | {', '.join(counts['failures']) or '-'} |")
        print(rows[-1], flush=True)
    text = "\n".join([f"torch {__import__('torch').__version__} distributed_test.py, world "
                      f"{args.world}, selection -k {args.select!r}",
                      "", "| backend | passed | failed | skipped | errors | seconds | failed tests |",
                      "|---|---|---|---|---|---|---|", *rows, ""])
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
