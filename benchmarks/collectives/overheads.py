"""Where small collectives spend their time: the backend raw, through ringflow's layers, per call.

    RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 benchmarks/collectives/overheads.py
    mpirun -np 2 python benchmarks/collectives/overheads.py

Rank 0 prints medians in microseconds (4 KiB float32, 2 ranks, interleaved rounds):
  exchange_raw      one send + one receive with the backend's own calls (dist.isend/irecv,
                    mpi4py Isend/Irecv), waited
  exchange_ringflow the same through the transport and the Communicator (a ring step's cost)
  allreduce_raw     the backend's all-reduce called directly (torch.distributed / mpi4py)
  allreduce_native  rc.all_reduce(algorithm="native"): the same call behind ringflow's verb layer
  native_unchecked  the same without the fingerprint check on the board before the call
                    (Communicator.stamps off, as benchmarks/collectives/check_overhead.py does):
                    what the check costs is allreduce_native minus this
  verb_empty        Communicator.run of a job that does nothing (numbering, flight recorder,
                    engine): the verb's own floor, on top of the input checks
  allreduce_staged  rc.all_reduce(algorithm="staged") (ranks of one node)
  allreduce_ring    rc.all_reduce(algorithm="ring")
"""
from __future__ import annotations

import statistics
import time

import torch

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import staged


def main() -> None:
    comm = ringflow.init()
    if comm.size != 2:
        raise SystemExit("run with 2 ranks")
    peer, tr = 1 - comm.rank, comm.transport
    x, a, b = torch.ones(1024), torch.ones(512), torch.empty(512)
    if tr.name == "mpi":
        from mpi4py import MPI
        M, an, bn, xn = tr.comm, a.numpy(), b.numpy(), x.numpy()

        def exchange_raw():
            r = M.Irecv(bn, source=peer)
            s = M.Isend(an, dest=peer)
            r.Wait()
            s.Wait()

        def allreduce_raw():
            M.Allreduce(MPI.IN_PLACE, xn, op=MPI.SUM)
        barrier = M.Barrier
    else:
        import torch.distributed as dist

        def exchange_raw():
            r = dist.irecv(b, peer)
            s = dist.isend(a, peer)
            r.wait()
            s.wait()

        def allreduce_raw():
            dist.all_reduce(x)
        barrier = dist.barrier

    def exchange_ringflow():
        s, r = comm.sendrecv(a, peer, b, peer)
        comm.wait(r, peer)
        comm.wait(s, peer)

    def allreduce_native():
        rc.all_reduce(x, algorithm="native")

    def native_unchecked():
        comm.stamps = False
        try:
            rc.all_reduce(x, algorithm="native")
        finally:
            comm.stamps = True

    def verb_empty():
        comm.run("all_reduce", lambda: None, tensor=x, op=rc.ReduceOp.SUM)

    def allreduce_staged():
        rc.all_reduce(x, algorithm="staged")

    def allreduce_ring():
        rc.all_reduce(x, algorithm="ring")

    fns = [exchange_raw, exchange_ringflow, allreduce_raw, allreduce_native, native_unchecked,
           verb_empty, allreduce_ring]
    if staged.supports(comm):
        fns.insert(-1, allreduce_staged)
    times = {f.__name__: [] for f in fns}
    for _ in range(5):                                   # rounds, interleaved
        for f in fns:
            for _ in range(20):
                f()
            barrier()
            for _ in range(100):
                t0 = time.perf_counter()
                f()
                times[f.__name__].append(time.perf_counter() - t0)
    if comm.rank == 0:
        print(f"# {tr.name}, 2 ranks, 4 KiB: median us per call")
        for name, ts in times.items():
            print(f"{name:<18} {statistics.median(ts) * 1e6:8.1f}")
    ringflow.shutdown()


if __name__ == "__main__":
    main()
