"""No silent divergence on real launchers: gloo and shared memory under torchrun, MPI under mpirun.
Every rank ends in an error within the timeout (a mismatch named on the receiving rank where the
transport carries the collective's identity in its messages), never in another call's bytes."""
import pytest

from tests.collectives.test_unmatched import assert_dtypes_named, assert_no_silent_divergence
from tests.collectives.unmatched_cases import CASES, results_in
from tests.launchers import run_mpirun, run_torchrun

pytestmark = pytest.mark.launched
WORKER = "tests/collectives/unmatched_worker.py"
T = 4
# the trial at its small size, the other cases between its two sizes (both sizes and every
# algorithm: tests/collectives/test_unmatched.py on threads, and the fault matrix)
RUNS = [("extra", 64)] + [(c, 1000) for c in sorted(CASES) if c != "extra"]
# cases where a rank is handed another call's message or staged round, so it can name both
# calls; in the others each rank waits for something the other never sends (a message against
# a staged round), and both end in the timeout error
NAMED = ("extra", "op", "dtype", "width")


def launch(transport: str, case: str, numel: int) -> list[dict]:
    env = {"RINGFLOW_TIMEOUT": str(T)}
    if transport == "mpi":
        _, out = run_mpirun(2, WORKER, case, str(numel), env=env, timeout=90)
    else:
        env["RINGFLOW_TRANSPORT"] = {"gloo": "torch", "shm": "shm"}[transport]
        _, out = run_torchrun(2, WORKER, case, str(numel), env=env, timeout=90)
    outs = results_in(out)
    assert len(outs) == 2, out[-4000:]
    return outs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case, numel", RUNS)
@pytest.mark.parametrize("transport", ["shm", pytest.param("mpi", marks=pytest.mark.mpi), "gloo"])
def test_launched(transport, case, numel):
    outs = launch(transport, case, numel)
    # gloo cannot show a receiver a message of another collective (tags keep them apart), so
    # there the receiver's error may be the timeout; the other transports name the mismatch
    named = transport != "gloo" and case in NAMED
    assert_no_silent_divergence(outs, deadline=T + 3, mismatch_named=named)
    assert_dtypes_named(outs, case)


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["extra", "verb", "dtype", "width"])
def test_mpis_own_calls_are_compared_before_they_go(case):
    """algorithm="native": MPI's own collectives carry no stamp, so the ranks' fingerprints are
    compared on the node's board before MPI is called (collectives/debug.py, check_on_board):
    every rank raises the mismatch, none hangs in MPI or returns another call's bytes."""
    _, out = run_mpirun(2, WORKER, case, "1000", "native", env={"RINGFLOW_TIMEOUT": str(T)},
                        timeout=90)
    outs = results_in(out)
    assert len(outs) == 2, out[-4000:]
    assert_no_silent_divergence(outs, deadline=T + 3)
    assert [o["error"] for o in outs] == ["CollectiveMismatch"] * 2, outs
    assert_dtypes_named(outs, case)
