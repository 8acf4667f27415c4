"""Unmodified torch DDP, FSDP2 fully_shard and ZeroRedundancyOptimizer on backend "ringflow" vs
gloo (train_worker.py: 10 steps, same seed, parameters within 1e-6 relative), and ringflow's
errors reaching the user through torch.distributed (errors_worker.py). Launched, with timeouts."""
import pytest

from tests.launchers import free_port, run_mpirun, run_torchrun

TRAIN = "tests/backend/train_worker.py"
ERRORS = "tests/backend/errors_worker.py"
pytestmark = pytest.mark.launched


def _trained(out: str, n: int) -> None:
    for name in ("ddp", "fsdp", "zero"):
        assert f"TRAIN OK {name} world={n}" in out, out[-4000:]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [2, 3])
def test_torchrun_training_matches_gloo(n):
    _, out = run_torchrun(n, TRAIN, timeout=280, env={"RINGFLOW_TRANSPORT": "auto"})
    _trained(out, n)


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("n", [2, 3])
def test_mpirun_training_matches_gloo(n):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    _, out = run_mpirun(n, TRAIN, timeout=280, env=env)
    _trained(out, n)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("debug", ["0", "1"])
def test_mismatch_reaches_the_user(debug):
    _, out = run_torchrun(2, ERRORS, "mismatch", timeout=100,
                          env={"RINGFLOW_TRANSPORT": "auto", "RINGFLOW_DEBUG": debug})
    for r in (0, 1):
        assert f"BAD OK rank {r}" in out and f"MISMATCH OK rank {r}" in out, out[-4000:]
    if debug == "1":
        assert "ranks [0] have all_reduce; ranks [1] have broadcast" in out, out[-4000:]


@pytest.mark.timeout(120)
def test_timeout_names_the_peer():
    _, out = run_torchrun(2, ERRORS, "timeout", timeout=100, env={"RINGFLOW_TRANSPORT": "auto"})
    assert "TIMEOUT OK rank 0 after" in out and "waiting for rank 1" in out, out[-4000:]
