"""Worker: torch's own data-parallel wrappers trained for 10 steps on backend "ringflow" (the
default group, as unmodified code uses it) and on a gloo group of the same ranks, from the same
seed and data: DDP, FSDP2 ``fully_shard``, ZeroRedundancyOptimizer (over DDP). The parameters
must agree within 1e-6 relative (bitwise where the reduction order allows).

    torchrun --nproc_per_node=2 tests/backend/train_worker.py ddp fsdp zero

Prints "TRAIN OK <wrapper> max_rel=<float>" per wrapper on rank 0.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

from tests.backend.common import join

STEPS, TOL = 10, 1e-6


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                               torch.nn.GELU(), torch.nn.Linear(64, 8))


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step * 100 + rank)
    return torch.randn(16, 32, generator=g), torch.randn(16, 8, generator=g)


def train(net: torch.nn.Module, opt, rank: int) -> None:
    for step in range(STEPS):
        x, y = batch(step, rank)
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def full_params(net: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter whole (an FSDP2 shard is gathered through its DTensor)."""
    out = []
    for p in net.parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        out.append(p.detach().clone())
    return out


def run_ddp(pg):
    net = DDP(model(), process_group=pg, bucket_cap_mb=0.01)    # several buckets
    train(net, torch.optim.AdamW(net.parameters(), lr=1e-2), dist.get_rank())
    return full_params(net)


def run_fsdp(pg):
    net = model()
    mesh = DeviceMesh.from_group(pg, "cpu")
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(net, mesh=mesh)
    train(net, torch.optim.AdamW(net.parameters(), lr=1e-2), dist.get_rank())
    return full_params(net)


def run_zero(pg):
    net = DDP(model(), process_group=pg)
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=torch.optim.AdamW,
                                  process_group=pg, lr=1e-2)
    train(net, opt, dist.get_rank())
    return full_params(net)


def compare(name: str, ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    worst = 0.0
    for a, b in zip(ours, ref, strict=True):
        rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
        worst = max(worst, rel)
    assert worst <= TOL, f"{name}: ringflow and gloo parameters differ by {worst:.3g} relative"
    start = full_params(model())
    moved = max((a - b).abs().max().item() for a, b in zip(ours, start))
    assert moved > 1e-3, f"{name}: training did not move the parameters ({moved})"
    return worst


def main(wrappers: list[str]) -> None:
    rf, gloo = join("ringflow")
    runs = {"ddp": run_ddp, "fsdp": run_fsdp, "zero": run_zero}
    for name in wrappers:
        ours = runs[name](rf)
        ref = runs[name](gloo)
        worst = compare(name, ours, ref)
        if dist.get_rank() == 0:
            print(f"TRAIN OK {name} world={dist.get_world_size()} max_rel={worst:.3g}", flush=True)
    dist.destroy_process_group()
    leave()


def leave() -> None:
    """Exit without interpreter finalization: a gloo worker thread that takes the GIL while the
    interpreter shuts down aborts the process ("terminate called without an active exception",
    seen in 2 of 20 launches, after every check had passed; an open issue, see the README)."""
    sys.stdout.flush()
    if "mpi4py.MPI" in sys.modules:          # mpirun wants MPI_Finalize before the exit
        sys.modules["mpi4py.MPI"].Finalize()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ddp", "fsdp", "zero"])
