"""Fault trials across processes: forked gloo ranks, torchrun, mpirun, and a training run
restarted by torchrun. Used by tests/stress/fault_matrix.py.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from ringflow.train import checkpoint as ckpt
from tests.faults.procs import launch_bare, reports
from tests.launchers import run_mpirun, run_torchrun
from tests.stress.fault_trials import PROC_T, SLACK, WAITING_ALGOS, ring_steps, trial

WORKER = "tests/faults/faults_worker.py"

# ---- processes: gloo ranks forked bare, and the launchers -------------------------------------
def _proc_env(**extra) -> dict:
    return {"RINGFLOW_TIMEOUT": str(PROC_T), "OMP_NUM_THREADS": "1", **extra}


def _bare(rng, fault: str, n: int, extra: list[str], env: dict, victim: int) -> dict:
    folder = tempfile.mkdtemp(prefix="rf-matrix-")
    args = [WORKER, "--report", folder, "--victim", str(victim), "--fault", fault,
            "--numel", str(rng.choice([1, 100, 4096, 1 << 16])), *extra]
    try:
        outs = launch_bare(n, args, env, timeout=60)
    except AssertionError:
        return trial(False, hang=True)
    rep = reports(Path(folder))
    hit = rep.get(victim, {}).get("time", time.time())
    rest = [r for r in range(n) if r != victim or "stall" in fault]
    named = all(r in rep and rep[r]["status"].startswith("Collective") and "#" in rep[r]["status"]
                for r in rest)
    late = 0.0 if "stall" in fault else max((rep[r]["time"] - hit for r in rest if r in rep),
                                            default=0.0)
    fine = named and late < PROC_T + SLACK and all(outs[r][0] != 0 for r in rest)
    note = "" if fine else f"{' '.join(args[1:])}: " + "; ".join(
        f"rank {r} exit {outs[r][0]}: "
        f"{rep[r]['status'][:200] if r in rep else 'no report: ' + outs[r][1][-600:]}"
        for r in range(n))
    return trial(fine, named, seconds=late, note=note)


def dead_gloo(rng) -> dict:
    n, algo, seq = rng.choice([2, 3]), rng.choice(WAITING_ALGOS + ["native"]), 2 * rng.randrange(3)
    # the ring: any of its steps at _bare's largest size; the others: their first wait
    step = rng.randrange(ring_steps(n, 1 << 16)) if algo == "ring" else 0
    fault = f"killin:{seq}:0:0.001" if algo == "native" else f"kill:{seq}:{step}"
    return _bare(rng, fault, n, ["--algorithm", algo], _proc_env(), rng.randrange(n))


def dead_shm(rng) -> dict:
    """The same kill over shared memory (no native collective there): peers see the pid go."""
    n, algo, seq = rng.choice([2, 3]), rng.choice(WAITING_ALGOS), 2 * rng.randrange(3)
    step = rng.randrange(ring_steps(n, 1 << 16, fused=True)) if algo == "ring" else 0
    return _bare(rng, f"kill:{seq}:{step}", n, ["--algorithm", algo],
                 _proc_env(RINGFLOW_TRANSPORT="shm"), rng.randrange(n))


def stall_gloo(rng) -> dict:
    return _bare(rng, f"stall:{2 * rng.randrange(3)}:0:{PROC_T * 1.6}", 2,
                 ["--algorithm", rng.choice(WAITING_ALGOS)], _proc_env(), rng.randrange(2))


def mismatch_gloo(rng, transport: str = "torch") -> dict:
    field = rng.choice(["numel", "dtype", "op", "collective"])
    folder = tempfile.mkdtemp(prefix="rf-matrix-")
    args = ["--report", folder, "--victim", "1", "--mismatch", field]
    env = _proc_env(RINGFLOW_DEBUG="1", RINGFLOW_TRANSPORT=transport)
    try:
        if transport == "mpi":
            run_mpirun(2, WORKER, *args, env=env, check=False, timeout=120)
        else:
            launch_bare(2, [WORKER, *args], env, timeout=60)
    except AssertionError:
        return trial(False, hang=True)
    rep = reports(Path(folder))
    named = all(rep.get(r, {}).get("status", "").startswith("CollectiveMismatch") and
                f"mismatch in {field}" in rep[r]["status"] for r in (0, 1))
    return trial(named, named)


def _launched(run, rng, n: int, env: dict) -> dict:
    folder = tempfile.mkdtemp(prefix="rf-matrix-")
    start = time.monotonic()
    fault = f"kill:{2 * rng.randrange(3)}:{rng.randrange(ring_steps(n, 1 << 16))}"  # worker's size
    try:
        code, _ = run(n, WORKER, "--report", folder, "--victim", str(rng.randrange(n)),
                      "--fault", fault,
                      env=env, check=False, timeout=120)
    except AssertionError:
        return trial(False, hang=True)
    return trial(code != 0, code != 0, seconds=time.monotonic() - start)


def dead_torchrun(rng) -> dict:
    return _launched(run_torchrun, rng, 2, _proc_env())


def dead_mpirun(rng) -> dict:
    return _launched(run_mpirun, rng, 2, _proc_env(RINGFLOW_TRANSPORT="mpi"))


# ---- restart: ringflow.train under torchrun --max-restarts=1, a rank dies at a random step ----
TINY = ["--preset", "tiny", "--steps", "6"]
_REFERENCE: dict = {}


def _final(out: Path) -> tuple[list, list[int]]:
    folder = ckpt.step_dir(out / "checkpoints", 6)
    weights = [ckpt.read(folder, f) for f in ("model.safetensors", "ema.safetensors")]
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    return weights, steps


def restart(rng) -> dict:
    if not _REFERENCE:
        out = Path(tempfile.mkdtemp(prefix="rf-ref-"))
        run_torchrun(2, "ringflow.train", *TINY, "--out", str(out), timeout=300, extra=("-m",),
                     env=_proc_env())
        _REFERENCE["weights"], _REFERENCE["steps"] = _final(out)
    out, crash = Path(tempfile.mkdtemp(prefix="rf-restart-")), rng.randrange(1, 7)
    start = time.monotonic()
    try:
        code, log = run_torchrun(2, "tests/train/crash_worker.py", *TINY, "--out", str(out),
                                 env=_proc_env(CRASH_AT=str(crash)), check=False, timeout=300,
                                 extra=("--max-restarts=1",))
    except AssertionError:
        return trial(False, hang=True)
    try:
        weights, steps = _final(out)
    except Exception as e:  # noqa: BLE001 - no final checkpoint: the run was lost
        return trial(False, lost=True, note=f"crash at {crash}: {e}; exit {code}: {log[-800:]}")
    same = all(torch.equal(a[k], b[k]) for a, b in zip(weights, _REFERENCE["weights"]) for k in a)
    exact = same and steps == _REFERENCE["steps"] and code == 0
    return trial(exact, lost=not exact, seconds=time.monotonic() - start,
                 note="" if exact else f"crash at {crash}: steps {steps}, bitwise {same}, exit {code}")
