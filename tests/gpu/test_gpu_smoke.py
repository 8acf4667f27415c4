"""The GPU smoke (smoke.sh: NCCL, the ring on CUDA, DiT throughput, ringflow.train on CUDA) under
pytest: ``pytest -m gpu`` on a GPU machine; skipped elsewhere (tests/conftest.py)."""
import sys

import pytest

from tests.launchers import run_cmd

pytestmark = [pytest.mark.gpu, pytest.mark.launched]


@pytest.mark.timeout(400)
def test_gpu_smoke(tmp_path):
    _, out = run_cmd(["bash", "tests/gpu/smoke.sh"], timeout=360,
                     env={"RESULTS": str(tmp_path), "PY": sys.executable})
    assert "gpu_smoke: done" in out, out[-3000:]
