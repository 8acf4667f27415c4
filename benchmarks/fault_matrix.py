"""The fault matrix: every fault of issue 7 injected many times, counted as errors, hangs, data lost.

    python benchmarks/fault_matrix.py --trials 20 --out benchmarks/results/fault_matrix.md
    python benchmarks/fault_matrix.py --only dead_gloo,ckpt_kill --trials 5     # a subset

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
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ringflow import checkpoint as ckpt  # noqa: E402
from ringflow import collectives as rc  # noqa: E402
from ringflow.collectives import select  # noqa: E402
from ringflow.collectives.communicator import Communicator  # noqa: E402
from ringflow.parallel.guards import all_finite, even_batches  # noqa: E402
from ringflow.transport.local import LocalTransport  # noqa: E402
from tests.faults.local_world import run_world  # noqa: E402
from tests.faults.procs import launch_bare, reports  # noqa: E402
from tests.launchers import run_mpirun, run_torchrun  # noqa: E402
from tests.workers.faults_inject import Fault, inject  # noqa: E402

LOCAL_T, PROC_T, SLACK = 0.5, 2.0, 5.0
WORKER = "tests/workers/faults_worker.py"
ALGOS = [a for a in select.ALGORITHMS["all_reduce"] if a != "native"]


def trial(ok: bool, raised: bool = False, hang: bool = False, lost: bool = False,
          seconds: float = 0.0, note: str = "") -> dict:
    return {"ok": ok, "raised": raised, "hang": hang, "lost": lost, "seconds": seconds,
            "note": note}


# ---- thread-ranks (local transport) ----------------------------------------------------------
def _ring_loop(algorithm: str, fault, victim: int, calls: int = 3, numel: int = 4096):
    def body(comm):
        inject(comm, fault if comm.rank == victim else None)
        out = []
        for _ in range(calls):
            x = torch.arange(numel, dtype=torch.float32) + comm.rank
            rc.all_reduce(x, group=comm, algorithm=algorithm)
            rc.barrier(group=comm)
            out.append(x)
        return out
    return body


def _survivors_raised(outs, skip: int) -> dict:
    try:
        late = max(o.seconds for o in outs if o.rank != skip)
        raised = all(isinstance(o.error, rc.CollectiveError) and "#" in str(o.error)
                     for o in outs if o.rank != skip)
        return trial(raised and late < LOCAL_T + SLACK, raised, hang=late >= LOCAL_T + SLACK,
                     seconds=late)
    except AssertionError:
        return trial(False, hang=True)


def dead_local(rng) -> dict:
    n, algo = rng.choice([2, 3, 4]), rng.choice(ALGOS)
    step = rng.randrange(2 * n - 2) if algo == "ring" else 0     # the ring: any of its steps
    victim, seq = rng.randrange(n), 2 * rng.randrange(3)
    try:
        outs = run_world(n, _ring_loop(algo, Fault("vanish", seq, step), victim), LOCAL_T)
    except AssertionError:
        return trial(False, hang=True)
    if not outs[victim].vanished:
        raise RuntimeError(f"harness: the fault {algo} #{seq} step {step} never fired")
    return _survivors_raised(outs, victim)


def stall_local(rng) -> dict:
    n = rng.choice([2, 3, 4])
    victim = rng.randrange(n)
    fault = Fault("stall", 2 * rng.randrange(3), 0, seconds=LOCAL_T * rng.uniform(2.2, 3))
    try:
        outs = run_world(n, _ring_loop(rng.choice(ALGOS), fault, victim), LOCAL_T)
    except AssertionError:
        return trial(False, hang=True)
    return _survivors_raised(outs, victim)


def slow_local(rng, timeout: float = 2.0) -> dict:
    """One delay of 40 % of the timeout at a random point: nothing may change."""
    n, algo = rng.choice([2, 3, 4]), rng.choice(ALGOS)
    victim, seq = rng.randrange(n), 2 * rng.randrange(3)
    clean = run_world(n, _ring_loop(algo, None, victim), timeout)
    slow = run_world(n, _ring_loop(algo, Fault("stall", seq, 0, seconds=0.4 * timeout), victim),
                     timeout)
    raised = any(o.error is not None for o in clean + slow)
    same = not raised and all(torch.equal(x, y) for a, b in zip(clean, slow)
                              for x, y in zip(a.value, b.value))
    return trial(same, raised, lost=not same, seconds=max(o.seconds for o in slow))


MISMATCH = {
    "collective": lambda c, x: rc.broadcast(x, src=0, group=c),
    "numel": lambda c, x: rc.all_reduce(torch.ones(x.numel() + 1), group=c),
    "dtype": lambda c, x: rc.all_reduce(x.double(), group=c),
    "op": lambda c, x: rc.all_reduce(x, op="max", group=c),
    "root": lambda c, x: rc.broadcast(x, src=c.size - 1, group=c),
}


def mismatch_local(rng, debug: bool = True) -> dict:
    n, field = rng.choice([2, 3, 4]), rng.choice(list(MISMATCH))
    victim = rng.randrange(1, n)

    def body(comm):
        x = torch.ones(64)
        rc.all_reduce(x, group=comm, algorithm="ring")
        if comm.rank == victim:
            MISMATCH[field](comm, x)
        elif field == "root":
            rc.broadcast(x, src=0, group=comm)
        else:
            rc.all_reduce(x, group=comm, algorithm="ring")
        rc.barrier(group=comm)
    try:
        outs = run_world(n, body, LOCAL_T, debug=debug)
    except AssertionError:
        return trial(False, hang=True)
    late = max(o.seconds for o in outs)
    if not debug:                         # contract: no hang past the timeout, whatever happens
        return trial(late < LOCAL_T + SLACK, any(o.error for o in outs),
                     hang=late >= LOCAL_T + SLACK, seconds=late)
    named = all(f"mismatch in {field}" in str(o.error) and f"ranks [{victim}]" in str(o.error)
                for o in outs)
    return trial(named, named, seconds=late)


def nonfinite_local(rng) -> dict:
    n, bad_step = rng.choice([2, 3, 4]), rng.randrange(6)
    bad_rank = rng.randrange(n)
    bad = rng.choice([float("nan"), float("inf"), -float("inf")])

    def body(comm):
        skipped = []
        for step in range(6):
            g = torch.randn(100)
            if comm.rank == bad_rank and step == bad_step:
                g[rng.randrange(100)] = bad
            if not all_finite([g], group=comm):
                skipped.append(step)
        return skipped
    outs = run_world(n, body, LOCAL_T)
    agree = all(o.error is None and o.value == [bad_step] for o in outs)
    return trial(agree, any(o.error for o in outs), lost=not agree)


def uneven_local(rng) -> dict:
    n = rng.choice([2, 3, 4])
    counts = [rng.randrange(0, 8) for _ in range(n)]
    sized = rng.random() < 0.5

    def body(comm):
        mine = [torch.ones(4)] * counts[comm.rank]
        steps = 0
        for b in even_batches(mine if sized else iter(mine), group=comm):
            rc.all_reduce(b.clone(), group=comm)
            steps += 1
        return steps
    try:
        outs = run_world(n, body, LOCAL_T)
    except AssertionError:
        return trial(False, hang=True)
    agree = all(o.error is None and o.value == min(counts) for o in outs)
    return trial(agree, any(o.error for o in outs), lost=not agree,
                 seconds=max(o.seconds for o in outs))


# ---- checkpoints (forked writer killed with SIGKILL) -----------------------------------------
def _files(step: int) -> dict:
    return {"model.safetensors": {"w": torch.full((128, 128), float(step))},
            "optim.pt": {"m": torch.ones(16) * step}, "state.json": {"step": step}}


def _loadable(root, step: int) -> bool:
    try:
        found = ckpt.newest_valid(root)
        return found is not None and float(ckpt.read(found, "model.safetensors")["w"][0, 0]) == step
    except Exception:  # noqa: BLE001 - any failure to load is data lost
        return False


def ckpt_kill(rng) -> dict:
    root = Path(tempfile.mkdtemp(prefix="rf-ckpt-"))
    comm = Communicator(LocalTransport.group(1)[0], timeout=5)
    ckpt.save(root, 1, comm, _files(1))
    writes = rng.randrange(1, 6)          # die in this file write (4: the manifest; 5: at rename)
    pid = os.fork()
    if pid == 0:
        real, count = ckpt.write_synced, [0]

        def write(path, data):
            count[0] += 1
            if count[0] == writes:
                real(path, data[: rng.randrange(len(data))])
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        ckpt.write_synced = write
        ckpt.os.rename = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
        ckpt.save(root, 2, comm, _files(2))
        os._exit(0)
    os.waitpid(pid, 0)
    ok = _loadable(root, 1) and [p.name for p in ckpt.list_steps(root)] == ["step-00000001"]
    return trial(ok, lost=not _loadable(root, 1))


def ckpt_corrupt(rng) -> dict:
    import warnings
    root = Path(tempfile.mkdtemp(prefix="rf-ckpt-"))
    comm = Communicator(LocalTransport.group(1)[0], timeout=5)
    for step in (1, 2):
        ckpt.save(root, step, comm, _files(step))
    victim = rng.choice(["model.safetensors", "optim.pt", "state.json"])
    path = ckpt.step_dir(root, 2) / victim
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        data = data[: rng.randrange(len(data))]                  # truncated
    else:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)  # one flipped bit
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ckpt.verify(ckpt.step_dir(root, 2))
            detected = False
        except ckpt.CheckpointError:
            detected = True
        return trial(detected and _loadable(root, 1), detected, lost=not _loadable(root, 1))


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
    n, algo, seq = rng.choice([2, 3]), rng.choice(ALGOS + ["native"]), 2 * rng.randrange(3)
    step = rng.randrange(2 * n - 2) if algo == "ring" else 0    # others: their first wait
    fault = f"killin:{seq}:0:0.001" if algo == "native" else f"kill:{seq}:{step}"
    return _bare(rng, fault, n, ["--algorithm", algo], _proc_env(), rng.randrange(n))


def stall_gloo(rng) -> dict:
    return _bare(rng, f"stall:{2 * rng.randrange(3)}:0:{PROC_T * 1.6}", 2,
                 ["--algorithm", rng.choice(ALGOS)], _proc_env(), rng.randrange(2))


def mismatch_gloo(rng) -> dict:
    field = rng.choice(["numel", "dtype", "op", "collective"])
    folder = tempfile.mkdtemp(prefix="rf-matrix-")
    try:
        launch_bare(2, [WORKER, "--report", folder, "--victim", "1", "--mismatch", field],
                    _proc_env(RINGFLOW_DEBUG="1"), timeout=60)
    except AssertionError:
        return trial(False, hang=True)
    rep = reports(Path(folder))
    named = all(rep.get(r, {}).get("status", "").startswith("CollectiveMismatch") and
                f"mismatch in {field}" in rep[r]["status"] for r in (0, 1))
    return trial(named, named)


def _launched(run, rng, n: int, env: dict) -> dict:
    folder = tempfile.mkdtemp(prefix="rf-matrix-")
    start = time.monotonic()
    try:
        code, _ = run(n, WORKER, "--report", folder, "--victim", str(rng.randrange(n)),
                      "--fault", f"kill:{2 * rng.randrange(3)}:{rng.choice([0, 1])}",
                      env=env, check=False, timeout=120)
    except AssertionError:
        return trial(False, hang=True)
    return trial(code != 0, code != 0, seconds=time.monotonic() - start)


def dead_torchrun(rng) -> dict:
    return _launched(run_torchrun, rng, 2, _proc_env())


def dead_mpirun(rng) -> dict:
    return _launched(run_mpirun, rng, 2, _proc_env(RINGFLOW_TRANSPORT="mpi"))


FAULTS = {   # name: (what, where, contract, function)
    "dead_local": ("dead peer (vanishes mid-collective)", "local threads, 2-4 ranks, all algorithms",
                   "every survivor raises", dead_local),
    "stall_local": ("stalled peer (sleeps past timeout)", "local threads", "every survivor raises",
                    stall_local),
    "slow_local": ("slow peer (0.4 x timeout)", "local threads", "same bytes, no error",
                   slow_local),
    "mismatch_debug": ("mismatched call, RINGFLOW_DEBUG=1", "local threads",
                       "every rank names field+ranks", mismatch_local),
    "mismatch_plain": ("mismatched call, no debug", "local threads", "no hang past timeout",
                       lambda rng: mismatch_local(rng, debug=False)),
    "nonfinite": ("NaN/Inf on one rank", "local threads", "all skip the same step",
                  nonfinite_local),
    "uneven": ("uneven batches per rank", "local threads", "all stop together", uneven_local),
    "ckpt_kill": ("kill -9 during checkpoint save", "forked writer", "previous loads",
                  ckpt_kill),
    "ckpt_corrupt": ("truncated / bit-flipped file", "checkpoint", "detected, falls back",
                     ckpt_corrupt),
    "dead_gloo": ("kill -9 mid all-reduce", "torch/gloo, bare ranks, all algorithms",
                  "every survivor raises", dead_gloo),
    "stall_gloo": ("stalled peer", "torch/gloo, bare ranks", "every rank raises", stall_gloo),
    "mismatch_gloo": ("mismatched call, RINGFLOW_DEBUG=1", "torch/gloo", "both name the field",
                      mismatch_gloo),
    "dead_torchrun": ("kill -9 mid all-reduce", "torchrun, gloo", "launcher exits non-zero",
                      dead_torchrun),
    "dead_mpirun": ("kill -9 mid all-reduce", "mpirun, mpi", "launcher exits non-zero",
                    dead_mpirun),
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="also write the table (markdown) here")
    a = p.parse_args()
    names = [n for n in a.only.split(",") if n] or list(FAULTS)
    rng, results, start = random.Random(a.seed), {}, time.monotonic()
    for name in names:
        t0 = time.monotonic()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
            results[name] = [FAULTS[name][3](rng) for _ in range(a.trials)]  # flight dumps: muted
        good = sum(t["ok"] for t in results[name])
        for t in results[name]:
            if not t["ok"] and t["note"]:
                print(f"  {name} failed trial: {t['note']}", flush=True)
        print(f"{name}: {good}/{a.trials} as contracted ({time.monotonic() - t0:.0f}s)",
              flush=True)
    text = (table(results) + f"\n\n{a.trials} trials per fault, seed {a.seed}, "
            f"{time.monotonic() - start:.0f}s wall; timeouts: threads {LOCAL_T}s, processes "
            f"{PROC_T}s, slack {SLACK}s.\n")
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0 if all(t["ok"] for ts in results.values() for t in ts) else 1


if __name__ == "__main__":
    sys.exit(main())
