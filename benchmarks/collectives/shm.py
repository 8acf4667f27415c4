"""ringflow all-reduce over shared memory vs gloo (and MPI under mpirun), interleaved in one run.

    torchrun --nproc_per_node=2 benchmarks/collectives/shm.py                 # shm vs gloo
    mpirun -np 4 --oversubscribe python benchmarks/collectives/shm.py         # shm vs gloo vs MPI

Each size runs every implementation in turn, ``--iters`` times; a time is the slowest
rank's, the figure is the median. busbw = 2(n-1)/n * bytes / time (nccl-tests' definition).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import select


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", default="1,4,16,64,128", help="comma-separated fp32 sizes")
    p.add_argument("--iters", type=int, default=5, help="timed calls per implementation and size")
    p.add_argument("--no-gloo", action="store_true", help="skip torch.distributed (gloo)")
    p.add_argument("--algorithm", default="auto", help="ringflow all_reduce algorithm (auto: "
                   "ringflow's choice, printed per size)")
    return p.parse_args()


def mpi_comm():
    """MPI.COMM_WORLD under mpirun (also sets up gloo's rendezvous through it), else None."""
    if "OMPI_COMM_WORLD_RANK" not in os.environ and "PMI_RANK" not in os.environ:
        return None
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    port = comm.bcast(_free_port() if comm.rank == 0 else None)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(comm.rank),
                      WORLD_SIZE=str(comm.size))
    return comm


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def implementations(mpi, use_gloo: bool, algorithm: str) -> dict:
    impls = {"ringflow-shm": lambda t: rc.all_reduce(t, algorithm=algorithm)}
    if use_gloo:
        impls["gloo"] = lambda t: dist.all_reduce(t)
    if mpi is not None:
        from mpi4py import MPI
        impls["MPI_Allreduce"] = lambda t: mpi.Allreduce(MPI.IN_PLACE, t.numpy())
    return impls


def slowest(seconds: float) -> float:
    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def timed(fn, buf: torch.Tensor, rank: int) -> float:
    buf.fill_(rank + 1)
    dist.barrier()
    t0 = time.perf_counter()
    fn(buf)
    return slowest(time.perf_counter() - t0)


def main() -> None:
    args = parse()
    mpi = mpi_comm()
    dist.init_process_group("gloo")                  # rendezvous + timing reductions (+ baseline)
    comm = ringflow.init(transport="shm")            # uses gloo's store, or MPI under mpirun
    n, rank = comm.size, comm.rank
    impls = implementations(mpi, not args.no_gloo, args.algorithm)
    if rank == 0:
        print(f"# n={n} ranks, fp32 sum, median of {args.iters}; busbw GB/s (time ms)", flush=True)
        print("size_MiB " + " ".join(f"{k:>24}" for k in impls) + "   shm/others", flush=True)
    for mib in [float(s) for s in args.sizes_mib.split(",")]:
        buf = torch.empty(int(mib * (1 << 20)) // 4)
        for fn in impls.values():
            fn(buf)                                  # warm up: page faults, connections
        times = {k: [] for k in impls}
        for _ in range(args.iters):
            for k, fn in impls.items():
                times[k].append(timed(fn, buf, rank))
        expect = n * (n + 1) / 2
        assert buf[0].item() == expect and buf[-1].item() == expect, "wrong all-reduce result"
        if rank == 0:
            report(mib, n, {k: statistics.median(v) for k, v in times.items()},
                   select.last.get("all_reduce", "?"))
    ringflow.shutdown()
    dist.destroy_process_group()


def report(mib: float, n: int, med: dict, algorithm: str) -> None:
    nbytes = mib * (1 << 20)
    bw = {k: 2 * (n - 1) / n * nbytes / t / 1e9 for k, t in med.items()}
    cells = " ".join(f"{bw[k]:>12.2f} ({med[k] * 1e3:8.2f})" for k in med)
    shm = bw["ringflow-shm"]
    ratios = " ".join(f"{shm / bw[k]:.2f}x {k}" for k in med if k != "ringflow-shm")
    print(f"{mib:8g} {cells}   {ratios}  [{algorithm}]", flush=True)


if __name__ == "__main__":
    main()
