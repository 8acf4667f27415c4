"""n ranks on per-rank batches == one process on the concatenated batch, for every wrapper.

The matrix itself lives in tests/parallel/matrix.py: in-process over the thread transport
here, and launched (matrix_worker.py) under torchrun (gloo, with torch's DDP + our comm hook)
and mpirun.
"""
import pytest

from ringflow.collectives.threads import run_ranks
from tests.launchers import run_mpirun, run_torchrun
from tests.parallel.matrix import run_matrix

WORKER = "tests/parallel/matrix_worker.py"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [2, 3])
def test_matrix_threads(n):
    failures = run_ranks(n, run_matrix, timeout=60)
    assert failures == [[]] * n, failures


@pytest.mark.launched
@pytest.mark.timeout(150)
@pytest.mark.parametrize("n", [2, 3])
def test_matrix_torchrun_gloo(n):
    _, out = run_torchrun(n, WORKER, "--ddp", timeout=140, env={"RINGFLOW_TRANSPORT": "torch"})
    assert "PARALLEL MATRIX OK" in out, out[-3000:]


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_matrix_mpirun():
    _, out = run_mpirun(2, WORKER, "--ddp", timeout=140, env={"RINGFLOW_TRANSPORT": "mpi"})
    assert "PARALLEL MATRIX OK" in out, out[-3000:]


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(150)
def test_matrix_mpirun_three_ranks_sharded_cases():
    """n = 3 under mpirun for FullyShardedDataParallel (every case runs at 3 under torchrun)."""
    _, out = run_mpirun(3, WORKER, "--cases", "fsdp", timeout=140,
                        env={"RINGFLOW_TRANSPORT": "mpi"})
    assert "PARALLEL MATRIX OK" in out, out[-3000:]
