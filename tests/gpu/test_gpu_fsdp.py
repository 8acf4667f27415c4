"""FullyShardedDataParallel on CUDA (tests/gpu/fsdp_xl.py: DiT-S/2 against the bare model, then
DiT-XL/2 bf16 mixed-precision steps) under pytest: ``pytest -m gpu`` on a GPU machine;
skipped elsewhere, with the reason (tests/conftest.py)."""
import sys

import pytest

from tests.launchers import run_cmd

pytestmark = [pytest.mark.gpu, pytest.mark.launched]


@pytest.mark.timeout(400)
def test_fsdp_dit_xl_world_of_one_on_cuda(tmp_path):
    _, out = run_cmd([sys.executable, "tests/gpu/fsdp_xl.py", "--out",
                      str(tmp_path / "fsdp_xl.json")], timeout=360)
    assert "fsdp_xl: ok" in out, out[-3000:]
