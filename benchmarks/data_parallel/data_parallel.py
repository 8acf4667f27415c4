"""Step time of a DiT on 2+ ranks: ringflow DataParallel and ZeroOptimizer against torch DDP (gloo).

    RINGFLOW_TRANSPORT=torch OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 \
        benchmarks/data_parallel/data_parallel.py --preset S --batch 4 --rounds 3

All modes run in the same launch, interleaved round by round (absolute times drift 2-3x between
launches here; ratios inside one launch are steady). Each mode has its own model copy:

  compute      the same step with no communication at all (the floor)
  ringflow_dp  ringflow.parallel.DataParallel (bucketed ring all-reduce overlapped with backward)
  ringflow_zero2  ZeroOptimizer stage 2 (buckets reduced under backward | step shard | all-gather)
  ringflow_zero2_fwd  the same with gather_in_forward=True (the all-gather under the next forward)
  torch_ddp    torch.nn.parallel.DistributedDataParallel on gloo
  comm_ringflow / comm_gloo  the DataParallel buckets all-reduced alone (ringflow ring / gloo)

hidden = 1 - (step - compute) / comm: the fraction of communication hidden behind backward.
Rank 0 prints a markdown table of medians; --out appends it to a file.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ringflow
from ringflow import collectives as rc
from ringflow import parallel as rp
from ringflow.collectives import select
from ringflow.models.dit import DiT


def make_model(args) -> torch.nn.Module:
    torch.manual_seed(0)
    return DiT(in_channels=4, image_size=args.image, patch_size=2, preset=args.preset, num_classes=10)


def data(args, rank: int):
    g = torch.Generator().manual_seed(rank)
    return (torch.randn(args.batch, 4, args.image, args.image, generator=g),
            torch.rand(args.batch, generator=g), torch.randint(0, 10, (args.batch,), generator=g))


def trainer(model, opt, x, t, y):
    def step():
        F.mse_loss(model(x, t, y), x).backward()
        opt.step()
        opt.zero_grad()
    return step


def build_modes(args, comm) -> dict:
    x, t, y = data(args, comm.rank)
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-4)
    plain = make_model(args)
    dp = rp.DataParallel(make_model(args), group=comm, bucket_cap_mb=args.bucket_mb)
    zero_model = make_model(args)
    zero = rp.ZeroOptimizer(zero_model.parameters(), torch.optim.AdamW, group=comm, stage=2, lr=1e-4)
    fwd_model = make_model(args)           # its buffers broadcast at each forward, as DDP's are
    zero_fwd = rp.ZeroOptimizer(fwd_model, torch.optim.AdamW, group=comm, stage=2, lr=1e-4,
                                gather_in_forward=True, bucket_cap_mb=args.bucket_mb)
    ddp = torch.nn.parallel.DistributedDataParallel(make_model(args), bucket_cap_mb=args.bucket_mb)
    buffers = [b.flat.data for b in dp.reducer.buckets]

    def comm_ringflow():
        works = [rc.all_reduce(b, op=rc.ReduceOp.AVG, group=comm, async_op=True) for b in buffers]
        for w in works:
            w.wait()

    def comm_gloo():
        works = [dist.all_reduce(b, async_op=True) for b in buffers]
        for w in works:
            w.wait()

    return {"compute": trainer(plain, adamw(plain.parameters()), x, t, y),
            "ringflow_dp": trainer(dp, adamw(dp.parameters()), x, t, y),
            "ringflow_zero2": trainer(zero_model, zero, x, t, y),
            "ringflow_zero2_fwd": trainer(fwd_model, zero_fwd, x, t, y),
            "torch_ddp": trainer(ddp, adamw(ddp.parameters()), x, t, y),
            "comm_ringflow": comm_ringflow, "comm_gloo": comm_gloo}


def timed(fn, comm) -> float:
    rc.barrier(group=comm)
    start = time.perf_counter()
    fn()
    rc.barrier(group=comm)
    return time.perf_counter() - start


def table(args, comm, times: dict, nparams: int) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [f"DiT-{args.preset} ({nparams / 1e6:.1f}M params), {comm.size} ranks, batch {args.batch}"
            f"/rank, {args.image}x{args.image}x4, buckets {args.bucket_mb} MiB, transport "
            f"{comm.transport.name} (ringflow all_reduce algorithm: {select.last.get('all_reduce')}"
            f"); medians of {len(times['compute'])} steps", "",
            "| mode | step (ms) | vs torch_ddp | hidden comm |", "|---|---|---|---|"]
    comm_of = {"ringflow_dp": med.get("comm_ringflow"), "ringflow_zero2": med.get("comm_ringflow"),
               "ringflow_zero2_fwd": med.get("comm_ringflow"), "torch_ddp": med.get("comm_gloo")}
    for mode, value in med.items():
        hidden = ""
        if comm_of.get(mode):
            frac = 1 - (value - med["compute"]) / comm_of[mode]
            hidden = f"{min(max(frac, 0.0), 1.0):.0%}"
        rows.append(f"| {mode} | {value * 1e3:.0f} | {value / med['torch_ddp']:.2f}x | {hidden} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S", help="DiT size preset (T, S, B, ...)")
    ap.add_argument("--image", type=int, default=16, help="image side (latent-sized, 4 channels)")
    ap.add_argument("--batch", type=int, default=4, help="images per rank")
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=2, help="steps per mode per round")
    ap.add_argument("--out", default=None, help="append the table to this file (rank 0)")
    ap.add_argument("--modes", default="all", help="comma-separated subset of the modes "
                    "(compute and torch_ddp are always kept: the table is relative to them)")
    args = ap.parse_args()
    comm = ringflow.init()
    if not dist.is_initialized():          # torch DDP needs gloo beside an mpi/shm transport
        from ringflow.transport.torch_dist import init_process_group
        init_process_group(comm.launch, torch.device("cpu"), timeout=300)
    modes = build_modes(args, comm)
    if args.modes != "all":
        keep = set(args.modes.split(",")) | {"compute", "torch_ddp"}
        modes = {k: v for k, v in modes.items() if k in keep}
    for fn in modes.values():              # warm-up: allocations, first buckets
        timed(fn, comm)
    times = {k: [] for k in modes}
    for _ in range(args.rounds):
        for name, fn in modes.items():
            times[name] += [timed(fn, comm) for _ in range(args.steps)]
    if comm.rank == 0:
        nparams = sum(p.numel() for p in make_model(args).parameters())
        text = table(args, comm, times, nparams)
        print(text, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n\n")
    ringflow.shutdown()


if __name__ == "__main__":
    main()
