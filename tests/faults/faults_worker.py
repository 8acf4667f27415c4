"""A rank that runs a loop of collectives and may suffer one injected fault (see inject.py).

    torchrun --nproc_per_node=3 tests/faults/faults_worker.py --fault kill:2:1 --victim 1 \
        --collective all_reduce --algorithm ring --report /tmp/r

Each rank writes <report>/rank<R>.json: how it ended (ok, or the error's type and text) and
when (wall clock, so the test can compare it with the moment the victim was hit).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import ringflow  # noqa: E402
from ringflow import collectives as rc  # noqa: E402
from tests.faults.inject import inject, parse  # noqa: E402


def call(comm, collective: str, algorithm: str, numel: int, mismatch: str = "") -> torch.Tensor:
    x = torch.arange(numel + (mismatch == "numel"), dtype=torch.float32) + comm.rank
    x = x.double() if mismatch == "dtype" else x
    if mismatch == "collective":
        collective = "broadcast" if collective != "broadcast" else "all_reduce"
        algorithm = "auto"
    if collective == "all_reduce":
        rc.all_reduce(x, op="max" if mismatch == "op" else "sum", algorithm=algorithm)
    elif collective == "broadcast":
        rc.broadcast(x, src=0, algorithm=algorithm)
    elif collective == "reduce_scatter":
        out = torch.empty(numel // comm.size)
        rc.reduce_scatter_tensor(out, x[: out.numel() * comm.size], algorithm=algorithm)
        return out
    elif collective == "all_gather":
        out = torch.empty(numel * comm.size)
        rc.all_gather_into_tensor(out, x, algorithm=algorithm)
        return out
    else:
        raise SystemExit(f"unknown collective {collective}")
    return x


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--fault", default="none")
    p.add_argument("--victim", type=int, default=1)
    p.add_argument("--collective", default="all_reduce")
    p.add_argument("--algorithm", default="ring")
    p.add_argument("--numel", type=int, default=1 << 16)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--mismatch", default="", help="the victim's 2nd call differs in this field")
    p.add_argument("--report", required=True)
    a = p.parse_args()
    comm = ringflow.init()
    fault = parse(a.fault) if comm.rank == a.victim else None
    if fault is not None and fault.kind == "kill":
        fire = fault.fire
        fault.fire = lambda: (_write(a.report, comm.rank, "killed"), fire())
    inject(comm, fault)
    status, code, checksum = "ok", 0, 0.0
    try:
        for i in range(a.calls):
            odd = a.mismatch if (i == 1 and comm.rank == a.victim) else ""
            checksum += float(call(comm, a.collective, a.algorithm, a.numel, odd).sum())
            rc.barrier()
    except rc.CollectiveError as e:
        status, code = f"{type(e).__name__}: {e}", 1
        print(status, file=sys.stderr, flush=True)
    _write(a.report, comm.rank, status, checksum=checksum)
    if code == 0:
        ringflow.shutdown()
    os._exit(code)      # after a failure the transport cannot shut down cleanly; leave now


def _write(folder: str, rank: int, status: str, **extra) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "status": status, "time": time.time(), **extra}))


if __name__ == "__main__":
    sys.exit(main())
