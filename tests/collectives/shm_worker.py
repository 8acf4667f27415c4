"""Worker: ringflow collectives over the shared-memory transport against exact answers.

    RINGFLOW_TRANSPORT=shm torchrun --nproc_per_node=3 tests/collectives/shm_worker.py
    RINGFLOW_TRANSPORT=shm mpirun -np 2 python tests/collectives/shm_worker.py

Values are small integers, exact in float32 whatever the summation order, so
every result is compared bitwise with the closed form and with algorithm="naive".
algorithm="staged" is checked against "naive" for every op. Each rank prints "PID <pid>" (the test checks /dev/shm for its leftovers);
rank 0 prints "SHM OK".
"""
from __future__ import annotations

import os
import sys

import torch

import ringflow
from ringflow import collectives as rc


def values(rank: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(numel) % 1000 + 3 * rank).to(dtype)


def check(what: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if not torch.equal(got, want):
        bad = (got != want).nonzero()[:3].flatten().tolist()
        raise AssertionError(f"{what}: wrong at flat indices {bad}")


def one_case(n: int, r: int, numel: int, dtype: torch.dtype) -> None:
    case = f"n={n} numel={numel} {dtype}"
    total = sum(values(k, numel, dtype) for k in range(n)) if n else None
    x = values(r, numel, dtype)
    rc.all_reduce(x)
    check(f"all_reduce {case}", x, total)
    y = values(r, numel, dtype)
    rc.all_reduce(y, algorithm="naive")
    check(f"all_reduce ring vs naive {case}", x, y)

    inp = torch.cat([values(r, numel, dtype) + k for k in range(n)])
    out = torch.empty(numel, dtype=dtype)
    rc.reduce_scatter_tensor(out, inp)
    check(f"reduce_scatter {case}", out, total + n * r)

    gathered = torch.empty(n * numel, dtype=dtype)
    rc.all_gather_into_tensor(gathered, values(r, numel, dtype))
    check(f"all_gather {case}", gathered, torch.cat([values(k, numel, dtype) for k in range(n)]))

    b = values(r, numel, dtype)
    rc.broadcast(b, src=n - 1)
    check(f"broadcast {case}", b, values(n - 1, numel, dtype))
    staged_case(n, r, numel, dtype)


def staged_case(n: int, r: int, numel: int, dtype: torch.dtype) -> None:
    """algorithm="staged" (peers' stages read in place) against naive, every op, in place and
    aliased; RINGFLOW_SHM_STAGE_BYTES smaller than the data makes it run in several rounds."""
    case = f"staged n={n} numel={numel} {dtype}"
    for op in ("sum", "max", "min", "product") + (("avg",) if dtype.is_floating_point else ()):
        x, y = values(r, numel, dtype) % 3 + 1, values(r, numel, dtype) % 3 + 1
        rc.all_reduce(x, op=op, algorithm="staged")
        rc.all_reduce(y, op=op, algorithm="naive")
        check(f"all_reduce {op} {case}", x, y)
    inp = torch.cat([values(r, numel, dtype) + k for k in range(n)])
    out, ref = torch.empty(numel, dtype=dtype), torch.empty(numel, dtype=dtype)
    rc.reduce_scatter_tensor(out, inp, algorithm="staged")
    rc.reduce_scatter_tensor(ref, inp, algorithm="naive")
    check(f"reduce_scatter {case}", out, ref)
    rc.reduce_scatter_tensor(inp[r * numel:(r + 1) * numel], inp, algorithm="staged")  # aliased
    check(f"reduce_scatter in place {case}", inp[r * numel:(r + 1) * numel], ref)
    whole = torch.empty(n * numel, dtype=dtype)
    whole[r * numel:(r + 1) * numel] = values(r, numel, dtype)
    rc.all_gather_into_tensor(whole, whole[r * numel:(r + 1) * numel], algorithm="staged")
    check(f"all_gather in place {case}", whole, torch.cat([values(k, numel, dtype) for k in range(n)]))


def main() -> int:
    comm = ringflow.init(timeout=60)
    print(f"PID {os.getpid()}", flush=True)
    assert comm.transport.name == "shm", f"expected the shm transport, got {comm.transport.name}"
    n, r = comm.size, comm.rank
    for dtype in (torch.float32, torch.int64):
        for numel in (0, 1, n + 1, (1 << 20) + 3):
            one_case(n, r, numel, dtype)
    rc.barrier()
    if r == 0:
        print(f"SHM OK n={n} ring_bytes={comm.transport.ring_bytes} "
              f"stage_bytes={comm.transport.stage.half}", flush=True)
    ringflow.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
