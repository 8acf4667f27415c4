"""Worker: bad input, mismatched calls and a silent peer each end in a clear error, never a hang.

    torchrun --nproc_per_node=2 tests/collectives/errors_worker.py bad    # then the timeout
    RINGFLOW_DEBUG=1 torchrun --nproc_per_node=2 tests/collectives/errors_worker.py mismatch

Each check prints "<CHECK> OK rank R: ..." lines that the pytest side reads. The
timeout runs last in "bad" mode: after it the transport is (rightly) unusable.
"""
from __future__ import annotations

import sys
import time

import torch

import ringflow
from ringflow import collectives as rc

TIMEOUT = 2.0


def expect(kind, words, fn) -> str:
    """Run ``fn``; it must raise ``kind`` with every one of ``words`` in the message."""
    try:
        fn()
    except kind as e:
        missing = [w for w in words if w not in str(e)]
        assert not missing, f"{kind.__name__} lacks {missing}: {e}"
        return str(e)
    raise AssertionError(f"expected {kind.__name__} containing {words}, nothing was raised")


def bad(comm) -> None:
    """Every rank makes the same bad call; each is refused at the boundary, on the calling rank."""
    n = comm.size
    x = torch.ones(6)
    expect(TypeError, ["AVG", "floating"], lambda: rc.all_reduce(torch.ones(4, dtype=torch.int32),
                                                                  op=rc.ReduceOp.AVG))
    expect(TypeError, ["complex64", "not supported"],
           lambda: rc.all_reduce(torch.ones(4, dtype=torch.complex64)))
    expect(ValueError, ["unknown reduce op", "median"], lambda: rc.all_reduce(x, op="median"))
    expect(ValueError, ["output has 5 elements", f"expected {6 // n}"] if 6 % n == 0 else
           ["output has 5 elements"], lambda: rc.reduce_scatter_tensor(torch.ones(5), x))
    expect(ValueError, [f"expected {6 * n}"], lambda: rc.all_gather_into_tensor(torch.ones(5), x))
    expect(ValueError, ["share dtype"], lambda: rc.all_gather_into_tensor(
        torch.ones(6 * n, dtype=torch.float64), x))
    expect(ValueError, [f"src={n}", "out of range", f"0..{n - 1}"], lambda: rc.broadcast(x, src=n))
    expect(ValueError, ["dst=-1", "out of range"], lambda: rc.reduce(x, dst=-1))
    expect(ValueError, ["contiguous"], lambda: rc.all_reduce(torch.ones(4, 4).t()))
    expect(ValueError, ["algorithm 'bogus'"], lambda: rc.all_reduce(x, algorithm="bogus"))
    expect(TypeError, ["Communicator"], lambda: rc.all_reduce(x, group="world"))
    expect(ValueError, ["meta"], lambda: rc.all_reduce(torch.ones(4, device="meta")))
    # a device the transport cannot move (here the only non-cpu device there is): its own check
    expect(ValueError, [comm.transport.name.split("/")[0], "meta", "cpu"],
           lambda: comm.transport.check_tensor(torch.ones(4, device="meta")))
    rc.all_reduce(x)                                    # nothing was sent: the group is still in step
    assert torch.equal(x, torch.full((6,), float(n))), x
    print(f"BAD OK rank {comm.rank}: 14 bad calls refused, next all_reduce correct", flush=True)


def mismatch(comm) -> None:
    """RINGFLOW_DEBUG=1: rank 0 all-reduces 8 floats, the others all-gather or all-reduce 9."""
    assert comm.debug, "run with RINGFLOW_DEBUG=1"
    field = sys.argv[2] if len(sys.argv) > 2 else "collective"
    if comm.rank == 0 or field == "numel":
        call = lambda: rc.all_reduce(torch.ones(8 + (comm.rank > 0)))  # noqa: E731
    else:
        call = lambda: rc.all_gather_into_tensor(torch.ones(8 * comm.size), torch.ones(8))  # noqa
    msg = expect(rc.CollectiveMismatch, [f"mismatch in {field}"], call)
    print(f"MISMATCH OK rank {comm.rank}: {msg}", flush=True)


def timeout(comm) -> None:
    """Rank 1 never calls: rank 0's all_reduce must fail after TIMEOUT s, naming call, step, peer."""
    if comm.rank != 0:
        time.sleep(TIMEOUT + 1.5)                       # outlive rank 0's wait, then leave quietly
        print(f"TIMEOUT OK rank {comm.rank}: stayed silent", flush=True)
        return
    start = time.monotonic()
    msg = expect(rc.CollectiveTimeout, ["all_reduce", "step", "rank 1", "timed out"],
                 lambda: rc.all_reduce(torch.ones(1000), algorithm="ring"))   # auto's pick on
    #   one MPI node is MPI's own call, which has no step to name
    took = time.monotonic() - start
    assert TIMEOUT - 0.2 < took < TIMEOUT + 1, f"timeout fired after {took:.1f}s, not ~{TIMEOUT}s"
    print(f"TIMEOUT OK rank 0 after {took:.1f}s: {msg}", flush=True)


def main() -> int:
    mode = sys.argv[1]
    comm = ringflow.init(timeout=TIMEOUT if mode == "bad" else 30)
    if mode == "bad":
        bad(comm)
        timeout(comm)
    else:
        mismatch(comm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
