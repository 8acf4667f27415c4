"""ringflow collectives over the shared-memory transport in real processes (torchrun, mpirun)."""
from __future__ import annotations

import glob
import re

import pytest

from tests.launchers import run_mpirun, run_torchrun

SHM = {"RINGFLOW_TRANSPORT": "shm"}
pytestmark = pytest.mark.launched


def assert_no_leftovers(out: str) -> None:
    pids = re.findall(r"^PID (\d+)$", out, flags=re.M)
    assert pids, f"workers printed no PID lines:\n{out[-2000:]}"
    left = [p for pid in pids for p in glob.glob(f"/dev/shm/ringflow-{pid}-*")]
    assert not left, f"shared-memory segments left behind: {left}"


@pytest.mark.timeout(100)
def test_collectives_n3_default_ring():
    _, out = run_torchrun(3, "tests/collectives/shm_worker.py", timeout=90, env=SHM)
    assert "SHM OK n=3 ring_bytes=8388608 stage_bytes=2097152" in out, out[-3000:]
    assert_no_leftovers(out)


@pytest.mark.mpi
@pytest.mark.timeout(100)
def test_collectives_under_mpirun_with_rings_smaller_than_the_messages():
    # Bootstrap through MPI instead of a store; 64 KiB rings under 2 MiB ring slices, so
    # every message streams through its ring in pieces; 4 KiB stage halves, so staged
    # collectives of 1 MiB run in hundreds of rounds, reusing each half many times.
    env = {**SHM, "RINGFLOW_SHM_RING_BYTES": str(64 << 10), "RINGFLOW_SHM_STAGE_BYTES": "4096"}
    _, out = run_mpirun(2, "tests/collectives/shm_worker.py", timeout=90, env=env)
    assert "SHM OK n=2 ring_bytes=65536 stage_bytes=4096" in out, out[-3000:]
    assert_no_leftovers(out)
