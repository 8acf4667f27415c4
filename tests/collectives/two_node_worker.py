"""Worker: two-level all-reduce across two torchrun "nodes" of this machine, checked against naive.

Run by tests/collectives/test_algorithms_two_node.py as two torchrun agents
(--nnodes=2 --nproc_per_node=2); LOCAL_WORLD_SIZE gives the topology.
    python worker.py     # first over torch inside nodes, then over shared memory inside nodes
"""
import torch

import ringflow
from ringflow import collectives as rc
from ringflow import runtime
from ringflow.collectives import Communicator, hierarchical, select


def inputs(rank: int, numel: int, dtype) -> torch.Tensor:
    return ((torch.arange(numel) * 7 + rank * 5) % 11 - 5).to(dtype)


def main() -> None:
    comm = ringflow.init(transport="torch", timeout=60, intra="same")
    assert comm.size == 4 and comm.local_size == 2, (comm.size, comm.local_size)
    assert comm.num_nodes == 2 and comm.node == comm.rank // 2, (comm.rank, comm.node)
    check(comm)
    if comm.rank == 0:
        print("two-level OK (torch inside nodes)", flush=True)
    # the same world, as init(intra="shm") builds it: shared memory inside each node
    shm = runtime._make_intra("shm", comm.launch, comm.transport, comm.timeout)
    check(Communicator(comm.transport, timeout=comm.timeout, local_size=comm.local_size,
                       intra_transport=shm, launch=comm.launch))
    rc.barrier()
    if comm.rank == 0:
        print("two-level OK (shm inside nodes)", flush=True)
    # intra="auto" (init's default) on a world of two nodes: shared memory inside each
    auto = runtime._make_intra(None, comm.launch, comm.transport, comm.timeout)
    assert auto is not None and auto.name == "shm", auto
    overlapped(Communicator(comm.transport, timeout=comm.timeout, local_size=comm.local_size,
                            intra_transport=auto, launch=comm.launch))
    rc.barrier()
    if comm.rank == 0:
        print("two-level OK (overlapped pieces)", flush=True)
    ringflow.shutdown()


def overlapped(comm) -> None:
    """Pieces crossing the nodes on the helper thread while shm works on the next ones."""
    for numel, pieces in ((1 << 18, 4), (100003, 8)):
        got = inputs(comm.rank, numel, torch.float32)
        want = got.clone()
        hierarchical.all_reduce(comm, got, rc.ReduceOp.SUM, select._across_nodes,
                                piece_bytes=numel * 4 // pieces)
        rc.all_reduce(want, group=comm, algorithm="naive")
        assert torch.equal(got, want), f"rank {comm.rank} numel {numel} overlapped"


def check(comm) -> None:
    intra, inter = hierarchical.node_groups(comm)
    assert intra.size == 2 and inter.size == 2 and intra.rank == comm.local_rank
    for numel in (0, 1, 3, 1001, 65536):
        for op, dtype in (("sum", torch.float32), ("avg", torch.float32), ("max", torch.int32),
                          ("sum", torch.bfloat16)):
            got = inputs(comm.rank, numel, dtype)
            want = got.clone()
            rc.all_reduce(got, op=op, group=comm, algorithm="two_level")
            rc.all_reduce(want, op=op, group=comm, algorithm="naive")
            assert torch.equal(got, want), f"rank {comm.rank} numel {numel} {op} {dtype}"
            first = got.clone()
            rc.broadcast(first, src=0, group=comm)
            assert torch.equal(first.view(torch.uint8), got.view(torch.uint8)), "ranks differ"


if __name__ == "__main__":
    main()
