"""Fault trials on thread-ranks and on checkpoint files: each draws its fault at random and
returns one result row (see ``trial``). Used by tests/stress/fault_matrix.py.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import torch

from ringflow import collectives as rc
from ringflow.collectives import ring, select
from ringflow.collectives.communicator import Communicator
from ringflow.parallel.guards import all_finite, even_batches
from ringflow.train import checkpoint as ckpt
from ringflow.transport.local import LocalTransport
from ringflow.collectives.threads import run_ranks
from tests.faults.inject import Fault, inject

LOCAL_T, PROC_T, SLACK = 0.5, 2.0, 5.0
ALGOS = [a for a in select.ALGORITHMS["all_reduce"] if a != "native"]
# The algorithms a fault set at a wait can always reach. Not staged: it skips a wait when its peers
# are already there, so the fault may never come (a watcher's kill comes after small calls are
# over), and the local transport refuses it; its dead peers: tests/collectives/test_shm_dead_peer.py.
WAITING_ALGOS = [a for a in ALGOS if a != "staged"]


def ring_steps(n: int, numel: int, fused: bool = False) -> int:
    """The ring steps an all-reduce of ``numel`` float32 waits at: two ranks up to
    PAIR_EXCHANGE_BYTES make one exchange (ring.py), except over shared memory (``fused``:
    it reduces on arrival and keeps the ring's steps)."""
    if n == 2 and not fused and numel * 4 <= ring.PAIR_EXCHANGE_BYTES:
        return 1
    return 2 * n - 2


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
    n, algo = rng.choice([2, 3, 4]), rng.choice(WAITING_ALGOS)
    step = rng.randrange(ring_steps(n, 4096)) if algo == "ring" else 0   # the ring: any step
    victim, seq = rng.randrange(n), 2 * rng.randrange(3)
    try:
        outs = run_ranks(n, _ring_loop(algo, Fault("vanish", seq, step), victim), LOCAL_T,
                         outcomes=True)
    except TimeoutError:
        return trial(False, hang=True)
    if not outs[victim].vanished:
        raise RuntimeError(f"harness: the fault {algo} #{seq} step {step} never fired")
    return _survivors_raised(outs, victim)


def stall_local(rng) -> dict:
    n = rng.choice([2, 3, 4])
    victim = rng.randrange(n)
    fault = Fault("stall", 2 * rng.randrange(3), 0, seconds=LOCAL_T * rng.uniform(2.2, 3))
    try:
        outs = run_ranks(n, _ring_loop(rng.choice(WAITING_ALGOS), fault, victim), LOCAL_T,
                         outcomes=True)
    except TimeoutError:
        return trial(False, hang=True)
    return _survivors_raised(outs, victim)


def slow_local(rng, timeout: float = 2.0) -> dict:
    """One delay of 40 % of the timeout at a random point: nothing may change."""
    n, algo = rng.choice([2, 3, 4]), rng.choice(WAITING_ALGOS)
    victim, seq = rng.randrange(n), 2 * rng.randrange(3)
    clean = run_ranks(n, _ring_loop(algo, None, victim), timeout, outcomes=True)
    slow = run_ranks(n, _ring_loop(algo, Fault("stall", seq, 0, seconds=0.4 * timeout), victim),
                     timeout, outcomes=True)
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
        outs = run_ranks(n, body, LOCAL_T, debug=debug, outcomes=True)
    except TimeoutError:
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
    outs = run_ranks(n, body, LOCAL_T, outcomes=True)
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
        outs = run_ranks(n, body, LOCAL_T, outcomes=True)
    except TimeoutError:
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
