"""Worker: ringflow's errors reach the user through torch.distributed's API, with ringflow's text.

    torchrun --nproc_per_node=2 tests/backend/errors_worker.py mismatch   # rank 1 broadcasts
    torchrun --nproc_per_node=2 tests/backend/errors_worker.py timeout    # rank 1 stays away

"bad" input (every rank alike) is refused on the calling rank before anything moves; then one
mode breaks the group on purpose, so it runs last. Prints "<MODE> OK rank R: <message>".
"""
from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist

from ringflow.collectives import CollectiveError, CollectiveMismatch, CollectiveTimeout
from tests.backend.common import join

TIMEOUT = 3.0


def expect(kind, words, fn) -> str:
    try:
        fn()
    except kind as e:
        missing = [w for w in words if w not in str(e)]
        assert not missing, f"{kind.__name__} lacks {missing}: {e}"
        return str(e)
    raise AssertionError(f"expected {kind.__name__} with {words}; nothing was raised")


def bad(r: int) -> None:
    """Refused at the boundary on every rank: no message is sent, the group stays usable."""
    expect(TypeError, ["BAND", "integer dtype"],
           lambda: dist.all_reduce(torch.ones(3), op=dist.ReduceOp.BAND))
    expect(ValueError, ["not divisible"], lambda: dist.reduce_scatter_tensor(
        torch.ones(2), torch.ones(2 * dist.get_world_size() + 1)))
    t = torch.ones(4)
    dist.all_reduce(t)
    assert torch.equal(t, torch.full((4,), float(dist.get_world_size()))), t
    print(f"BAD OK rank {r}", flush=True)


def mismatch(r: int) -> None:
    """Rank 1 broadcasts where the others all-reduce: every rank gets ringflow's error from wait()
    and from the future: CollectiveMismatch with RINGFLOW_DEBUG=1 (fingerprints), else the
    mismatch or a timeout naming the peer."""
    kinds = (CollectiveMismatch,) if os.environ.get("RINGFLOW_DEBUG") == "1" else \
        (CollectiveMismatch, CollectiveTimeout)     # without fingerprints shm may just wait
    t = torch.ones(64)
    work = (dist.broadcast(t, src=0, async_op=True) if r == 1 else
            dist.all_reduce(t, async_op=True))
    msg = expect(kinds, ["rank"], work.wait)
    expect(kinds, ["rank"], lambda: work.get_future().wait())
    expect(CollectiveError, ["rank"], lambda: dist.all_reduce(torch.ones(2)))   # group broken
    print(f"MISMATCH OK rank {r}: {msg.splitlines()[0]}", flush=True)


def timeout(r: int) -> None:
    """Rank 1 never calls: rank 0's all_reduce fails within the timeout naming rank 1."""
    if r == 1:
        time.sleep(TIMEOUT * 3)
        print(f"TIMEOUT OK rank {r}: stayed away", flush=True)
        return
    t0 = time.monotonic()
    msg = expect(CollectiveTimeout, ["timed out", "rank 1"], lambda: dist.all_reduce(torch.ones(8)))
    took = time.monotonic() - t0
    assert took < TIMEOUT * 2.5, f"the timeout took {took:.1f}s"
    print(f"TIMEOUT OK rank {r} after {took:.1f}s: {msg.splitlines()[0]}", flush=True)


def main(mode: str) -> None:
    join("ringflow", timeout=TIMEOUT)
    r = dist.get_rank()
    bad(r)
    {"mismatch": mismatch, "timeout": timeout, "bad": lambda r: None}[mode](r)
    sys.stdout.flush()
    os._exit(0)      # the group is broken on purpose; see train_worker.leave for why not finalize


if __name__ == "__main__":
    main(sys.argv[1])
