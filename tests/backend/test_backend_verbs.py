"""torch.distributed's verbs on backend "ringflow", launched: each against a single-process oracle
and against gloo on the same ranks (verbs_worker.py), under torchrun (shared memory, and gloo
point-to-point as across nodes) and mpirun (MPI), 2 and 3 ranks; plus the world of one."""
import sys

import pytest

from tests.launchers import free_port, run_cmd, run_mpirun, run_torchrun

WORKER = "tests/backend/verbs_worker.py"
pytestmark = pytest.mark.launched


def _ok(out: str, n: int, launcher: str, transport: str) -> None:
    for r in range(n):
        assert f"VERBS OK rank {r} world={n} launcher={launcher} transport={transport}" in out, \
            out[-4000:]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("n", [2, 3])
def test_torchrun_shared_memory(n):
    _, out = run_torchrun(n, WORKER, timeout=180, env={"RINGFLOW_TRANSPORT": "auto"})
    _ok(out, n, "torchrun", "shm")


@pytest.mark.timeout(200)
def test_torchrun_gloo_peer_transport():
    """RINGFLOW_TRANSPORT=torch: what ranks on several nodes get (gloo p2p on its own group)."""
    _, out = run_torchrun(3, WORKER, timeout=180, env={"RINGFLOW_TRANSPORT": "torch"})
    _ok(out, 3, "torchrun", "torch/gloo")


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("n", [2, 3])
def test_mpirun_mpi(n):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "RINGFLOW_TRANSPORT": "auto"}
    _, out = run_mpirun(n, WORKER, timeout=180, env=env)
    _ok(out, n, "mpirun", "mpi")


@pytest.mark.timeout(120)
def test_world_of_one():
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1"}
    _, out = run_cmd([sys.executable, WORKER], timeout=100, env=env)
    _ok(out, 1, "torchrun", "local")
