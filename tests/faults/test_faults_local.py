"""Dead, stalled and slow peers, and the flight recorder, on thread-ranks (no launcher, seconds).

A "dead" rank leaves in the middle of a collective without telling anyone (as a
kill -9 would); every survivor must raise an error that names the collective, its
sequence number, the step and the peer it waited for, within the timeout.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives import flight, select
from ringflow.collectives.threads import run_ranks
from tests.faults.inject import Fault, inject

T = 1.0          # communicator timeout in these tests (seconds)
SLACK = 2.0      # "+ a few seconds" the issue allows; threads need far less

NAMES = {"all_reduce": "all_reduce", "broadcast": "broadcast", "reduce": "reduce",
         "reduce_scatter": "reduce_scatter_tensor", "all_gather": "all_gather_into_tensor"}


def _call(comm, collective: str, algorithm: str, n: int = 1000) -> torch.Tensor:
    """One collective of ``collective`` with ``algorithm``; returns what this rank ends with."""
    x = torch.arange(n, dtype=torch.float32) + comm.rank
    if collective == "all_reduce":
        rc.all_reduce(x, group=comm, algorithm=algorithm)
        return x
    if collective == "broadcast":
        rc.broadcast(x, src=0, group=comm, algorithm=algorithm)
        return x
    if collective == "reduce":
        rc.reduce(x, dst=0, group=comm, algorithm=algorithm)
        return x
    if collective == "reduce_scatter":
        out = torch.empty(n // comm.size)
        rc.reduce_scatter_tensor(out, x[: n // comm.size * comm.size], group=comm,
                                 algorithm=algorithm)
        return out
    out = torch.empty(n * comm.size)
    rc.all_gather_into_tensor(out, x, group=comm, algorithm=algorithm)
    return out


def _loop(collective: str, algorithm: str, fault: Fault | None, victim: int, calls: int = 3):
    """A loop of the collective, each followed by a barrier (a root that only sends would never
    notice a dead leaf in a broadcast; every training loop has a call that needs everyone)."""
    def body(comm):
        inject(comm, fault if comm.rank == victim else None)
        out = []
        for _ in range(calls):
            out.append(_call(comm, collective, algorithm))
            rc.barrier(group=comm)
        return out
    return body


# "<collective> #<seq> ... at step <k> waiting for rank <peer>"
NAMED = re.compile(r"(\w+) #(\d+) .*(at step \d+|in the debug fingerprint exchange|while posting a message) "
                   r"waiting for rank \d+")


# Every all-reduce algorithm in the registry (new ones are covered automatically); the ring dies
# mid-way (step 1), the others at their first wait. "native" is the backend's own: process tests.
# staged needs shared memory between processes: its dead peer is test_shm_dead_peer's
CASES = [("all_reduce", name, 1 if name == "ring" else 0)
         for name in select.ALGORITHMS["all_reduce"] if name not in ("native", "staged")]
CASES += [("broadcast", "tree", 0), ("broadcast", "naive", 0), ("reduce", "tree", 0),
          ("reduce_scatter", "ring", 1), ("all_gather", "ring", 1)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("collective,algorithm,step", CASES)
def test_dead_peer_every_survivor_raises_naming_call_step_and_peer(collective, algorithm, step):
    outs = run_ranks(3, _loop(collective, algorithm, Fault("vanish", seq=2, step=step), victim=1),
                     timeout=T, outcomes=True)
    assert outs[1].vanished, "the fault did not fire"
    for o in (outs[0], outs[2]):
        assert isinstance(o.error, rc.CollectiveError), f"rank {o.rank} did not raise"
        assert o.seconds < T + SLACK, f"rank {o.rank} took {o.seconds:.1f}s"
        found = NAMED.search(str(o.error))
        assert found and found.group(1) in (NAMES[collective], "barrier"), str(o.error)
        assert int(found.group(2)) >= 2, str(o.error)       # the call that was hit, or a later one
    # Somebody waited on the dead rank itself and says so.
    assert any(isinstance(o.error, rc.CollectiveTimeout) and o.error.peer == 1
               for o in (outs[0], outs[2])), [str(o.error) for o in outs]


@pytest.mark.timeout(60)
def test_dead_root_is_named_by_every_survivor():
    """The root of broadcast #2 leaves right after sending: both survivors wait on it next."""
    outs = run_ranks(3, _loop("broadcast", "tree", Fault("vanish", seq=2, step=0), victim=0),
                     timeout=T, outcomes=True)
    for o in outs[1:]:
        assert isinstance(o.error, rc.CollectiveTimeout), o.error
        assert "barrier #3" in str(o.error) and "waiting for rank 0" in str(o.error), o.error


