"""The shared-memory transport inside one process: ranks as threads over real /dev/shm rings.

Small rings (8 KiB) force wraparound and messages many times the ring size.
"""
from __future__ import annotations

import glob
import os
import threading
import time

import pytest
import torch
import torch.distributed as dist

from ringflow.transport.base import PeerTimeout, TransportError
from ringflow.transport.shm import ShmTransport
from ringflow.transport.shm.segment import STATE_CLOSED

RING = 8192


def in_threads(fns, timeout: float = 30.0) -> list:
    """Run fns[r]() on one thread each; return results, re-raise the first error."""
    results, errors = [None] * len(fns), [None] * len(fns)

    def body(r):
        try:
            results[r] = fns[r]()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors[r] = e

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), f"a rank is still running after {timeout}s (deadlock?)"
    for e in errors:
        if e is not None:
            raise e
    return results


@pytest.fixture
def group():
    """Factory of n in-process ShmTransports; closes them and checks /dev/shm afterwards."""
    made = []

    def make(n: int, **kw) -> list[ShmTransport]:
        store = dist.HashStore()
        trs = in_threads([lambda r=r: ShmTransport(r, n, store=store, ring_bytes=RING, timeout=10,
                                                   **kw) for r in range(n)])
        made.extend(trs)
        return trs

    yield make
    for tr in made:
        tr.close()
    assert not glob.glob(f"/dev/shm/ringflow-{os.getpid()}-*"), "shared segments left behind"


