"""examples/torch_ddp.py (a DiT recipe for torch DDP) runs unmodified on backend "ringflow" and
ends where it ends on gloo: at 2 ranks every gradient sum is the same in any order, so the logged
losses and the EMA checksum must be identical."""
import re

import pytest

from tests.launchers import run_torchrun

EXAMPLE = "examples/torch_ddp.py"
pytestmark = pytest.mark.launched


def _result(out: str) -> tuple[list[str], str]:
    losses = re.findall(r"step \d+ loss [0-9.]+", out)
    checksum = re.search(r"ema_checksum=(\S+)", out)
    assert losses and checksum, out[-4000:]
    return losses, checksum.group(1)


@pytest.mark.timeout(300)
def test_torch_ddp_example_same_on_ringflow_and_gloo():
    args = ("--steps", "12", "--log-every", "6")
    _, ours = run_torchrun(2, EXAMPLE, "--backend", "ringflow", *args, timeout=140,
                           env={"RINGFLOW_TRANSPORT": "auto"})
    _, ref = run_torchrun(2, EXAMPLE, "--backend", "gloo", *args, timeout=140)
    assert "done backend=ringflow world=2" in ours, ours[-3000:]
    assert _result(ours) == _result(ref), (_result(ours), _result(ref))
