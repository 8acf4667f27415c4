"""What the ProcessGroup layer costs per call, measured where nothing else does: a world of one
(no peer to wait for, so the time is the Python on the calling thread); under torchrun the same
three calls run in the launched world (each call then includes the peers' exchange).

    OMP_NUM_THREADS=1 python benchmarks/backend/layer_cost.py --kib 4
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/backend/layer_cost.py --kib 4

Three calls on the same tensor, alternated block by block (each block: 10 calls, timed):
  rc      rc.all_reduce(t, group=comm)            ringflow's verb, the baseline
  group   pg.allreduce([t], opts) (asyncOp False) the backend's method as torch's wrapper calls it
  dist    dist.all_reduce(t)                      torch's wrapper, then the backend
Prints the median microseconds a call of each and the differences: group - rc is this layer,
dist - group is torch's own wrapper. ``--pieces`` (a world of one) times instead, the same way,
each piece the group's allreduce runs before ringflow's collective does, alone:

    OMP_NUM_THREADS=1 python benchmarks/backend/layer_cost.py --pieces
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

import ringflow  # noqa: F401 - registers the backend
from ringflow import collectives as rc


def pieces(pg, t: torch.Tensor) -> dict:
    """Each step of RingflowProcessGroup.allreduce on its own, and what ringflow's verb costs.
    The group runs a kind of tensor it has seen on its plan (backend/plans.py); rc.all_reduce
    makes its checks and choice on every call."""
    from ringflow.backend import process_group as group
    from ringflow.collectives import select
    comm, opts = pg.comm, dist.AllreduceOptions()
    opts.asyncOp = False
    op = group._op(opts)
    plans = pg._plans._plans
    return {"options object made (torch's wrapper)": dist.AllreduceOptions,
            "opts.asyncOp read (group)": lambda: opts.asyncOp,
            "op read from opts by its hash (group)": lambda: hash(opts.reduceOp),
            "contiguous, cpu, autograd read (group)":
                lambda: (t.is_contiguous(), t.is_cpu, t.requires_grad),
            "plan looked up (group)": lambda: plans.get((t.numel(), t.dtype, 0, t.layout)),
            "op read from opts and looked up (unplanned)": lambda: group._op(opts),
            "tensor checks (rc)": lambda: rc._check_tensor(comm, t, "tensor", op),
            "algorithm choice (rc)": lambda: select.choose(comm, "all_reduce", t.numel() * 4),
            "flat view of the detached tensor (rc)": lambda: t.detach().view(-1),
            "isinstance, group and op resolved (rc)":
                lambda: (rc._group(comm), rc.as_reduce_op(op), isinstance(t, torch.Tensor)),
            "comm.run of an empty job (both)":
                lambda: comm.run("all_reduce", lambda: None, tensor=t, op=op)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kib", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=3000)
    ap.add_argument("--pieces", action="store_true",
                    help="time the pieces of the group's allreduce (a world of one)")
    args = ap.parse_args()
    if "WORLD_SIZE" in os.environ:          # launched: the launcher's rendezvous
        dist.init_process_group("ringflow")
    else:
        dist.init_process_group("ringflow", store=dist.HashStore(), rank=0, world_size=1)
    world = dist.get_world_size()
    pg, t = dist.group.WORLD, torch.randn(args.kib * 256)
    comm = pg.comm
    opts = dist.AllreduceOptions()
    opts.asyncOp = False
    calls = {"rc": lambda: rc.all_reduce(t, group=comm), "group": lambda: pg.allreduce([t], opts),
             "dist": lambda: dist.all_reduce(t)}
    if args.pieces:
        calls = {**calls, **pieces(pg, t)}
    took = {k: [] for k in calls}
    for _ in range(args.blocks):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(10):
                fn()
            took[name].append((time.perf_counter() - start) / 10)
    med = {k: statistics.median(v) * 1e6 for k, v in took.items()}
    if dist.get_rank() != 0:
        dist.destroy_process_group()
        return
    where = "world of one" if world == 1 else f"world of {world}, rank 0"
    if args.pieces:
        print(f"{args.kib} KiB, {where}, medians of {args.blocks} blocks of 10 calls (us/call):")
        for name, us in med.items():
            print(f"  {us:6.2f}  {name}")
    print(f"{args.kib} KiB, {where}, medians of {args.blocks} blocks of 10 calls (us/call): "
          f"rc {med['rc']:.2f}, group {med['group']:.2f}, dist {med['dist']:.2f}; "
          f"layer (group - rc) {med['group'] - med['rc']:.2f}, torch's wrapper (dist - group) "
          f"{med['dist'] - med['group']:.2f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
