"""The test class that runs torch's distributed_test.py in spawned processes (what torch's
test_distributed_spawn.py defines), with ringflow registered and entered in the suite's CPU
feature tables beside gloo. Run through torch_suite.py, which sets BACKEND / WORLD_SIZE / TEMP_DIR.
"""
import os

import torch
from torch.testing._internal.common_distributed import DistTestCases
from torch.testing._internal.distributed.distributed_test import DistributedTest, TestDistBackend

import ringflow  # noqa: F401 - registers the backend in every spawned rank too

if os.environ.get("BACKEND") == "ringflow":
    for feature in ("ddp", "subgroup"):
        DistTestCases.backend_feature[feature].add("ringflow")


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    def setUp(self):
        super().setUp()
        self._spawn_processes()
        torch.backends.cudnn.flags(enabled=True, allow_tf32=False).__enter__()
