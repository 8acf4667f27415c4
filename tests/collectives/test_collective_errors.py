"""Bad input, mismatched collectives and a silent peer end in clear errors, never in a hang.

Launched over the torch (gloo) and mpi transports with 2 ranks; the mismatch
cases for every fingerprint field also run in-process over the local transport.
"""
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives.threads import run_ranks
from tests.launchers import run_mpirun, run_torchrun

WORKER = "tests/collectives/errors_worker.py"


def launch(transport, *args, env=None, timeout=150):
    if transport == "torch":
        return run_torchrun(2, WORKER, *args, env=env, timeout=timeout)[1]
    return run_mpirun(2, WORKER, *args, env={"RINGFLOW_TRANSPORT": "mpi", **(env or {})},
                      timeout=timeout)[1]


@pytest.mark.launched
@pytest.mark.timeout(200)
@pytest.mark.parametrize("transport", ["torch", pytest.param("mpi", marks=pytest.mark.mpi)])
def test_bad_inputs_refused_then_silent_peer_times_out(transport):
    """14 bad calls fail on the calling rank; then rank 1 stays silent and rank 0 times out."""
    out = launch(transport, "bad")
    assert out.count("BAD OK rank") == 2, out[-3000:]
    assert "TIMEOUT OK rank 0 after" in out, out[-3000:]
    # the refused calls took no sequence number: the good all_reduce was #0, the silent one #1
    assert "all_reduce #1 timed out after 2.0s at step" in out and "waiting for rank 1" in out


@pytest.mark.launched
@pytest.mark.timeout(200)
@pytest.mark.parametrize("transport,field", [("torch", "collective"),
                                             pytest.param("mpi", "numel", marks=pytest.mark.mpi)])
def test_debug_mismatch_raises_on_every_rank(transport, field):
    out = launch(transport, "mismatch", field, env={"RINGFLOW_DEBUG": "1"})
    assert out.count("MISMATCH OK rank") == 2 and f"mismatch in {field}" in out, out[-3000:]


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_debug_mismatch_over_mpi_without_shared_memory():
    """No usable shm folder: MPI sends fingerprints through persistent requests (mpi_board)."""
    out = launch("mpi", "mismatch", "numel",
                 env={"RINGFLOW_DEBUG": "1", "RINGFLOW_SHM_DIR": "/nonexistent/ringflow"})
    assert out.count("MISMATCH OK rank") == 2 and "mismatch in numel" in out, out[-3000:]


def _mismatched(comm, field):
    """Rank 1 differs from the others in exactly ``field``."""
    odd = comm.rank == 1
    t = torch.ones(6, dtype=torch.float64 if odd and field == "dtype" else torch.float32)
    if field == "op":
        rc.all_reduce(t, op=rc.ReduceOp.MAX if odd else rc.ReduceOp.SUM, group=comm)
    elif field == "root":
        rc.broadcast(t, src=int(odd), group=comm)
    else:
        rc.all_reduce(t, group=comm)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("field", ["dtype", "op", "root"])
def test_local_mismatch_names_the_field(field):
    errors = []

    def body(comm):
        try:
            _mismatched(comm, field)
        except rc.CollectiveMismatch as e:
            errors.append(str(e))
    run_ranks(3, body, timeout=10, debug=True)
    assert len(errors) == 3 and all(f"mismatch in {field}" in e for e in errors), errors


@pytest.mark.timeout(60)
def test_sparse_and_strided_views_are_refused_by_name():
    def body(comm):
        sparse = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,))
        with pytest.raises(TypeError, match="sparse_coo tensor.*to_dense"):
            rc.all_reduce(sparse, group=comm)
        with pytest.raises(ValueError, match="must be contiguous"):
            rc.all_reduce(torch.ones(4, 4).t(), group=comm)
    run_ranks(2, body, timeout=10)
