"""Where a torch DDP step's time goes on backend "ringflow" and on gloo: forward, backward,
optimizer, beside the same ringflow model stepped under ``no_sync()`` (no communication). The
backward of a synced step minus no_sync's is the communication the step waited for (its
buckets' all-reduces that backward did not hide) plus what they took from the compute.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/backend/ddp_parts.py \
        --rounds 5 --buckets

``--buckets`` also prints the last ringflow step's bucket all-reduces on rank 0: when DDP's
reducer called the group (ms after backward began), how long the call took to return, when
the bucket was reduced, its size and the algorithm auto chose. Modes interleaved round by
round, order reversed each round; medians over rounds.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(__file__))
from backend_bench import data, make_model  # noqa: E402 - the same model and data

from ringflow.backend.process_group import RingflowProcessGroup  # noqa: E402
from ringflow.collectives import select  # noqa: E402

CALLS: list[list] = []        # [called, returned, reduced, MiB, algorithm] per bucket


def logged(allreduce):
    """The group's allreduce, recording each call's times (async: DDP's buckets)."""
    def call(self, tensors, opts=None):
        start = time.perf_counter()
        work = allreduce(self, tensors, opts)
        rec = [start, time.perf_counter(), None, tensors[0].numel() * tensors[0].element_size()
               / 2**20, select.last.get("all_reduce")]
        if work is not None:
            work.get_future().add_done_callback(lambda _: rec.__setitem__(2, time.perf_counter()))
        CALLS.append(rec)
        return work
    return call


def step(model, opt, x, t, y, gloo, sync: bool):
    """(forward, backward, optimizer, whole) seconds of one step, from a common start."""
    dist.barrier(group=gloo)
    t0 = time.perf_counter()
    with contextlib.nullcontext() if sync else model.no_sync():
        loss = F.mse_loss(model(x, t, y), x)
        t1 = time.perf_counter()
        CALLS.clear()
        loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t3 - t0, t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S")
    ap.add_argument("--image", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--buckets", action="store_true", help="print the last step's buckets")
    args = ap.parse_args()
    dist.init_process_group("ringflow")
    gloo = dist.new_group(backend="gloo")
    RingflowProcessGroup.allreduce = logged(RingflowProcessGroup.allreduce)
    x, t, y = data(args, dist.get_rank())
    ours, theirs = DDP(make_model(args)), DDP(make_model(args), process_group=gloo)
    modes = {"ringflow": (ours, True), "gloo": (theirs, True), "no_sync": (ours, False)}
    opts = {m: torch.optim.AdamW(model.parameters(), lr=1e-4) for m, (model, _) in modes.items()}
    took = {m: [] for m in modes}
    order = list(modes)
    for m in order:                                   # warm-up
        step(modes[m][0], opts[m], x, t, y, gloo, modes[m][1])
    for _ in range(args.rounds):
        for m in order:
            took[m].append(step(modes[m][0], opts[m], x, t, y, gloo, modes[m][1]))
            if m == "ringflow":
                last = (took[m][-1][4], took[m][-1][1], list(CALLS))
        order.reverse()
    if dist.get_rank() == 0:
        report(args, took, last)
    dist.destroy_process_group()


def report(args, took, last) -> None:
    med = {m: [statistics.median(s[i] for s in v) * 1e3 for i in range(4)] for m, v in took.items()}
    print(f"DiT-{args.preset}, batch {args.batch}/rank, 2 ranks, medians of {args.rounds} rounds "
          "(ms): forward, backward, optimizer, step")
    for m, (f, b, o, s) in med.items():
        extra = f"; backward - no_sync's {b - med['no_sync'][1]:.1f}" if m != "no_sync" else ""
        print(f"  {m:9s} {f:7.1f} {b:7.1f} {o:7.1f} {s:7.1f}{extra}")
    print(f"  step ringflow / gloo {med['ringflow'][3] / med['gloo'][3]:.2f}x")
    if args.buckets:
        began, backward, calls = last
        print(f"last ringflow step's buckets (ms after backward began; it ended at "
              f"{backward * 1e3:.1f}):")
        for called, returned, reduced, mib, alg in calls:
            done = f"{(reduced - began) * 1e3:7.1f}" if reduced else "      -"
            print(f"  called {(called - began) * 1e3:7.1f} returned +{(returned - called) * 1e3:.2f}"
                  f" reduced {done}  {mib:5.2f} MiB  {alg}")


if __name__ == "__main__":
    main()
