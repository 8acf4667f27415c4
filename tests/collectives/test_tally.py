"""At shutdown the ranks compare their collectives and name a rank that made extra calls."""
import pytest

from ringflow.collectives import stamp as stamps
from ringflow.collectives.tally import KEEP, compare
from tests.launchers import run_mpirun, run_torchrun


def row(calls: list[tuple]) -> list[int]:
    out = [len(calls)] + [0] * (4 * KEEP)
    for i, s in enumerate(calls[-KEEP:]):
        out[1 + 4 * i:5 + 4 * i] = list(s)
    return out


class Rec:
    def __init__(self, seq, name, numel=64, dtype="float32", op="-", root=-1):
        self.seq, self.name, self.numel, self.dtype, self.op, self.root = (
            seq, name, numel, dtype, op, root)


def test_same_calls_say_nothing():
    calls = [stamps.stamp_of(Rec(0, "all_reduce", op="sum")), stamps.stamp_of(Rec(1, "barrier"))]
    assert compare({0: row(calls), 1: row(calls)}) is None


def test_extra_call_is_named_with_the_first_difference():
    r0 = [stamps.stamp_of(Rec(0, "broadcast", root=0)),
          stamps.stamp_of(Rec(1, "all_reduce", op="sum")),
          stamps.stamp_of(Rec(2, "broadcast", root=0))]
    r1 = [stamps.stamp_of(Rec(0, "all_reduce", op="sum")),
          stamps.stamp_of(Rec(1, "broadcast", root=0))]
    text = compare({0: row(r0), 1: row(r1)})
    assert "rank 0 made 3, rank 1 made 2" in text
    assert "first difference seen at call #0: rank 0 called broadcast #0" in text
    assert "rank 1 called all_reduce #0 (64 x float32, op sum)" in text
    assert "rank 0's calls beyond the 2 every rank made: broadcast #2" in text


# The root of a broadcast only sends: over shared memory and MPI its send completes (eagerly)
# without a receiver, so the extra call ends cleanly on rank 0 and only the tally can tell.
# (gloo's send waits for its receiver, so there rank 0's extra broadcast times out instead.)
PROBE = ("import torch, ringflow; from ringflow import collectives as rc; c = ringflow.init(); "
         "b = torch.ones(8); rc.all_reduce(b)\n"
         "if c.rank == 0: rc.broadcast(b, src=0)\n"
         "ringflow.shutdown()\n")


@pytest.mark.timeout(120)
@pytest.mark.launched
@pytest.mark.parametrize("launcher", ["torchrun-shm", pytest.param("mpirun", marks=pytest.mark.mpi)])
def test_shutdown_reports_a_rank_with_extra_calls(launcher, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {"RINGFLOW_TIMEOUT": "5"}
    if launcher == "mpirun":
        _, out = run_mpirun(2, str(script), timeout=100, env=env)
    else:
        _, out = run_torchrun(2, str(script), timeout=100, env={"RINGFLOW_TRANSPORT": "shm", **env})
    assert "rank 0 made 2, rank 1 made 1" in out, out[-3000:]
    assert "rank 0's calls beyond the 1 every rank made: broadcast #1 (8 x float32, root 0)" in out
