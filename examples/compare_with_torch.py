"""Run ringflow's collectives next to torch.distributed's and check they agree bit for bit.

    torchrun --nproc_per_node=3 examples/compare_with_torch.py
    mpirun -np 3 python examples/compare_with_torch.py          # the mpi transport
    RINGFLOW_TRANSPORT=torch mpirun -np 3 python examples/compare_with_torch.py

Inputs are small integers, so every reduction is exact and the two libraries
must return identical bytes whatever order they sum in. Rank 0 prints one line
per comparison; the exit status is 1 if any differ.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import ringflow
from ringflow import collectives as rc
from ringflow.transport.torch_dist import init_process_group

DTYPES = (torch.float32, torch.bfloat16, torch.int64)
OPS = ("sum", "max", "min", "product", "avg")
NUMEL = 1003                 # not divisible by 2, 3 or 4 ranks
# torch 2.13 renamed the tensor forms (*_single); older releases only have the old names
TORCH_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
TORCH_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def values(rank: int, numel: int, dtype: torch.dtype, op: str) -> torch.Tensor:
    """Small integers, different on every rank; products stay in {1, 2}."""
    g = torch.Generator().manual_seed(1000 + rank)
    low, high = (1, 3) if op == "product" else (-8, 9)
    return torch.randint(low, high, (numel,), generator=g).to(dtype)


def cases(rank: int, size: int):
    """(label, ringflow call, torch.distributed call, tensor each fills) for every comparison."""
    for dtype in DTYPES:
        name = str(dtype).replace("torch.", "")
        for op in OPS:
            if op == "avg" and not dtype.is_floating_point:
                continue                                   # an integer AVG would truncate
            x = values(rank, NUMEL, dtype, op)
            ours, theirs = x.clone(), x.clone()
            rop, top = getattr(rc.ReduceOp, op.upper()), getattr(dist.ReduceOp, op.upper())
            yield (f"all_reduce {op} {name} x{NUMEL}", ours, theirs,
                   lambda o=ours, r=rop: rc.all_reduce(o, op=r),
                   lambda t=theirs, p=top: dist.all_reduce(t, op=p))
        x = values(rank, NUMEL * size, dtype, "sum")
        out_a, out_b = torch.empty(NUMEL, dtype=dtype), torch.empty(NUMEL, dtype=dtype)
        yield (f"reduce_scatter_tensor sum {name} x{NUMEL * size}", out_a, out_b,
               lambda o=out_a, i=x: rc.reduce_scatter_tensor(o, i),
               lambda o=out_b, i=x: TORCH_REDUCE_SCATTER(o, i))
        x = values(rank, NUMEL, dtype, "sum")
        out_a, out_b = torch.empty(NUMEL * size, dtype=dtype), torch.empty(NUMEL * size, dtype=dtype)
        yield (f"all_gather_into_tensor {name} x{NUMEL}", out_a, out_b,
               lambda o=out_a, i=x: rc.all_gather_into_tensor(o, i),
               lambda o=out_b, i=x: TORCH_ALL_GATHER(o, i))
        root = size - 1
        a, b = x.clone(), x.clone()
        yield (f"broadcast from {root} {name} x{NUMEL}", a, b,
               lambda t=a: rc.broadcast(t, src=root), lambda t=b: dist.broadcast(t, src=root))
        a, b = x.clone(), x.clone()
        seen = slice(None) if rank == root else slice(0)   # torch leaves non-roots undefined
        yield (f"reduce sum to {root} {name} x{NUMEL}", a[seen], b[seen],
               lambda t=a: rc.reduce(t, dst=root), lambda t=b: dist.reduce(t, dst=root))
        x = values(rank, 4 * size, dtype, "sum")
        a, b = torch.empty_like(x), torch.empty_like(x)
        yield (f"all_to_all_single {name} x{4 * size}", a, b,
               lambda o=a, i=x: rc.all_to_all_single(o, i),
               lambda o=b, i=x: dist.all_to_all_single(o, i))


def main() -> int:
    comm = ringflow.init(timeout=120)
    if not dist.is_initialized():          # the mpi transport: start torch.distributed to compare
        init_process_group(comm.launch, torch.device("cpu"), timeout=120)
    rank, size = comm.rank, comm.size
    if rank == 0:
        print(f"ringflow transport={comm.transport.name} world={size} launcher={comm.launch.launcher}"
              f" | torch.distributed backend={dist.get_backend()}", flush=True)
    bad = 0
    for label, ours, theirs, run_ours, run_theirs in cases(rank, size):
        run_ours()
        run_theirs()
        same = torch.equal(ours, theirs)
        agree = torch.tensor([0 if same else 1], dtype=torch.int64)
        rc.all_reduce(agree, op=rc.ReduceOp.MAX)         # any rank differing fails the line
        bad += int(agree)
        if rank == 0:
            print(f"  {label:<40} {'match' if not int(agree) else 'DIFFER'}", flush=True)
    if rank == 0:
        print("ALL MATCH" if bad == 0 else f"{bad} COMPARISONS DIFFER", flush=True)
    ringflow.shutdown()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
