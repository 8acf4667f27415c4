"""The two-rank ring as one exchange (ring._pair_exchange) against the plain ring's model.

Two ranks' ring all-reduce up to ring.PAIR_EXCHANGE_BYTES swaps whole buffers instead of
running two steps; it must still give the ring's bytes on both ranks: every dtype and op, any
numel (0, 1, odd), and the ring's operand order, which a NaN met by a NaN shows (x86 keeps the
first operand's payload, so a wrong order changes bits there). Thread ranks here; gloo in
pipeline_worker.py (launched).
"""
import pytest
import torch

from ringflow.collectives import pipeline, ring
from ringflow.collectives.ops import ReduceOp
from ringflow.collectives.threads import run_ranks
from tests.collectives.test_pipeline import inputs, ring_model, same_bits

pytestmark = pytest.mark.timeout(120)
OPS = [ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT]


def run_ring(xs, op):
    def body(comm):
        t = xs[comm.rank].clone()
        ring.all_reduce(comm, t, op)
        return t
    return run_ranks(2, body, timeout=60)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                   torch.int32, torch.uint8])
def test_pair_exchange_gives_the_rings_bits_on_both_ranks(dtype):
    ops = OPS if dtype.is_floating_point else [o for o in OPS if o is not ReduceOp.AVG]
    for numel in (0, 1, 2, 7, 101, 1000):
        xs = inputs(2, numel, torch.int32 if dtype == torch.uint8 else dtype, seed=numel)
        xs = [x.abs().to(dtype) for x in xs] if dtype == torch.uint8 else xs
        for op in ops:
            want = ring_model(xs, op)
            for r, got in enumerate(run_ring(xs, op)):
                assert same_bits(got, want), (dtype, numel, op, r)


def test_pair_exchange_keeps_the_rings_operand_order():
    """Both inputs NaN with different payloads: the ring's chunk 0 is x0 + x1, chunk 1 x1 + x0."""
    a = torch.tensor([0x7FC00001] * 6, dtype=torch.int32).view(torch.float32)
    b = torch.tensor([0x7FC00002] * 6, dtype=torch.int32).view(torch.float32)
    want = ring_model([a, b], ReduceOp.SUM)
    for got in run_ring([a, b], ReduceOp.SUM):
        assert same_bits(got, want)


def test_two_ranks_exchange_up_to_the_threshold_and_pipeline_above(monkeypatch):
    """Below PAIR_EXCHANGE_BYTES no pipelined step runs; above it the pipelined ring does; three
    ranks always run the ring."""
    calls = []
    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run",
                        lambda *a, **k: calls.append(a[0].size) or real_run(*a, **k))
    monkeypatch.setattr(ring, "PAIR_EXCHANGE_BYTES", 400)
    for n, numel, runs in ((2, 100, []), (2, 101, [2, 2]), (3, 10, [3, 3, 3])):
        calls.clear()
        xs = inputs(n, numel, torch.float32, seed=n)
        want = ring_model(xs, ReduceOp.SUM)

        def body(comm):
            t = xs[comm.rank].clone()
            ring.all_reduce(comm, t, ReduceOp.SUM)
            return t
        outs = run_ranks(n, body, timeout=60)
        assert sorted(calls) == runs and all(same_bits(o, want) for o in outs), (n, numel)


def test_pair_exchange_is_on_the_timeline(tmp_path, monkeypatch):
    """RINGFLOW_TRACE: the exchange is a span inside the call, its wait inside it."""
    import json
    from ringflow import collectives as rc
    monkeypatch.setenv("RINGFLOW_TRACE", str(tmp_path))
    run_ranks(2, lambda comm: rc.all_reduce(torch.ones(64), group=comm, algorithm="ring"))
    for rank in (0, 1):
        events = json.loads((tmp_path / f"trace-rank{rank}.json").read_text())["traceEvents"]
        (call,) = [e for e in events if e["name"] == "all_reduce #0"]
        (pair,) = [e for e in events if e["name"] == "pair exchange"]
        waits = [e for e in events if e["name"] == f"wait rank {1 - rank}"]
        assert pair["args"] == {"bytes": 256, "peer": 1 - rank}
        end = call["ts"] + call["dur"] + 1e-3
        assert call["ts"] <= pair["ts"] and pair["ts"] + pair["dur"] <= end
        assert waits and all(pair["ts"] <= w["ts"] <= pair["ts"] + pair["dur"] for w in waits)
