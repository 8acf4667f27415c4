"""No silent divergence, on thread-ranks: collectives that do not match end in an error on every
rank within the timeout, never in another collective's bytes (tests/collectives/unmatched_cases.py).
The shared-memory transport runs here too, its ranks as threads over real /dev/shm rings."""
import threading
import time

import pytest
import torch
import torch.distributed as dist

from ringflow import collectives as rc
from ringflow.collectives import Communicator
from ringflow.collectives.threads import run_ranks
from ringflow.transport.shm import ShmTransport
from tests.collectives.unmatched_cases import CASES, DTYPES, run_case

T = 3.0
pytestmark = pytest.mark.timeout(60)


def outcomes(size: int, case: str, numel: int, algorithm: str = "auto", **comm_kwargs) -> list:
    def fn(comm):
        out = run_case(case, comm, numel, algorithm)
        if out["error"]:                         # as a process would exit: peers see it gone
            comm.transport.mark_failed(out["error"])
        return out
    return run_ranks(size, fn, timeout=T, **comm_kwargs)


def assert_no_silent_divergence(outs: list, deadline: float, mismatch_named: bool = True) -> None:
    for o in outs:
        assert not o["wrong"], f"rank {o['rank']} returned wrong data: {o}"
        assert o["error"], f"rank {o['rank']} finished as if nothing were wrong: {o}"
        assert o["seconds"] < deadline, o
    if not mismatch_named:
        return
    mismatch = [o for o in outs if o["error"] == "CollectiveMismatch"]
    assert mismatch, [o["message"][:300] for o in outs]
    # the receiving rank names both calls: its own and the one the message came from
    text = mismatch[0]["message"]
    assert "this rank" in text and "rank" in text and "#" in text, text


def assert_dtypes_named(outs: list, case: str) -> None:
    """A dtype mismatch is reported as one: every rank's error (timeouts aside, which see no
    message) names both dtypes, never only "different sizes" (as staged rounds used to)."""
    for o in outs:
        if case in DTYPES and o["error"] != "CollectiveTimeout":
            for dtype in DTYPES[case]:
                assert dtype in o["message"], f"rank {o['rank']} does not name {dtype}: {o}"


@pytest.mark.parametrize("numel", [64, 100_000])
@pytest.mark.parametrize("case", sorted(CASES))
def test_threads(case, numel):
    outs = outcomes(2, case, numel)
    assert_no_silent_divergence(outs, deadline=T + 2)
    assert_dtypes_named(outs, case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_threads_two_level(case):
    outs = outcomes(4, case, 1000, algorithm="two_level", local_size=2)
    # two-level runs inside sub-groups, whose messages carry their own tag: a rank of another
    # call never sees them, so it may time out rather than name the mismatch
    assert_no_silent_divergence(outs, deadline=2 * T + 2, mismatch_named=False)


@pytest.mark.parametrize("algorithm", ["ring", "rd", "rhd", "direct", "naive"])
def test_threads_every_algorithm_refuses_a_different_op(algorithm):
    assert_no_silent_divergence(outcomes(3, "op", 999, algorithm), deadline=T + 2)


def shm_outcomes(size: int, fn) -> list:
    """``fn(comm)`` on ``size`` thread-ranks over in-process ShmTransports; each rank's
    outcome as run_case gives it (a failed rank closes its transport, as an exiting process)."""
    store, outs = dist.HashStore(), [None] * size

    def body(r: int) -> None:
        tr = ShmTransport(r, size, store=store, timeout=T)
        comm = Communicator(tr, timeout=T)
        out = {"rank": r, "error": None, "message": "", "wrong": [], "start": time.monotonic()}
        try:
            fn(comm)
        except rc.CollectiveError as e:
            out["error"], out["message"] = type(e).__name__, str(e)
        finally:
            out["seconds"] = time.monotonic() - out.pop("start")
            outs[r] = out
            comm.close()
            tr.close()

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(3 * T)
    assert all(o is not None for o in outs), f"a rank hangs: {outs}"
    return outs


@pytest.mark.parametrize("case", ["op", "dtype", "width"])
def test_shm_ring_reduce_scatter_refuses_another_call(case):
    """The ring's reduce-scatter on shm reduces as it receives: those receives must carry the
    call's stamp too (they went to the transport directly, so SUM against MAX, or float32
    against int32, used to finish silently with different bytes on each rank)."""
    def fn(comm):
        odd = comm.rank == 1
        dtype = {"dtype": torch.int32, "width": torch.float64}.get(case) if odd else None
        inp = torch.full((2000,), comm.rank + 1, dtype=dtype or torch.float32)
        op = rc.ReduceOp.MAX if odd and case == "op" else rc.ReduceOp.SUM
        rc.reduce_scatter_tensor(torch.empty(1000, dtype=inp.dtype), inp, op=op, group=comm,
                                 algorithm="ring")

    outs = shm_outcomes(2, fn)
    assert_no_silent_divergence(outs, deadline=T + 2)
    assert_dtypes_named(outs, case)
