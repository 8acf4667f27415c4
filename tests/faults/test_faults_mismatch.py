"""Ranks that call different collectives: named on every rank with RINGFLOW_DEBUG, no hang without."""
from __future__ import annotations

import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives.threads import run_ranks

T = 1.0

# field -> what rank 1 does differently (every other rank calls all_reduce(ones(12), SUM))
DIFFERENT = {
    "collective": lambda comm, x: rc.broadcast(x, src=0, group=comm),
    "numel": lambda comm, x: rc.all_reduce(torch.ones(13), group=comm),
    "dtype": lambda comm, x: rc.all_reduce(x.double(), group=comm),
    "op": lambda comm, x: rc.all_reduce(x, op=rc.ReduceOp.MAX, group=comm),
}


def _body(field: str, algorithm: str = "auto"):
    def body(comm):
        x = torch.ones(12)
        rc.all_reduce(x, group=comm, algorithm=algorithm)             # #0 agrees
        if comm.rank == 1:
            DIFFERENT[field](comm, x)
        else:
            rc.all_reduce(x, group=comm, algorithm=algorithm)         # #1 differs on rank 1
        rc.barrier(group=comm)
        return x
    return body


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field", list(DIFFERENT))
def test_debug_names_first_differing_field_and_ranks_on_every_rank(field):
    outs = run_ranks(3, _body(field), timeout=T, debug=True, outcomes=True)
    for o in outs:
        assert isinstance(o.error, rc.CollectiveMismatch), (o.rank, o.error)
        msg = str(o.error)
        assert f"collective #1 mismatch in {field}:" in msg and "ranks [1] have" in msg, msg
        assert "ranks [0, 2] have" in msg, msg
        assert o.seconds < 0.5 * T, "a mismatch must be found at once, not after a timeout"


@pytest.mark.timeout(60)
def test_debug_names_a_different_root():
    def body(comm):
        x = torch.ones(8)
        rc.broadcast(x, src=2 if comm.rank == 0 else 0, group=comm)
    outs = run_ranks(3, body, timeout=T, debug=True, outcomes=True)
    for o in outs:
        assert "mismatch in root: ranks [0] have 2; ranks [1, 2] have 0" in str(o.error), o.error


@pytest.mark.timeout(60)
def test_debug_catches_a_call_skipped_by_one_rank():
    """Rank 2 skips the all_reduce: its barrier meets the others' all_reduce."""
    def body(comm):
        if comm.rank != 2:
            rc.all_reduce(torch.ones(4), group=comm)
        rc.barrier(group=comm)
    outs = run_ranks(3, body, timeout=T, debug=True, outcomes=True)
    for o in outs:
        assert isinstance(o.error, rc.CollectiveMismatch), o.error
        assert "mismatch in collective" in str(o.error) and "ranks [2] have barrier" in str(o.error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algorithm", ["ring", "two_level", "rd"])
def test_debug_agrees_with_matching_calls_across_algorithms(algorithm):
    """The check adds no error and changes no byte when every rank agrees."""
    def body(comm):
        x = torch.arange(1000, dtype=torch.float32) * (comm.rank + 1)
        for _ in range(3):
            rc.all_reduce(x, group=comm, algorithm=algorithm)
        out = torch.empty(1000 * comm.size)
        rc.all_gather_into_tensor(out, x, group=comm)
        rc.broadcast(out, src=1, group=comm)
        return out
    plain = run_ranks(3, body, timeout=T, outcomes=True)
    checked = run_ranks(3, body, timeout=T, debug=True, outcomes=True)
    for a, b in zip(plain, checked):
        assert a.error is None and b.error is None, (a.error, b.error)
        assert torch.equal(a.value, b.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field", list(DIFFERENT))
def test_without_debug_a_mismatch_never_hangs_past_the_timeout(field):
    outs = run_ranks(3, _body(field, algorithm="ring"), timeout=T, debug=False, outcomes=True)
    for o in outs:
        assert o.seconds < T + 2.0, (o.rank, o.seconds)
    # Different ops cannot be seen without fingerprints; anything that changes the messages can.
    if field != "op":
        assert any(isinstance(o.error, rc.CollectiveError) for o in outs), [o.error for o in outs]


def test_debug_check_survives_a_job_that_calls_verbs_on_its_own_group():
    # A compressed-gradient job runs a verb inside comm.run; with RINGFLOW_DEBUG the outer call's
    # fingerprint exchange must still complete, and the flight recorder must keep the outer call.
    import torch
    from ringflow import collectives as rc
    from ringflow.collectives.threads import run_ranks

    def body(comm):
        t = torch.full((1000,), float(comm.rank + 1))
        seen = []

        def job():
            rc.all_reduce(t, group=comm)
            seen.append(comm.current.name)
        comm.run("outer_job", job, tensor=t)
        rc.all_reduce(t, group=comm)               # the group still works afterwards
        return t, seen

    for t, seen in run_ranks(2, body, timeout=10, debug=True):
        assert torch.equal(t, torch.full((1000,), 6.0))
        assert seen == ["outer_job"]
