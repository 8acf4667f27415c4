"""Launched by test_probe_launched.py under mpirun: what the start-up probe measured, what auto
then picks per size and dtype, and that each pick sums right. Prints one line per rank."""
import torch

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import costmodel, select

comm = ringflow.init()
picks = []
for dtype in (torch.float32, torch.bfloat16):
    for numel in (1024, 1 << 18, 1 << 22):
        t = torch.full((numel,), comm.rank + 1, dtype=dtype)
        rc.all_reduce(t)
        assert torch.all(t == comm.size * (comm.size + 1) // 2), (dtype, numel, t[:4])
        picks.append(select.last["all_reduce"])
probe = costmodel.load(comm).probe
print(f"rank {comm.rank} probe {sorted(probe)} {probe} picks {picks}", flush=True)
ringflow.shutdown()
