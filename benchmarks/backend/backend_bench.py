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
  calls (--parts calls)        the same pair alternated call by call, each call timed: on a loaded
                               machine both sides then meet the same conditions; medians per call
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


def calls(args, kib: int) -> int:
    """all_reduce calls per timing: ``--iters`` up to 256 KiB, fewer above (about 8 MiB moved)."""
    return max(3, min(args.iters, (8 << 10) // kib))


def allreduce_modes(args, comm) -> dict:
    modes = {}
    for kib in args.sizes:
        t, n = torch.randn(kib * 256), calls(args, kib)

        def backend(t=t, n=n):
            for _ in range(n):
                dist.all_reduce(t)

        def direct(t=t, n=n):
            for _ in range(n):
                rc.all_reduce(t, group=comm)
        modes[f"allreduce_backend_{kib}KiB"], modes[f"allreduce_rc_{kib}KiB"] = backend, direct
    return modes


def paired_calls(args, comm, gloo) -> str:
    """dist.all_reduce and rc.all_reduce on the same tensor, alternated call by call (which goes
    first alternates too); the median time of each per size, in microseconds."""
    rows = ["| size | backend (us/call) | rc (us/call) | ratio |", "|---|---|---|---|"]
    for kib in args.sizes:
        t, n = torch.randn(kib * 256), calls(args, kib) * args.rounds
        pair = [lambda: dist.all_reduce(t), lambda: rc.all_reduce(t, group=comm)]
        took = [[], []]
        dist.barrier(group=gloo)
        for i in range(n + 5):                 # the first 5 pairs warm up
            for k in (i % 2, 1 - i % 2):
                start = time.perf_counter()
                pair[k]()
                if i >= 5:
                    took[k].append(time.perf_counter() - start)
        ours, ref = (statistics.median(x) * 1e6 for x in took)
        rows.append(f"| {kib} KiB | {ours:.1f} | {ref:.1f} | {ours / ref:.2f}x |")
    return "\n".join(rows)


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
    """Seconds of ``fn`` on this rank, from a common start. No closing barrier: every timed mode
    synchronises the ranks itself, and a gloo barrier inside the timing would add a millisecond
    of noise to both sides of each ratio."""
    dist.barrier(group=gloo)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def table(args, times: dict, transport: str) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [f"DiT-{args.preset}, {dist.get_world_size()} ranks, batch {args.batch}/rank, "
            f"{args.image}x{args.image}x4; ringflow transport {transport}; medians of "
            f"{args.rounds} interleaved rounds; all_reduce: {args.iters} calls per timing "
            "(fewer above 256 KiB: about 8 MiB a timing)", "",
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
    ap.add_argument("--label", default="", help="a line written above the table (the launch)")
    args = ap.parse_args()
    dist.init_process_group("ringflow")
    gloo = dist.new_group(backend="gloo")
    comm = dist.group.WORLD.comm                 # the ringflow Communicator behind the group
    modes = build(args, gloo, comm)
    for fn in modes.values():                    # warm-up: allocations, first buckets, shards
        timed(fn, gloo)
    times = {k: [] for k in modes}
    pairs = paired_calls(args, comm, gloo) if "calls" in args.parts else ""
    order = list(modes)
    for _ in range(args.rounds):
        for name in order:
            times[name].append(timed(modes[name], gloo))
        order.reverse()         # no mode always first after a change of size or model
    if dist.get_rank() == 0:
        text = (args.label + "\n\n" if args.label else "") + table(args, times, comm.transport.name)
        if pairs:
            text += (f"\n\nall_reduce alternated call by call ({args.rounds} x the calls of a "
                     f"timing per size), medians per call:\n\n{pairs}")
        print(text, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
