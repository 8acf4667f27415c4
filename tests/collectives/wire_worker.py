"""Worker: float32 all-reduce with bf16/fp16 on the wire over a real transport.

    RINGFLOW_TRANSPORT=shm torchrun --nproc_per_node=2 tests/collectives/wire_worker.py
    RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 tests/collectives/wire_worker.py

Every rank makes every rank's input from one seed, so it knows the exact (float64) sum and checks
its result within wire.error_bound; the results are then gathered (bytes copied) and compared
bitwise. 3M elements cut the shared-memory ring's chunks into slices. Each rank prints "wire ok".
"""
from __future__ import annotations

import torch

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import wire


def inputs(n: int, numel: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(numel)
    return [torch.randn(numel, generator=g) * 10.0 ** (4 * torch.rand(numel, generator=g) - 2)
            for _ in range(n)]


def one_case(comm, numel: int, wire_dtype: torch.dtype, op: str) -> None:
    n = comm.size
    xs = inputs(n, numel)
    t = xs[comm.rank].clone()
    rc.all_reduce(t, op=op, wire_dtype=wire_dtype)
    scale = 1.0 / n if op == "avg" else 1.0
    err = (t.double() - sum(x.double() for x in xs) * scale).abs()
    info = torch.finfo(wire_dtype)
    allowed = (wire.error_bound(wire_dtype, n) * sum(x.double().abs() for x in xs) * scale
               + n * info.smallest_normal * info.eps / 2)
    case = f"numel={numel} {wire_dtype} {op}"
    assert (err <= allowed).all(), f"{case}: error {err.max():.3g} past the bound"
    everyone = torch.empty(n * numel)
    rc.all_gather_into_tensor(everyone, t)
    for r, theirs in enumerate(everyone.view(n, numel)):
        assert theirs.view(torch.int32).equal(t.view(torch.int32)), f"{case}: rank {r} differs"


def main() -> None:
    comm = ringflow.init()
    for numel in (0, 1, 3, 1001, 3 << 20):
        for wire_dtype in (torch.bfloat16, torch.float16):
            for op in ("sum", "avg"):
                one_case(comm, numel, wire_dtype, op)
    print(f"rank {comm.rank} on {comm.transport.name}: wire ok", flush=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
