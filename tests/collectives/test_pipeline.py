"""The pipelined ring (collectives/pipeline.py) against a single-process model of the plain ring.

The model sums chunk c starting at rank c+1, each rank adding its own block in front of the
partial that arrives (``reduce_out(dst, mine, arrived)``), exactly the plain ring's order. The
pipelined ring must give those bytes for every channel count and slice size (pieces move on
their own, so a wrong piece, order or landing slot shows up as different bits), for any numel,
every dtype and op, world size 1, and leave every rank bitwise identical. Thread ranks here;
gloo by a launched worker (pipeline_worker.py).
"""
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives import pipeline
from ringflow.collectives.chunking import chunk_bounds
from ringflow.collectives.ops import ReduceOp, reduce_out
from ringflow.collectives.threads import run_ranks
from tests.launchers import run_torchrun

pytestmark = pytest.mark.timeout(300)
CONFIGS = [(1, 0), (1, 12), (2, 0), (2, 40), (3, 8)]     # (channels, slice bytes; 0: whole)


def ring_model(xs: list[torch.Tensor], op: ReduceOp) -> torch.Tensor:
    """The plain ring's all-reduce of ``xs`` (one tensor per rank), computed in one process."""
    n, out = len(xs), torch.empty_like(xs[0])
    for c, (a, b) in enumerate(chunk_bounds(out.numel(), n)):
        acc = xs[(c + 1) % n][a:b].clone()
        for k in range(2, n + 1):
            mine = xs[(c + k) % n][a:b]
            reduce_out(acc, mine, acc, op)
        if op is ReduceOp.AVG and n > 1 and acc.numel():
            acc.div_(n)
        out[a:b] = acc
    return out


def inputs(n: int, numel: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Random values whose float sums depend on the order (integers: small, no overflow)."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return [(torch.randn(numel, generator=g) * 10 ** torch.randn(numel, generator=g))
                .to(dtype) for _ in range(n)]
    return [torch.randint(-3, 4, (numel,), generator=g).to(dtype) for _ in range(n)]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.view(torch.uint8).equal(b.view(torch.uint8))


def run_pipelined(xs, op, channels, slice_bytes):
    def body(comm):
        t = xs[comm.rank].clone()
        pipeline.all_reduce(comm, t, op, channels=channels, slice_bytes=slice_bytes)
        return t
    return run_ranks(len(xs), body, timeout=60)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_channel_and_slice_gives_the_plain_rings_bits(n):
    for numel in (0, 1, n - 1, 7, 101):
        xs = inputs(n, numel, torch.float32, seed=numel)
        for op in (ReduceOp.SUM, ReduceOp.AVG):
            want = ring_model(xs, op)
            for channels, slice_bytes in CONFIGS:
                outs = run_pipelined(xs, op, channels, slice_bytes)
                for r, got in enumerate(outs):
                    assert same_bits(got, want), (n, numel, op, channels, slice_bytes, r)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16, torch.int32,
                                   torch.int64, torch.uint8])
def test_every_dtype_and_op(dtype):
    ops = [ReduceOp.SUM, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT]
    ops += [ReduceOp.AVG] if dtype.is_floating_point else []
    xs = inputs(3, 53, dtype, seed=3)
    if dtype == torch.uint8:
        xs = [x.abs() for x in inputs(3, 53, torch.int32, seed=3)]
        xs = [x.to(torch.uint8) for x in xs]
    for op in ops:
        want = ring_model(xs, op)
        for got in run_pipelined(xs, op, 2, 6):
            assert same_bits(got, want), (dtype, op)


def test_the_ring_verb_runs_pipelined_and_a_window_smaller_than_a_step_holds():
    """rc.all_reduce(algorithm="ring") over threads goes through the pipeline (RINGFLOW_SLICE_BYTES
    cuts it into more pieces than the landing window has slots), as does two_level's halves."""
    xs = inputs(4, 1000, torch.float32, seed=9)
    want = ring_model(xs, ReduceOp.SUM)

    def body(comm):
        t = xs[comm.rank].clone()
        rc.all_reduce(t, group=comm, algorithm="ring")
        return t
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RINGFLOW_SLICE_BYTES", "64")        # 250 elems a chunk: 16 pieces a step
        calls, real_run = [], pipeline.run
        mp.setattr(pipeline, "run", lambda *a, **k: calls.append(a[4]) or real_run(*a, **k))
        outs = run_ranks(4, body, timeout=60)
    assert calls == [range(6)] * 4 and all(same_bits(got, want) for got in outs)


def test_halves_reduce_scatter_then_all_gather_match_the_model():
    """ring.reduce_scatter_ and ring.all_gather_ (two_level's halves) run pipelined as well."""
    from ringflow.collectives import ring
    xs = inputs(3, 50, torch.float32, seed=5)
    want = ring_model(xs, ReduceOp.SUM)

    def body(comm):
        t = xs[comm.rank].clone()
        bounds = chunk_bounds(t.numel(), comm.size)
        ring.reduce_scatter_(comm, t, bounds, ReduceOp.SUM)
        a, b = bounds[comm.rank]
        mine = t[a:b].clone()
        ring.all_gather_(comm, t, bounds)
        return mine, t
    for r, (mine, full) in enumerate(run_ranks(3, body, timeout=60)):
        a, b = chunk_bounds(50, 3)[r]
        assert same_bits(mine, want[a:b]) and same_bits(full, want)


def test_bad_channels_or_slice_are_refused_with_the_fix():
    def body(comm):
        with pytest.raises(ValueError, match="channels >= 1"):
            pipeline.all_reduce(comm, torch.ones(8), ReduceOp.SUM, channels=-1)
        with pytest.raises(ValueError, match="slice_bytes >= 0"):
            pipeline.all_reduce(comm, torch.ones(8), ReduceOp.SUM, slice_bytes=-4)
    run_ranks(2, body, timeout=30)


@pytest.mark.launched
@pytest.mark.parametrize("n", [2, 3])
def test_gloo_pipelined_ring_matches_the_model(n):
    _, out = run_torchrun(n, "tests/collectives/pipeline_worker.py", timeout=180)
    assert out.count("pipeline ok") == n, out[-3000:]