def pattern(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return (torch.arange(n, dtype=torch.int64) * 7 + seed).to(dtype)


def test_ring_pattern_with_messages_far_larger_than_the_ring(group):
    # Everybody sends right and receives left, waiting on the receive first: the sends
    # can only finish while the receive is being waited on. 1 MiB through 8 KiB rings.
    n, numel = 3, (1 << 18) + 3
    trs = group(n)

    def rank(r):
        tr, out = trs[r], torch.empty(numel)
        sw, rw = tr.sendrecv(pattern(numel, r), (r + 1) % n, out, (r - 1) % n)
        rw.wait(20)
        sw.wait(20)
        return out

    outs = in_threads([lambda r=r: rank(r) for r in range(n)])
    for r in range(n):
        assert torch.equal(outs[r], pattern(numel, (r - 1) % n))


def test_wraparound_with_odd_sizes_and_zero_size(group):
    a, b = group(2)
    sizes = [0, 1, 3, 100, 0, 511, 2047, 5, 0, 1999, 64, 4095] * 3   # sums well past 8 KiB

    def sender():
        for i, s in enumerate(sizes):
            a.isend(pattern(s, i, torch.int64), 1, tag=0).wait(10)

    def receiver():
        got = []
        for s in sizes:
            t = torch.full((s,), -1, dtype=torch.int64)
            b.irecv(t, 0, tag=0).wait(10)
            got.append(t)
        return got

    got = in_threads([sender, receiver])[1]
    for i, (s, t) in enumerate(zip(sizes, got)):
        assert torch.equal(t, pattern(s, i, torch.int64)), f"message {i} of {s} elements"


def test_tags_interleaved_are_non_overtaking_per_tag(group):
    # The sender interleaves tags; the receiver asks for the last tag first. Each tag's
    # messages must still arrive in their posting order (MPI's rule), big ones included.
    a, b = group(2)
    plan = [(i % 3, 5 + 900 * (i % 4)) for i in range(24)]           # (tag, numel)

    def sender():
        works = [a.isend(pattern(s, i), 1, tag=t) for i, (t, s) in enumerate(plan)]
        for w in works:
            w.wait(10)

    def receiver():
        got = {}
        for tag in (2, 0, 1):
            mine = [(i, s) for i, (t, s) in enumerate(plan) if t == tag]
            bufs = [torch.empty(s) for _, s in mine]
            works = [b.irecv(x, 0, tag=tag) for x in bufs]
            for w in reversed(works):
                w.wait(10)
            got.update({i: x for (i, _), x in zip(mine, bufs)})
        return got

    got = in_threads([sender, receiver])[1]
    for i, (_, s) in enumerate(plan):
        assert torch.equal(got[i], pattern(s, i)), f"message {i} overtaken or corrupted"


def test_receive_of_the_wrong_size_fails_clearly_and_the_stream_survives(group):
    a, b = group(2)
    a.isend(torch.ones(10), 1).wait(5)
    a.isend(torch.full((4,), 2.0), 1).wait(5)
    with pytest.raises(TransportError, match="10 x float32.*expects 7 x float32"):
        b.irecv(torch.empty(7), 0).wait(5)
    ok = torch.empty(4)
    b.irecv(ok, 0).wait(5)
    assert torch.equal(ok, torch.full((4,), 2.0))


def test_receive_nobody_sends_times_out_naming_the_peer(group):
    a, b = group(2)
    start = time.monotonic()
    with pytest.raises(PeerTimeout) as info:
        b.irecv(torch.empty(3), 0).wait(0.3)
    assert info.value.peer == 0 and 0.25 < time.monotonic() - start < 3


def test_peer_that_closes_fails_waiters_before_the_timeout(group):
    a, b = group(2)
    w = b.irecv(torch.empty(3), 0)
    a.close()
    start = time.monotonic()
    with pytest.raises(TransportError, match="closed"):
        w.wait(20)
    assert time.monotonic() - start < 2


def test_refuses_non_cpu_and_non_contiguous_tensors(group):
    a, _ = group(2)
    with pytest.raises(ValueError, match="CPU tensors"):
        a.isend(torch.empty(4, device="meta"), 1)
    with pytest.raises(ValueError, match="contiguous"):
        a.isend(torch.empty(4, 4).t(), 1)
    with pytest.raises(ValueError, match="another rank"):
        a.isend(torch.empty(4), 0)


def test_constructor_needs_a_rendezvous_and_a_sane_ring():
    with pytest.raises(ValueError, match="store="):
        ShmTransport(0, 2)
    with pytest.raises(ValueError, match="multiple of 4096"):
        ShmTransport(0, 2, store=dist.HashStore(), ring_bytes=1000)


def test_from_launch_refuses_ranks_on_several_nodes():
    from ringflow.launch import LaunchEnv
    with pytest.raises(ValueError, match="one node.*node_local"):
        ShmTransport.from_launch(LaunchEnv("torchrun", 0, 4, 0, 2), torch.device("cpu"), 10)


def test_irecv_reduce_combines_straight_from_the_ring(group):
    # Larger than the ring (streams in pieces, some wrapping) and, second, drained early
    # because a receive of another tag was waiting behind it: both paths must combine.
    a, b = group(2)
    numel = 5000                                        # 20 KB through an 8 KiB ring
    mine = pattern(numel, 100)

    def add(out, first, arrived):
        torch.add(first, arrived, out=out)

    def sender():
        for tag in (1, 2, 3):
            a.isend(pattern(numel, tag), 1, tag=tag).wait(10)

    def receiver():
        outs = [torch.empty(numel) for _ in range(3)]
        w1 = b.irecv_reduce(outs[0], mine, 0, 1, add)
        w3 = b.irecv(outs[2], 0, tag=3)                 # tag 2 must be drained to reach it
        w1.wait(10)
        w3.wait(10)
        b.irecv_reduce(outs[1], mine, 0, 2, add).wait(10)
        return outs

    outs = in_threads([sender, receiver])[1]
    assert torch.equal(outs[0], mine + pattern(numel, 1))
    assert torch.equal(outs[1], mine + pattern(numel, 2))
    assert torch.equal(outs[2], pattern(numel, 3))


def test_forked_child_exiting_does_not_close_the_parents_rings(group):
    # DataLoader workers are forked after init; their exit handlers must leave our rings alone.
    a, b = group(2)
    pid = os.fork()
    if pid == 0:
        import atexit
        atexit._run_exitfuncs()
        os._exit(0)
    os.waitpid(pid, 0)
    assert a.own.state.value != STATE_CLOSED and b.own.state.value != STATE_CLOSED
    x = torch.empty(3)
    sw, rw = a.sendrecv(torch.arange(3.0), 1, torch.empty(3), 1)
    b.sendrecv(torch.arange(3.0) + 1, 0, x, 0)[1].wait(5)
    rw.wait(5)
    sw.wait(5)
    assert torch.equal(x, torch.arange(3.0))


class _Told:
    """A handshake whose all-gather returns what the other rank is scripted to say."""

    def __init__(self, rank: int, other: str):
        self.rank, self.other, self.said = rank, other, None

    def allgather(self, value: str) -> list[str]:
        self.said = value
        return [value, self.other] if self.rank == 0 else [self.other, value]

    def barrier(self) -> None:
        raise AssertionError("no barrier after a failed handshake")


def test_a_rank_without_shared_memory_fails_every_rank_alike(tmp_path, monkeypatch):
    """Reserving the segment up front (no SIGBUS later); a rank that cannot tells its peers."""
    from ringflow.transport.shm.bootstrap import map_segments
    from ringflow.transport.shm import ShmUnavailable
    monkeypatch.setenv("RINGFLOW_SHM_DIR", str(tmp_path))
    told = _Told(0, "")
    with pytest.raises(ShmUnavailable, match="cannot reserve"):    # 1 TiB: more than any disk here
        map_segments(told, 0, 2, ring_bytes=1 << 40)
    assert told.said.startswith("!cannot reserve") and not os.listdir(tmp_path)
    with pytest.raises(ShmUnavailable, match="rank 1: no space left"):
        map_segments(_Told(0, "!no space left"), 0, 2, ring_bytes=RING)
    assert not os.listdir(tmp_path)                       # our own segment is gone as well


def test_node_board_carries_fingerprints_between_ranks_and_times_out_alone():
    """The RINGFLOW_DEBUG board the torch and MPI transports map on one node (shm.node)."""
    from ringflow.transport.shm.node import NodeShm
    from ringflow.transport.shm.bootstrap import StoreExchange
    store = dist.HashStore()
    nodes = in_threads([lambda r=r: NodeShm(StoreExchange(store, "t/board", r, 2, 10), r, 2,
                                            spin=0.0) for r in range(2)])
    boards = [node.board for node in nodes]
    def rank(r):
        for seq in range(5):                  # more calls than slots: slots are reused safely
            boards[r].post(seq, [r, seq, 7])
            work = boards[r].expect(1 - r, seq, 3)
            work.wait(10)
            assert work.row == [1 - r, seq, 7]
    in_threads([lambda: rank(0), lambda: rank(1)])
    boards[0].post(5, [0, 5, 7])              # rank 1 never posts #5
    with pytest.raises(PeerTimeout, match="rank 1's fingerprint of collective #5 timed out"):
        boards[0].expect(1, 5, 3).wait(0.2)
    for node in nodes:
        node.close()


def test_ranks_bound_to_one_core_each_are_not_oversubscribed(monkeypatch, tmp_path):
    """mpirun binds each rank to its own core: the node's ranks are counted against the union
    of their affinities, not against this process's single core."""
    from ringflow.transport.shm import bootstrap
    from ringflow.transport.shm.bootstrap import StoreExchange, map_segments
    monkeypatch.setenv("RINGFLOW_SHM_DIR", str(tmp_path))
    monkeypatch.setattr(bootstrap, "affinity",
                        lambda: [int(threading.current_thread().name[-1])])   # core = rank
    store = dist.HashStore()

    def rank(r):
        threading.current_thread().name = f"rank{r}"
        own, peers, _, _, cpus = map_segments(StoreExchange(store, "t/bind", r, 2, 10), r, 2, RING)
        for seg in [own, *peers.values()]:
            seg.close()
        return cpus
    assert in_threads([lambda: rank(0), lambda: rank(1)]) == [2, 2]
