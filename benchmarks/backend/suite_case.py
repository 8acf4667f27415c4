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

# SUITE_GATES=gloo: the suite decides which tests run as if the backend were gloo (some of its
# gates name gloo outright), and the tests then run on ringflow: gloo's selection, our backend.
GATES = os.environ.get("SUITE_GATES")
if GATES:
    os.environ["BACKEND"] = GATES

from torch.testing._internal.distributed import distributed_test  # noqa: E402 - after the tables
from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest, TestDistBackend)

if GATES:
    os.environ["BACKEND"] = distributed_test.BACKEND = "ringflow"


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()
        torch.backends.cudnn.flags(enabled=True, allow_tf32=False).__enter__()