@pytest.mark.timeout(60)
def test_stalled_peer_past_timeout_raises_everywhere():
    outs = run_ranks(3, _loop("all_reduce", "ring", Fault("stall", seq=2, step=0, seconds=2.2 * T),
                              victim=2), timeout=T, outcomes=True)
    for o in outs[:2]:
        assert isinstance(o.error, rc.CollectiveError), o
        assert o.seconds < T + SLACK, o.seconds
        assert "all_reduce #2" in str(o.error), o.error
    assert any(isinstance(o.error, rc.CollectiveTimeout) for o in outs[:2])
    assert isinstance(outs[2].error, rc.CollectiveError)   # the sleeper fails when it wakes


@pytest.mark.timeout(60)
def test_slow_peer_below_timeout_changes_nothing():
    # "slow" sleeps at every wait of the collective, and a peer can sit through several of its
    # sleeps back to back while another rank waits on it: the timeout here leaves room for all
    # of them on a loaded CI machine (1 s did not: a barrier timed out there after 0.3 s sleeps).
    timeout, nap = 6 * T, 0.2 * T
    clean = run_ranks(3, _loop("all_reduce", "ring", None, victim=1), timeout=timeout,
                      outcomes=True)
    slow = run_ranks(3, _loop("all_reduce", "ring", Fault("slow", seq=2, step=0, seconds=nap),
                              victim=1), timeout=timeout, outcomes=True)
    for a, b in zip(clean, slow):
        assert a.error is None and b.error is None, (a.error, b.error)
        for x, y in zip(a.value, b.value):
            assert torch.equal(x, y)
    assert slow[0].seconds > 2 * nap        # it really was slowed down (one sleep per ring step)


@pytest.mark.timeout(60)
def test_queued_async_collectives_fail_fast_after_a_failure():
    """Ten buckets in flight and a dead peer: one timeout, not ten."""
    def body(comm):
        inject(comm, Fault("vanish", seq=0, step=0) if comm.rank == 1 else None)
        works = [rc.all_reduce(torch.ones(100), group=comm, async_op=True) for _ in range(10)]
        errors = []
        for w in works:
            try:
                w.wait()
            except rc.CollectiveError as e:
                errors.append(str(e))
        return errors
    outs = run_ranks(3, body, timeout=T, outcomes=True)
    for o in (outs[0], outs[2]):
        # (#0 may still complete: the victim posted its sends before vanishing)
        assert len(o.value) >= 9 and o.seconds < T + SLACK, (o.seconds, o.value[:2])
        assert "not started: an earlier collective failed" in o.value[-1]


@pytest.mark.timeout(60)
def test_flight_recorder_dumps_every_rank_and_names_the_divergence(tmp_path, monkeypatch, capfd):
    """Rank 2 calls broadcast where the others call all_reduce (no debug): the dumps show it."""
    monkeypatch.setenv("RINGFLOW_FLIGHT_DIR", str(tmp_path))

    def body(comm):
        x = torch.ones(64)
        for _ in range(2):
            rc.all_reduce(x, group=comm, algorithm="ring")
        if comm.rank == 2:
            rc.broadcast(x, src=2, group=comm)
        else:
            rc.all_reduce(x, group=comm, algorithm="ring")
        rc.barrier(group=comm)
    outs = run_ranks(3, body, timeout=T, outcomes=True)
    assert all(o.error is not None and o.seconds < T + SLACK for o in outs), outs
    err = capfd.readouterr().err
    assert "recent collectives" in err and "#2 " in err
    dumps = {json.loads(p.read_text())["rank"]: json.loads(p.read_text())["calls"]
             for p in tmp_path.glob("flight-rank*.json")}
    assert sorted(dumps) == [0, 1, 2]
    verdict = flight.first_divergence(dumps)
    assert "#2" in verdict and "ranks [2]: broadcast" in verdict, verdict
    assert flight.main([str(tmp_path)]) == 0
