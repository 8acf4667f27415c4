"""Worker: the pipelined ring over a real transport against the plain ring's model, bitwise.

    RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 tests/collectives/pipeline_worker.py

Every rank makes every rank's input from one seed, so it computes the model's answer itself
(test_pipeline.ring_model) and compares its own result bitwise, for several channel counts and
slice sizes, numels (0, below the world size, not divisible) and ops; and the ring verb itself
(with 2 ranks up to ring.PAIR_EXCHANGE_BYTES: one exchange). Prints "pipeline ok".
"""
from __future__ import annotations

import torch

import ringflow
from ringflow.collectives import pipeline, ring
from ringflow.collectives.ops import ReduceOp
from tests.collectives.test_pipeline import inputs, ring_model, same_bits

CONFIGS = [(1, 0), (1, 4096), (2, 0), (2, 1000), (4, 4096), (3, 64 << 10)]


def main() -> None:
    comm = ringflow.init()
    assert comm.transport.pipelines, f"{comm.transport.name} does not run the pipelined ring"
    n = comm.size
    for numel in (0, n - 1, 12345, 300_001):
        for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX):
            xs = inputs(n, numel, torch.float32, seed=numel)
            want = ring_model(xs, op)
            for channels, slice_bytes in CONFIGS:
                t = xs[comm.rank].clone()
                pipeline.all_reduce(comm, t, op, channels=channels, slice_bytes=slice_bytes)
                assert same_bits(t, want), f"numel {numel} {op} C={channels} slice={slice_bytes}"
            t = xs[comm.rank].clone()
            ring.all_reduce(comm, t, op)
            assert same_bits(t, want), f"ring verb, numel {numel} {op}"
    print(f"rank {comm.rank}: pipeline ok", flush=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
