"""Every algorithm of select.ALGORITHMS against the naive oracle, over the threads transport.

Inputs are small integers (exact in every dtype), so sums are exact and any
difference is a bug; every rank must also end with bitwise-identical bytes.
"""
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives import select
from ringflow.collectives.threads import run_ranks

SIZES = (0, 1, 3, 17, 1000)          # empty, fewer than ranks, not divisible, a few slices
OPS = ("sum", "avg", "max", "min", "product", "band", "bor", "bxor")


def data(rank: int, numel: int, dtype, op: str) -> torch.Tensor:
    i = torch.arange(numel, dtype=torch.int64)
    if op == "product":                         # powers of two: products stay exact
        return torch.where((i + rank) % 3 == 0, 2, 1).to(dtype)
    return ((i * 7 + rank * 5) % 11 - 5).to(dtype)


def run_all_reduce(n, numel, dtype, op, alg, local_size=None):
    def body(comm):
        t = data(comm.rank, numel, dtype, op)
        rc.all_reduce(t, op=op, group=comm, algorithm=alg)
        return t
    kwargs = {"local_size": local_size} if local_size else {}
    return run_ranks(n, body, timeout=30, **kwargs)


def assert_same_everywhere(outs, expected):
    for r, t in enumerate(outs):
        assert torch.equal(t, expected), f"rank {r}: {t[:8]} != {expected[:8]}"
        assert t.view(torch.uint8).equal(outs[0].view(torch.uint8)), f"rank {r} differs bitwise"


