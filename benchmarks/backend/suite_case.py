"""The test class that runs torch's distributed_test.py in spawned processes (what torch's
test_distributed_spawn.py defines), with ringflow registered and entered in the suite's feature
tables beside gloo. Run through torch_suite.py, which sets BACKEND / WORLD_SIZE / TEMP_DIR.

The tables must be filled before distributed_test.py is imported: its skip decorators read them
while the module is being defined. "plugin" is the suite's own entry for a registered
third-party backend (without it every test gated on availability skips); gloo's other entries
(ddp, subgroup, gpu, cuda) are given to ringflow so that both run the same tests; the CUDA ones
still skip here, on both, for want of GPUs.
"""
import os

import torch
from torch.testing._internal.common_distributed import DistTestCases

import ringflow  # noqa: F401 - registers the backend in every spawned rank too

if os.environ.get("BACKEND") == "ringflow":
    for feature in ("plugin", "ddp", "subgroup", "gpu", "cuda"):
        DistTestCases.backend_feature[feature].add("ringflow")

# SUITE_GATES=gloo (with BACKEND=ringflow): the suite runs exactly as for gloo (which tests, and
# every branch it takes on the backend's name), except that the default group it creates is a
# ringflow group: gloo's selection, our backend. (Some of its gates name gloo outright.)
GATES = os.environ.get("SUITE_GATES")
if GATES:
    os.environ["BACKEND"] = GATES
    _init = torch.distributed.init_process_group

    def _on_ringflow(*args, backend=None, **kwargs):
        return _init(*args, backend="ringflow" if backend == GATES else backend, **kwargs)
    torch.distributed.init_process_group = _on_ringflow

from torch.testing._internal.distributed.distributed_test import (  # noqa: E402 - after the tables
    DistributedTest, TestDistBackend)


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        if os.environ.get("SUITE_START") == "fork":   # no re-import of torch per rank: ~10x faster
            self._start_processes(torch.multiprocessing.get_context("fork").Process)
        else:
            self._spawn_processes()
        torch.backends.cudnn.flags(enabled=True, allow_tf32=False).__enter__()
