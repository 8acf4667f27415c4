"""torch's DDP and FSDP2 on backend "ringflow" against the same on gloo, and all_reduce through
the backend against the same call through ringflow.collectives.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 benchmarks/backend/backend_bench.py \
        --preset S --batch 4 --rounds 3 --out benchmarks/results/backend.md

One launch, every mode interleaved round by round (absolute times drift between launches on a
shared machine; ratios inside one launch are steadier); medians over rounds. The default group is
ringflow (the transport it picks: shared memory on one node); the gloo side is a gloo group of the
same ranks, so both wrappers run the same model on the same data:

  ddp_ringflow / ddp_gloo      DistributedDataParallel(DiT) step, the benchmarks/data_parallel model
  fsdp_ringflow / fsdp_gloo    fully_shard on every DiT block and the root, step
  allreduce_backend / allreduce_rc   dist.all_reduce(t) vs rc.all_reduce(t, group=comm), per size
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

import ringflow  # noqa: F401 - registers the backend
from ringflow import collectives as rc
from ringflow.models.dit import DiT


def make_model(args) -> torch.nn.Module:
    torch.manual_seed(0)
    return DiT(in_channels=4, image_size=args.image, patch_size=2, preset=args.preset, num_classes=10)


def data(args, rank: int):
    g = torch.Generator().manual_seed(rank)
    return (torch.randn(args.batch, 4, args.image, args.image, generator=g),
            torch.rand(args.batch, generator=g), torch.randint(0, 10, (args.batch,), generator=g))


def stepper(model, x, t, y):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        F.mse_loss(model(x, t, y), x).backward()
        opt.step()
        opt.zero_grad()
    return step


def fsdp(model, group):
    mesh = DeviceMesh.from_group(group, "cpu")
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def allreduce_modes(args, comm) -> dict:
    modes = {}
    for kib in args.sizes:
        t = torch.randn(kib * 256)

        def backend(t=t):
            for _ in range(args.iters):
                dist.all_reduce(t)

        def direct(t=t):
            for _ in range(args.iters):
                rc.all_reduce(t, group=comm)
        modes[f"allreduce_backend_{kib}KiB"], modes[f"allreduce_rc_{kib}KiB"] = backend, direct
    return modes


def build(args, gloo, comm) -> dict:
    x, t, y = data(args, dist.get_rank())
    modes = {}
    if "ddp" in args.parts:
        modes["ddp_ringflow"] = stepper(DDP(make_model(args)), x, t, y)
        modes["ddp_gloo"] = stepper(DDP(make_model(args), process_group=gloo), x, t, y)
    if "fsdp" in args.parts:
        modes["fsdp_ringflow"] = stepper(fsdp(make_model(args), dist.group.WORLD), x, t, y)
        modes["fsdp_gloo"] = stepper(fsdp(make_model(args), gloo), x, t, y)
    if "allreduce" in args.parts:
        modes.update(allreduce_modes(args, comm))
    return modes


def timed(fn, gloo) -> float:
    dist.barrier(group=gloo)
    start = time.perf_counter()
    fn()
    dist.barrier(group=gloo)
    return time.perf_counter() - start


def table(args, times: dict, transport: str) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [f"DiT-{args.preset}, {dist.get_world_size()} ranks, batch {args.batch}/rank, "
            f"{args.image}x{args.image}x4; ringflow transport {transport}; medians of "
            f"{args.rounds} interleaved rounds; all_reduce: {args.iters} calls per timing", "",
            "| mode | time (ms) | ratio | vs |", "|---|---|---|---|"]
    for mode, value in med.items():
        base = mode.replace("_ringflow", "_gloo").replace("_backend_", "_rc_")
        ratio = f"{value / med[base]:.2f}x" if base != mode and base in med else ""
        rows.append(f"| {mode} | {value * 1e3:.1f} | {ratio} | {base if ratio else ''} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S")
    ap.add_argument("--image", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="ddp,fsdp,allreduce")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[4, 1024, 16384],
                    help="all_reduce sizes in KiB")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dist.init_process_group("ringflow")
    gloo = dist.new_group(backend="gloo")
    comm = dist.group.WORLD.comm                 # the ringflow Communicator behind the group
    modes = build(args, gloo, comm)
    for fn in modes.values():                    # warm-up: allocations, first buckets, shards
        timed(fn, gloo)
    times = {k: [] for k in modes}
    for _ in range(args.rounds):
        for name, fn in modes.items():
            times[name].append(timed(fn, gloo))
    if dist.get_rank() == 0:
        text = table(args, times, comm.transport.name)
        print(text, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
