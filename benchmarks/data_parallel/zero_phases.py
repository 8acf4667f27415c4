"""Where a data-parallel step's time goes: forward, backward, step() and zero_grad, per mode.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 benchmarks/data_parallel/zero_phases.py

DiT-S as in data_parallel.py (same models and batches); modes: plain (no communication),
ZeroOptimizer stage 2, stage 2 with gather_in_forward, torch DDP on gloo. Rank 0 prints the
median of rounds 2..N of each phase in ms (one launch: a diagnosis, not a recorded ratio).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ringflow
from ringflow import collectives as rc
from ringflow import parallel as rp

sys.path.insert(0, str(Path(__file__).parent))
import data_parallel as dpb  # noqa: E402  (the models and batches of the step benchmark)

PHASES = ("fwd", "bwd", "step", "zero_grad", "barrier", "total")


def phases(model, opt, batch, comm) -> list[float]:
    x, t, y = batch
    rc.barrier(group=comm)
    marks = [time.perf_counter()]
    loss = F.mse_loss(model(x, t, y), x)
    marks.append(time.perf_counter())
    for fn in (loss.backward, opt.step, opt.zero_grad, lambda: rc.barrier(group=comm)):
        fn()
        marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])] + [marks[-1] - marks[0]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S")
    ap.add_argument("--image", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    comm = ringflow.init()
    if not dist.is_initialized():
        from ringflow.transport.torch_dist import init_process_group
        init_process_group(comm.launch, torch.device("cpu"), timeout=300)
    batch = dpb.data(args, comm.rank)
    plain, zero_m, fwd_m = (dpb.make_model(args) for _ in range(3))
    ddp = torch.nn.parallel.DistributedDataParallel(dpb.make_model(args),
                                                    bucket_cap_mb=args.bucket_mb)
    adamw = torch.optim.AdamW
    modes = {
        "plain": (plain, adamw(plain.parameters(), lr=1e-4)),
        "zero2": (zero_m, rp.ZeroOptimizer(zero_m.parameters(), adamw, group=comm, stage=2,
                                          lr=1e-4, bucket_cap_mb=args.bucket_mb)),
        "zero2_fwd": (fwd_m, rp.ZeroOptimizer(fwd_m, adamw, group=comm, stage=2, lr=1e-4,
                                              bucket_cap_mb=args.bucket_mb,
                                              gather_in_forward=True)),
        "ddp": (ddp, adamw(ddp.parameters(), lr=1e-4)),
    }
    times = {k: [] for k in modes}
    for _ in range(args.rounds):
        for name, (model, opt) in modes.items():
            times[name].append(phases(model, opt, batch, comm))
    if comm.rank == 0:
        for name, rows in times.items():
            med = [statistics.median(r[i] for r in rows[1:]) * 1e3 for i in range(len(PHASES))]
            print(name, " ".join(f"{p}={m:.0f}" for p, m in zip(PHASES, med)), flush=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
