"""A DiT training script written for torch DDP (DiT's train.py recipe: DDP(model),
DistributedSampler, AdamW, an EMA copy, rank 0 logs and saves, then one barrier). The only
ringflow thing in it is the backend's name: every collective DDP makes runs on ringflow's ring.

    torchrun --nproc_per_node=2 examples/torch_ddp.py                   # backend ringflow
    torchrun --nproc_per_node=2 examples/torch_ddp.py --backend gloo    # the same on gloo
    mpirun -np 2 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=29500 python examples/torch_ddp.py

Rectified flow on scikit-learn's 8x8 digits with a tiny DiT; prints the mean loss every
--log-every steps and, at the end, a checksum of the EMA weights (equal on both backends at 2
ranks, where a sum of two is the same in any order).
"""
from __future__ import annotations

import argparse
import copy
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import ringflow  # noqa: F401 - registers the torch.distributed backend "ringflow"
from ringflow.data import load_dataset
from ringflow.models.dit import DiT
from ringflow.models.rectified_flow import RectifiedFlow


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float = 0.9999) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def setup(backend: str) -> tuple[int, int]:
    """torchrun exports RANK/WORLD_SIZE; under mpirun take them from Open MPI's variables."""
    rank = int(os.environ.get("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", 1)))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    dist.init_process_group(backend, rank=rank, world_size=world)
    return rank, world


def main() -> None:
    ap = argparse.ArgumentParser(description="DiT on digits with torch DDP")
    ap.add_argument("--backend", default="ringflow", help="torch.distributed backend")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32, help="images per rank")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt", default=None, help="rank 0 saves model, EMA and optimizer here")
    args = ap.parse_args()
    rank, world = setup(args.backend)
    torch.manual_seed(0)

    x, y = load_dataset("digits")                                   # (1797, 1, 8, 8), (1797,)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch, sampler=sampler, drop_last=True)
    model = DiT(in_channels=1, image_size=8, patch_size=2, preset="T", num_classes=10)
    ema = copy.deepcopy(model).requires_grad_(False)
    model = DDP(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    flow = RectifiedFlow()
    gen = torch.Generator().manual_seed(1000 + rank)               # noise differs per rank

    step, epoch, running = 0, 0, torch.zeros(2)
    while step < args.steps:
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            loss = flow.loss(model, xb, yb, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            update_ema(ema, model.module)
            running += torch.stack([loss.detach(), torch.ones(())])
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                dist.all_reduce(running)                            # every rank's losses
                if rank == 0:
                    print(f"step {step} loss {running[0] / running[1]:.4f}", flush=True)
                running.zero_()
            if step == args.steps:
                break
        epoch += 1
    if rank == 0 and args.ckpt:
        torch.save({"model": model.module.state_dict(), "ema": ema.state_dict(),
                    "opt": opt.state_dict()}, args.ckpt)
    dist.barrier()
    checksum = sum(p.double().sum().item() for p in ema.parameters())
    if rank == 0:
        print(f"done backend={args.backend} world={world} ema_checksum={checksum:.12e}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
