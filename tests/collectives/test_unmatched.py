"""No silent divergence, on thread-ranks: collectives that do not match end in an error on every
rank within the timeout, never in another collective's bytes (tests/collectives/unmatched_cases.py)."""
import pytest

from ringflow.collectives.threads import run_ranks
from tests.collectives.unmatched_cases import CASES, run_case

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


@pytest.mark.parametrize("numel", [64, 100_000])
@pytest.mark.parametrize("case", sorted(CASES))
def test_threads(case, numel):
    assert_no_silent_divergence(outcomes(2, case, numel), deadline=T + 2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_threads_two_level(case):
    outs = outcomes(4, case, 1000, algorithm="two_level", local_size=2)
    # two-level runs inside sub-groups, whose messages carry their own tag: a rank of another
    # call never sees them, so it may time out rather than name the mismatch
    assert_no_silent_divergence(outs, deadline=2 * T + 2, mismatch_named=False)


@pytest.mark.parametrize("algorithm", ["ring", "rd", "rhd", "direct", "naive"])
def test_threads_every_algorithm_refuses_a_different_op(algorithm):
    assert_no_silent_divergence(outcomes(3, "op", 999, algorithm), deadline=T + 2)
