"""rc.all_reduce(t, wire_dtype=bf16/fp16) on float32: the ring with half-precision bytes on the
wire, float32 accumulation, one rounding per hop (ringflow/collectives/wire.py).

Checked on thread ranks against a step-by-step model of that ring (bitwise), against the exact
float64 sum within the documented bound, and across ranks (bitwise); over shared memory and gloo
by a launched worker.
"""
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives import select, wire
from ringflow.collectives.chunking import chunk_bounds
from ringflow.collectives.threads import run_ranks
from tests.launchers import run_torchrun

WIRES = (torch.bfloat16, torch.float16)


def inputs(n: int, numel: int, seed: int = 0) -> list[torch.Tensor]:
    """Mixed signs, magnitudes 1e-2..1e2: partial sums stay in fp16's normal range mostly."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(numel, generator=g) * 10.0 ** (4 * torch.rand(numel, generator=g) - 2)
            for _ in range(n)]


def run_wire(xs, wire_dtype, op="sum", **kwargs):
    def body(comm):
        t = xs[comm.rank].clone()
        rc.all_reduce(t, op=op, group=comm, wire_dtype=wire_dtype, **kwargs)
        return t
    return run_ranks(len(xs), body, timeout=30)


def ring_model(xs, wire_dtype, op="sum") -> torch.Tensor:
    """What the ring computes, hop by hop: chunk c starts at rank c+1 and ends at its owner c;
    each hop rounds the float32 partial once, the owner rounds the total once."""
    n, out = len(xs), torch.empty(xs[0].numel())
    for c, (a, b) in enumerate(chunk_bounds(out.numel(), n)):
        order = [(c + 1 + k) % n for k in range(n)]
        acc = xs[order[0]][a:b].clone()
        for r in order[1:]:
            acc = acc.to(wire_dtype).float() + xs[r][a:b]
        if op == "avg":
            acc = acc / n
        out[a:b] = acc.to(wire_dtype).float()
    return out


def assert_bitwise_same(outs):
    for r, t in enumerate(outs):
        assert t.dtype == torch.float32
        assert t.view(torch.int32).equal(outs[0].view(torch.int32)), f"rank {r} differs bitwise"


@pytest.mark.parametrize("wire_dtype", WIRES)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_equals_the_ring_that_rounds_once_per_hop(wire_dtype, n):
    for numel in (0, 1, n - 1, 17, 1000):
        for op in ("sum", "avg"):
            xs = inputs(n, numel, seed=numel)
            outs = run_wire(xs, wire_dtype, op)
            assert_bitwise_same(outs)
            assert torch.equal(outs[0], ring_model(xs, wire_dtype, op)), (n, numel, op)


@pytest.mark.parametrize("wire_dtype", WIRES)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_error_within_the_documented_bound_of_the_exact_sum(wire_dtype, n):
    gamma = wire.error_bound(wire_dtype, n)
    info = torch.finfo(wire_dtype)
    tiny = n * info.smallest_normal * info.eps / 2      # below the normal range: absolute
    worst = 0.0
    for numel in (0, 1, n - 1, 5, 999, 4096):
        for op in ("sum", "avg"):
            xs = inputs(n, numel, seed=7 * numel + n)
            outs = run_wire(xs, wire_dtype, op)
            assert_bitwise_same(outs)
            scale = 1.0 / n if op == "avg" else 1.0
            exact = sum(x.double() for x in xs) * scale
            err = (outs[0].double() - exact).abs()
            allowed = gamma * sum(x.double().abs() for x in xs) * scale + tiny
            assert (err <= allowed).all(), (f"n={n} numel={numel} {op}: error {err.max():.3g} "
                                            f"past the bound {allowed[err.argmax()]:.3g}")
            if numel:
                worst = max(worst, float((err / allowed).max()))
    assert worst > 0.1, f"the error never came near the bound ({worst:.3f} of it): is it rounding?"


def test_owner_adds_its_own_float32_value_before_the_one_rounding():
    """n=2, one element (owned by rank 0, which receives rank 1's value): 1 + (2^-8 + 2^-20)
    rounds up to 1 + 2^-7 in bf16; had rank 0's value been rounded first (2^-8), the sum would
    be a tie that rounds to 1.0 (and so would a ring accumulating in bf16)."""
    xs = [torch.tensor([2.0 ** -8 + 2.0 ** -20]), torch.tensor([1.0])]
    for t in run_wire(xs, torch.bfloat16):
        assert t.item() == 1 + 2.0 ** -7


@pytest.mark.parametrize("wire_dtype", WIRES)
def test_world_of_one_rounds_once(wire_dtype):
    x = inputs(1, 100)[0]
    (out,) = run_wire([x], wire_dtype)
    assert torch.equal(out, x.to(wire_dtype).float())


@pytest.mark.parametrize("op,pick", [("max", torch.maximum), ("min", torch.minimum)])
def test_max_and_min_are_the_true_extreme_rounded_once(op, pick):
    xs = inputs(3, 50, seed=3)
    want = pick(pick(xs[0], xs[1]), xs[2]).to(torch.bfloat16).float()
    for t in run_wire(xs, torch.bfloat16, op):
        assert torch.equal(t, want)


def test_slices_do_not_change_the_bytes(monkeypatch):
    xs = inputs(3, 3001, seed=11)
    default = run_wire(xs, torch.bfloat16)
    for size in ("64", "0"):                # 32 bf16 elements a slice; whole chunks
        monkeypatch.setenv("RINGFLOW_SLICE_BYTES", size)
        assert all(torch.equal(a, b) for a, b in zip(default, run_wire(xs, torch.bfloat16)))


def test_async_recorded_under_its_own_name():
    def body(comm):
        t = torch.full((10,), float(comm.rank))
        rc.all_reduce(t, group=comm, wire_dtype=torch.float16, async_op=True).wait()
        return t, comm.history[-1].name, select.last["all_reduce"]
    for t, name, last in run_ranks(2, body):
        assert torch.equal(t, torch.ones(10))
        assert name == "all_reduce_wire_float16" and last == "ring:float16"


@pytest.mark.parametrize("kwargs,error,words", [
    ({"wire_dtype": torch.float32}, ValueError, "use torch.bfloat16 or torch.float16"),
    ({"wire_dtype": torch.int8}, ValueError, "use torch.bfloat16 or torch.float16"),
    ({"wire_dtype": torch.bfloat16, "dtype": torch.float64}, TypeError, "float32 tensors only"),
    ({"wire_dtype": torch.bfloat16, "dtype": torch.bfloat16}, TypeError, "fp32acc"),
    ({"wire_dtype": torch.bfloat16, "algorithm": "rd"}, ValueError, "not 'rd'"),
])
def test_refuses_what_it_cannot_compress(kwargs, error, words):
    dtype = kwargs.pop("dtype", torch.float32)

    def body(comm):
        with pytest.raises(error, match=words):
            rc.all_reduce(torch.ones(4, dtype=dtype), group=comm, **kwargs)
        return len(comm.history)            # refused before it was numbered: no call to match
    assert run_ranks(2, body) == [0, 0]


@pytest.mark.parametrize("debug", [False, True])
def test_a_rank_not_compressing_is_a_mismatch_not_wrong_data(debug):
    def body(comm):
        t = torch.ones(1000)
        rc.all_reduce(t, group=comm, wire_dtype=torch.bfloat16 if comm.rank == 0 else None)
        return t
    outs = run_ranks(2, body, timeout=2.0, outcomes=True, debug=debug)
    for o in outs:
        assert isinstance(o.error, rc.CollectiveError), f"rank {o.rank} ended with {o.value}"
    assert any("all_reduce_wire_bfloat16" in str(o.error) for o in outs)


@pytest.mark.launched
@pytest.mark.parametrize("transport", ["shm", "torch"])
def test_shared_memory_and_gloo(transport):
    _, out = run_torchrun(2, "tests/collectives/wire_worker.py", timeout=240,
                          env={"RINGFLOW_TRANSPORT": transport})
    assert out.count("wire ok") == 2, out[-3000:]
