"""The conformance matrix in launched process groups, against torch.distributed's gloo collectives.

torchrun with 2, 3 and 4 ranks (torch transport, gloo), plain python (world of one),
mpirun -np 2 and 3 with the mpi transport (torch's gloo started beside it as the
reference), and the example users run: under torchrun, mpirun, and mpirun with the
torch transport (MASTER_ADDR/PORT bootstrapped over MPI). Each launch has a hard
timeout, so a deadlock fails in seconds, not at the suite's limit.
"""
import sys

import pytest

from tests.launchers import run_cmd, run_mpirun, run_torchrun

WORKER = "tests/collectives/conformance_worker.py"
EXAMPLE = "examples/compare_with_torch.py"
pytestmark = pytest.mark.launched


@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_torchrun_gloo_matrix(n):
    _, out = run_torchrun(n, WORKER, timeout=240)
    assert "CONFORMANCE OK" in out and f"world={n} torch_ref=True" in out, out[-3000:]


@pytest.mark.timeout(120)
def test_world_of_one_torch_transport():
    _, out = run_cmd([sys.executable, WORKER], timeout=90, env={"RINGFLOW_TRANSPORT": "torch"})
    assert "CONFORMANCE OK" in out and "world=1 torch_ref=True" in out, out[-3000:]


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [2, 3])
def test_mpirun_mpi_transport_matrix(n):
    _, out = run_mpirun(n, WORKER, "--torch-ref", timeout=240, env={"RINGFLOW_TRANSPORT": "mpi"})
    assert "CONFORMANCE OK" in out and f"transport=mpi world={n} torch_ref=True" in out, out[-3000:]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("launcher,transport", [
    ("torchrun", "auto"), pytest.param("mpirun", "auto", marks=pytest.mark.mpi),
    pytest.param("mpirun", "torch", marks=pytest.mark.mpi)])
def test_example_matches_torch(launcher, transport):
    env = {"RINGFLOW_TRANSPORT": transport}
    run = run_torchrun if launcher == "torchrun" else run_mpirun
    _, out = run(3, EXAMPLE, timeout=120, env=env)
    # auto: MPI under mpirun, shared memory under torchrun on one CPU node
    want = {("mpirun", "auto"): "transport=mpi", ("torchrun", "auto"): "transport=shm"}.get(
        (launcher, transport), "transport=torch/gloo")
    assert "ALL MATCH" in out and want in out and "world=3" in out, out[-3000:]


@pytest.mark.timeout(150)
def test_auto_falls_back_to_torch_when_shared_memory_is_too_small():
    """Every rank fails to reserve its segment alike (1 TiB rings), so all pick torch together."""
    _, out = run_torchrun(2, EXAMPLE, timeout=120,
                          env={"RINGFLOW_TRANSPORT": "auto", "RINGFLOW_SHM_RING_BYTES": str(1 << 40)})
    assert "shared memory unavailable (cannot reserve" in out and "using the torch transport" in out
    assert "ALL MATCH" in out and "transport=torch/gloo" in out, out[-3000:]