@pytest.mark.parametrize("alg", ["ring", "rd", "rhd", "direct", "two_level", "fp32acc"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_all_reduce_matches_oracle(alg, n):
    for numel in SIZES:
        for op in OPS:
            dtype = torch.float32 if op == "avg" else torch.int32
            expected = run_all_reduce(n, numel, dtype, op, "naive")[0]
            assert_same_everywhere(run_all_reduce(n, numel, dtype, op, alg), expected)


@pytest.mark.parametrize("alg", ["ring", "rd", "rhd", "direct", "two_level", "fp32acc"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int8])
def test_all_reduce_dtypes(alg, dtype):
    expected = run_all_reduce(3, 40, dtype, "sum", "naive")[0]
    assert_same_everywhere(run_all_reduce(3, 40, dtype, "sum", alg), expected)


@pytest.mark.parametrize("n,local", [(4, 2), (6, 3), (6, 2), (8, 4), (4, 1)])
def test_two_level_on_several_nodes(n, local):
    for numel in (0, 5, 999):
        expected = run_all_reduce(n, numel, torch.float32, "sum", "naive")[0]
        assert_same_everywhere(run_all_reduce(n, numel, torch.float32, "sum", "two_level", local),
                               expected)


@pytest.mark.parametrize("n,local,in_flight", [(4, 2, 2), (6, 3, 2), (6, 2, 2), (4, 2, 1),
                                               (6, 2, 3)])
def test_two_level_overlapped_pieces(monkeypatch, n, local, in_flight):
    """Pieces cross the nodes on helper threads (``in_flight`` at once, each on its own tags)
    while the node works on the next ones: the result is still exact and bitwise the same on
    every rank, for every op."""
    from ringflow.collectives import hierarchical
    monkeypatch.setattr(hierarchical, "PIECE_BYTES", 64)     # 999 floats: MAX_PIECES pieces
    monkeypatch.setattr(hierarchical, "IN_FLIGHT", in_flight)
    for numel, op in ((999, "sum"), (999, "avg"), (130, "max"), (4001, "sum")):
        dtype = torch.float32 if op == "avg" else torch.int32
        expected = run_all_reduce(n, numel, dtype, op, "naive")[0]
        assert_same_everywhere(run_all_reduce(n, numel, dtype, op, "two_level", local), expected)


def test_cross_streams_are_the_same_ranks_on_tags_apart():
    """two_level's cross-node streams: the same peers, tags at least 8 apart (the pipelined
    ring's lanes of one stream never reach the next stream's tag)."""
    from ringflow.collectives import Communicator, hierarchical
    from ringflow.transport.local import LocalTransport
    comm = Communicator(LocalTransport.group(4)[1], timeout=5.0, local_size=2)
    streams = hierarchical.cross_streams(comm, 3)
    assert streams[0] is hierarchical.node_groups(comm)[1]
    assert all(s.ranks == [1, 3] for s in streams)
    tags = sorted(s.tag for s in streams)
    assert all(b - a >= 8 for a, b in zip(tags, tags[1:])), tags
    comm.close()


def test_fp32acc_rounds_once():
    """bf16 values whose running sum loses bits at each hop: fp32acc rounds only the total."""
    n, numel = 4, 64
    vals = [torch.full((numel,), v, dtype=torch.bfloat16) for v in (256.0, 1.0, 1.0, 1.0)]

    def body(alg):
        def f(comm):
            t = vals[comm.rank].clone()
            rc.all_reduce(t, group=comm, algorithm=alg)
            return t
        return run_ranks(n, f, timeout=30)
    exact = torch.full((numel,), 259.0).to(torch.bfloat16)      # one rounding of the exact sum
    assert_same_everywhere(body("fp32acc"), exact)
    ring_out = body("ring")[0]
    assert not torch.equal(ring_out, exact), "the ring was expected to round partial sums"


@pytest.mark.parametrize("alg", ["ring", "direct", "fp32acc", "naive"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_reduce_scatter_out_of_place_and_in_place(alg, n):
    for m in (0, 1, 7):
        def body(comm):
            inp = data(comm.rank, m * n, torch.float32, "sum")
            keep = inp.clone()
            out = torch.empty(m)
            rc.reduce_scatter_tensor(out, inp, group=comm, algorithm=alg)
            assert torch.equal(inp, keep), "reduce_scatter must not modify its input"
            inplace = inp[comm.rank * m:(comm.rank + 1) * m]
            rc.reduce_scatter_tensor(inplace, inp, group=comm, algorithm=alg)
            return out, inplace.clone()
        outs = run_ranks(n, body, timeout=30)
        total = sum(data(r, m * n, torch.float32, "sum") for r in range(n))
        for r, (out, inplace) in enumerate(outs):
            assert torch.equal(out, total[r * m:(r + 1) * m])
            assert torch.equal(inplace, out)


@pytest.mark.parametrize("alg", ["tree", "naive"])
def test_reduce_and_broadcast_trees(alg):
    for n in (1, 2, 3, 5):
        for root in range(n):
            def body(comm):
                t = data(comm.rank, 10, torch.int64, "sum")
                before = t.clone()
                rc.reduce(t, dst=root, group=comm, algorithm=alg)
                if comm.rank != root:
                    assert torch.equal(t, before), "reduce changed a non-root buffer"
                rc.broadcast(t, src=root, group=comm, algorithm=alg)
                return t
            outs = run_ranks(n, body, timeout=30)
            assert_same_everywhere(outs, sum(data(r, 10, torch.int64, "sum") for r in range(n)))


def test_every_registered_algorithm_is_covered_here_or_native():
    # "staged" needs shared memory: tests/collectives/shm_worker.py checks it against naive
    covered = {"ring", "rd", "rhd", "direct", "two_level", "fp32acc", "naive", "tree", "native",
               "staged"}
    for coll, table in select.ALGORITHMS.items():
        assert set(table) <= covered, f"{coll}: untested algorithms {set(table) - covered}"


@pytest.mark.parametrize("alg", ["ring", "direct", "naive"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_all_gather_out_of_place_and_in_place(alg, n):
    for m in (0, 1, 5):
        def body(comm):
            inp = data(comm.rank, m, torch.int64, "sum")
            out = torch.empty(m * n, dtype=torch.int64)
            rc.all_gather_into_tensor(out, inp, group=comm, algorithm=alg)
            inplace = torch.zeros(m * n, dtype=torch.int64)
            inplace[comm.rank * m:(comm.rank + 1) * m] = inp
            rc.all_gather_into_tensor(inplace, inplace[comm.rank * m:(comm.rank + 1) * m],
                                      group=comm, algorithm=alg)
            return out, inplace
        want = torch.cat([data(r, m, torch.int64, "sum") for r in range(n)])
        for out, inplace in run_ranks(n, body, timeout=30):
            assert torch.equal(out, want) and torch.equal(inplace, want)


class _ReduceOnArrival:
    """Work of a fake ``irecv_reduce``: finish the receive, then combine (what shm does in place)."""

    def __init__(self, work, out, first, landing, combine):
        self.work, self.out, self.first, self.landing, self.combine = work, out, first, landing, combine

    def wait(self, timeout=None):
        self.work.wait(timeout)
        self.combine(self.out, self.first, self.landing)

    def is_completed(self):
        return self.work.is_completed()


def test_ring_uses_a_transport_that_reduces_on_arrival(monkeypatch):
    from ringflow.transport.local import LocalTransport
    calls = []

    def irecv_reduce(self, out, first, src, tag, combine, stamp=None):
        calls.append(out.numel())
        landing = torch.empty_like(out)
        return _ReduceOnArrival(self.irecv(landing, src, tag, stamp), out, first, landing, combine)
    monkeypatch.setattr(LocalTransport, "irecv_reduce", irecv_reduce, raising=False)
    for n in (2, 3):
        expected = run_all_reduce(n, 1001, torch.float32, "sum", "naive")[0]
        assert_same_everywhere(run_all_reduce(n, 1001, torch.float32, "sum", "ring"), expected)
        for m in (0, 7):
            def body(comm):
                out = torch.empty(m)
                rc.reduce_scatter_tensor(out, data(comm.rank, m * n, torch.float32, "sum"),
                                         group=comm, algorithm="ring")
                return out
            total = sum(data(r, m * n, torch.float32, "sum") for r in range(n))
            for r, out in enumerate(run_ranks(n, body, timeout=30)):
                assert torch.equal(out, total[r * m:(r + 1) * m])
    assert calls, "the fused receive-and-reduce path was not taken"
