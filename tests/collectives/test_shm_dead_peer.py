"""A rank of a shared-memory world dies: the others must fail fast, naming it, and leak nothing.
Ranks that stage different sizes for one staged collective fail alike, naming both sizes.

Ranks are processes of a forkserver (torch is imported once, and never forked after its
thread pools started) meeting at a TCPStore in the test; each writes "<kind> <pid> <text>"
to a file of its own.
"""
from __future__ import annotations

import datetime
import glob
import multiprocessing as mp
import os
import time

import pytest
import torch
import torch.distributed as dist

from tests.launchers import free_port

pytestmark = pytest.mark.launched


def rank_main(rank: int, size: int, port: int, out, algorithm: str) -> None:
    from ringflow import collectives as rc
    from ringflow.collectives import CollectiveError, CollectiveTimeout, Communicator
    from ringflow.transport.shm import ShmTransport
    store = dist.TCPStore("127.0.0.1", port, size, False, datetime.timedelta(seconds=20))
    tr = ShmTransport(rank, size, store=store, timeout=20)
    comm = Communicator(tr, timeout=30)

    def report(kind: str, text: str) -> None:
        with open(out / f"rank{rank}", "w") as f:
            f.write(f"{kind} {os.getpid()} {text}")

    report("ready", "")         # rank 2 leaves it at that
    if rank == size - 1:
        os._exit(0)                          # a crash: no atexit, no close, its state says "open"
    start = time.monotonic()
    try:
        rc.all_reduce(torch.ones((1 << 18) + 3), group=comm, algorithm=algorithm)
        report("finished", "all_reduce succeeded without the dead rank")
    except CollectiveTimeout as e:
        report("timeout", str(e))
    except CollectiveError as e:
        report("error", f"{time.monotonic() - start:.2f}s {e.__cause__}")
    comm.close()
    tr.close()


def run_world(target, size: int, *args) -> None:
    """``target(rank, size, port, *args)`` in ``size`` forkserver processes meeting at a
    TCPStore held here; each must exit within 40 s."""
    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, size, True, datetime.timedelta(seconds=20),
                          wait_for_workers=False)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "ringflow.collectives", "ringflow.transport.shm"])
    procs = [ctx.Process(target=target, args=(r, size, port, *args)) for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(40)
        assert p.exitcode is not None, "a rank hangs instead of failing"
    del store


@pytest.mark.timeout(60)
@pytest.mark.parametrize("algorithm", ["ring", "staged"])   # messages; stages read in place
def test_survivors_fail_fast_when_a_rank_dies(tmp_path, algorithm):
    size = 3
    run_world(rank_main, size, tmp_path, algorithm)
    outcomes = [(tmp_path / f"rank{r}").read_text().split(" ", 2) for r in range(size)]
    assert outcomes[2][0] == "ready", outcomes
    for rank, (kind, _, text) in enumerate(outcomes[:2]):
        assert kind == "error", f"rank {rank}: {kind}: {text}"
        assert float(text.split("s ")[0]) < 10, f"rank {rank} took too long to notice: {text}"
    # Rank 0 waits on the dead rank 2 and sees its pid gone; rank 1 then sees rank 0 leave.
    assert "peer rank 2" in outcomes[0][2] and "exited" in outcomes[0][2], outcomes[0]
    assert "closed" in outcomes[1][2] or "exited" in outcomes[1][2], outcomes[1]
    assert not [f for _, pid, _ in outcomes for f in glob.glob(f"/dev/shm/ringflow-{pid}-*")]


def mismatch_main(rank: int, size: int, port: int, out) -> None:
    from ringflow import collectives as rc
    from ringflow.collectives import CollectiveError, Communicator
    from ringflow.transport.shm import ShmTransport
    store = dist.TCPStore("127.0.0.1", port, size, False, datetime.timedelta(seconds=20))
    tr = ShmTransport(rank, size, store=store, timeout=20)
    comm = Communicator(tr, timeout=30)
    try:
        rc.all_reduce(torch.ones(100 + rank), group=comm, algorithm="staged")
        text = "finished: a staged all_reduce of different sizes succeeded"
    except CollectiveError as e:
        text = f"error {e.__cause__}"
    with open(out / f"rank{rank}", "w") as f:
        f.write(text)
    comm.close()
    tr.close()


@pytest.mark.timeout(60)
def test_staged_collective_of_different_sizes_fails_on_every_rank(tmp_path):
    size = 2
    run_world(mismatch_main, size, tmp_path)
    for rank in range(size):
        text = (tmp_path / f"rank{rank}").read_text()
        assert text.startswith("error") and "400" in text and "404" in text, f"rank {rank}: {text}"
